//! Picking a backend at run time: the GPU when there is a usable one, else the CPU backend, with a
//! plain message saying why. `--device cpu|cuda|emulator|auto`.

use super::cpu::Cpu;
use super::cuda::{gpu::GpuDevice, EmulatedCuda, Gpu};
use crate::{Error, Result};

pub enum AnyBackend {
    Cpu(Cpu),
    Gpu(Box<Gpu>),
    Emulator(EmulatedCuda),
}

impl AnyBackend {
    pub fn select(device: &str) -> Result<Self> {
        match device {
            "cpu" => Ok(AnyBackend::Cpu(Cpu)),
            "emulator" => Ok(AnyBackend::Emulator(EmulatedCuda::emulated())),
            "cuda" => Ok(AnyBackend::Gpu(Box::new(Gpu::new(GpuDevice::open(0)?)))),
            d if d.starts_with("cuda:") => {
                let n: usize = d[5..].parse().map_err(|_| Error::InvalidArgument(format!("bad device `{d}` (cuda:N)")))?;
                Ok(AnyBackend::Gpu(Box::new(Gpu::new(GpuDevice::open(n)?))))
            }
            "auto" => match GpuDevice::open(0) {
                Ok(d) => Ok(AnyBackend::Gpu(Box::new(Gpu::new(d)))),
                Err(e) => {
                    eprintln!("note: no usable GPU ({e}); using the CPU backend");
                    Ok(AnyBackend::Cpu(Cpu))
                }
            },
            other => Err(Error::InvalidArgument(format!("unknown device `{other}` (auto, cpu, cuda, cuda:N, emulator)"))),
        }
    }
}

/// Runs `$body` with `$b` bound to the selected backend (each arm monomorphises the body).
#[macro_export]
macro_rules! with_backend {
    ($any:expr, |$b:ident| $body:expr) => {
        match $any {
            $crate::backend::select::AnyBackend::Cpu(ref $b) => $body,
            $crate::backend::select::AnyBackend::Gpu(ref g) => {
                let $b = &**g;
                $body
            }
            $crate::backend::select::AnyBackend::Emulator(ref $b) => $body,
        }
    };
}
