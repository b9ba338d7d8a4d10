//! Reading and writing weights and tensors.

pub mod flags;
pub mod safetensors;
