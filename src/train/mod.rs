//! Training (docs/method.md §5): the paper's loss and its gradient with respect to the model's
//! outputs (`loss`), one optimiser step (`step`), and the `ran train` run around it: data,
//! initial weights, checkpoints, log and loss curve (`run`). The UNet's backward pass is
//! `models::unet::UNet::backward`, the optimiser `Backend::adamw_step` and `Backend::axpby` (EMA).

pub mod checkpoint;
pub mod data;
pub mod init;
pub mod interrupt;
pub mod log;
pub mod loss;
pub mod loss_scale;
pub mod plot;
pub mod rng;
pub mod run;
pub mod step;
