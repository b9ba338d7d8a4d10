//! Picking a backend at run time: the GPU when there is a usable one, else the CPU backend, with a
//! plain message saying why. `--device cpu|cuda|emulator|auto`.

use super::cuda::{gpu::GpuDevice, EmulatedCuda, Gpu};
use super::rounded_cpu::RoundedCpu;
use crate::ops::precision::Precision;
use crate::{Error, Result};

/// The operand precision a real GPU runs conv2d / linear (and attention's forward) in when
/// `--precision` is not given (issue #14): bf16 if the demo's mean pixel AUROC, PRO and image
/// AUROC in bf16 stay within 0.002 of f32, else tf32. bf16: they moved by at most 0.0002 on the
/// CPU proxy of the kernels' rounding (tests/precision_accuracy.rs, tools/precision_table.sh cpu;
/// README "Precision") — a proxy, not yet a run on a GPU.
pub const GPU_DEFAULT_PRECISION: Precision = Precision::Bf16;

/// What a command runs at when `--precision` is not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrecisionDefault {
    /// inference (detect, eval, serve, …): `GPU_DEFAULT_PRECISION` on a GPU
    Fast,
    /// checking against a reference (verify) and training: f32 everywhere
    F32,
}

/// The three kinds of backend `--device` picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cpu,
    Gpu,
    Emulator,
}

/// The precision a backend of this kind runs at, and a one-line notice where that is worth
/// saying. The CPU backend computes in f32 unless asked: then it is the CPU proxy of the CUDA
/// kernels' rounding (rounded_cpu.rs), which says so; the emulator, a checking tool, defaults to
/// the f32 reference and emulates any precision asked for.
pub fn effective_precision(kind: Kind, asked: Option<Precision>, default: PrecisionDefault) -> (Precision, Option<String>) {
    match kind {
        Kind::Cpu => match asked {
            Some(p) if p != Precision::F32 => (p, Some(format!("note: CPU emulation of {p} operands (f32 accumulate), as the CUDA kernels round them; slower than f32"))),
            _ => (Precision::F32, None),
        },
        Kind::Emulator => (asked.unwrap_or(Precision::F32), None),
        Kind::Gpu => match (asked, default) {
            (Some(p), _) => (p, None),
            (None, PrecisionDefault::Fast) => (GPU_DEFAULT_PRECISION, None),
            (None, PrecisionDefault::F32) => (Precision::F32, None),
        },
    }
}

pub enum AnyBackend {
    /// f32 (`Cpu`'s own ops) unless `--precision` asks for the proxy of another
    Cpu(RoundedCpu),
    Gpu(Box<Gpu>),
    Emulator(EmulatedCuda),
}

impl AnyBackend {
    pub fn kind(&self) -> Kind {
        match self {
            AnyBackend::Cpu(_) => Kind::Cpu,
            AnyBackend::Gpu(_) => Kind::Gpu,
            AnyBackend::Emulator(_) => Kind::Emulator,
        }
    }

    /// `select`, then the precision of `effective_precision` set (its notice on stderr).
    pub fn select_at(device: &str, asked: Option<Precision>, default: PrecisionDefault) -> Result<Self> {
        let mut any = Self::select(device)?;
        let (p, notice) = effective_precision(any.kind(), asked, default);
        if let Some(n) = notice {
            eprintln!("{n}");
        }
        match &mut any {
            AnyBackend::Cpu(c) => *c = RoundedCpu::new(p),
            AnyBackend::Gpu(g) => g.set_precision(p),
            AnyBackend::Emulator(e) => e.set_precision(p),
        }
        Ok(any)
    }

    pub fn select(device: &str) -> Result<Self> {
        match device {
            "cpu" => Ok(AnyBackend::Cpu(RoundedCpu::default())),
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
                    Ok(AnyBackend::Cpu(RoundedCpu::default()))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Catches: the CPU backend not computing in the precision asked (its proxy), a notice that
    /// is an error or says nothing, a GPU default that ignores the command's kind or the user.
    #[test]
    fn each_kind_runs_at_the_precision_it_can() {
        use PrecisionDefault::{Fast, F32};
        for d in [Fast, F32] {
            assert_eq!(effective_precision(Kind::Cpu, None, d), (Precision::F32, None));
            assert_eq!(effective_precision(Kind::Cpu, Some(Precision::F32), d), (Precision::F32, None));
            let (p, note) = effective_precision(Kind::Cpu, Some(Precision::Bf16), d);
            assert_eq!(p, Precision::Bf16);
            let note = note.expect("a notice");
            assert!(note.starts_with("note: CPU emulation of bf16 operands (f32 accumulate)") && !note.contains('\n'), "{note}");
            assert_eq!(effective_precision(Kind::Emulator, None, d), (Precision::F32, None));
            assert_eq!(effective_precision(Kind::Emulator, Some(Precision::F16), d), (Precision::F16, None));
            assert_eq!(effective_precision(Kind::Gpu, Some(Precision::Tf32), d), (Precision::Tf32, None));
        }
        assert_eq!(effective_precision(Kind::Gpu, None, Fast), (GPU_DEFAULT_PRECISION, None));
        assert_eq!(effective_precision(Kind::Gpu, None, F32), (Precision::F32, None));
    }

    #[test]
    fn the_selected_backend_carries_the_precision() {
        let e = AnyBackend::select_at("emulator", Some(Precision::Bf16), PrecisionDefault::Fast).unwrap();
        assert!(matches!(&e, AnyBackend::Emulator(b) if crate::Backend::precision(b) == Precision::Bf16));
        let c = AnyBackend::select_at("cpu", Some(Precision::Bf16), PrecisionDefault::Fast).unwrap();
        assert!(matches!(&c, AnyBackend::Cpu(b) if crate::Backend::precision(b) == Precision::Bf16));
        let c = AnyBackend::select_at("cpu", None, PrecisionDefault::Fast).unwrap();
        assert!(matches!(&c, AnyBackend::Cpu(b) if crate::Backend::precision(b) == Precision::F32));
    }
}
