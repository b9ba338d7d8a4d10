//! Reading and writing weights and tensors.

pub mod safetensors;
