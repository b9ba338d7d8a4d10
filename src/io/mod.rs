//! Reading and writing weights and tensors: safetensors, PyTorch .pt (zip + pickle subset),
//! model flags.

pub mod files;
pub mod flags;
pub mod hash;
pub mod image;
pub mod pt;
pub mod safetensors;
pub mod sniff;
mod zip;
