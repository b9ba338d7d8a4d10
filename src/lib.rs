//! ran — "Removing Anomalies as Noises" (ICCV 2023) defect localization engine.
//!
//! `ops` checks every op's shapes once; `backend` declares the ops (`Backend`) and computes them on
//! the CPU and through CUDA kernels (`Compute`); `io` reads weights.

pub mod anomaly;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod diffusion;
pub mod error;
pub mod eval;
pub mod heap;
pub mod io;
pub mod models;
pub mod ops;
pub mod optable;
pub mod serve;
pub mod sysinfo;
pub mod tensor;
pub mod train;

pub use backend::cpu::Cpu;
pub use backend::Backend;
pub use error::{Error, Result};
pub use tensor::{Shape, Tensor};
