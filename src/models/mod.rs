//! Models, written to read like the PyTorch modules they mirror, generic over the backend.

pub mod unet;
pub mod weights;
