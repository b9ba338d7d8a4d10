//! Training (docs/method.md §5): the paper's loss and its gradient with respect to the model's
//! outputs (`loss`). The UNet's backward pass is `models::unet::UNet::backward`, the optimiser
//! `Backend::adamw_step` and `Backend::axpby` (EMA).

pub mod loss;
pub mod step;
