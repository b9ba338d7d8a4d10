//! The widest vector unit the CPU has, chosen once at run time, for the elementwise loops of the
//! CPU backend (activations, the depthwise conv's rows, conv epilogues). The crate is built for
//! baseline x86-64 (SSE2, 4 lanes); a loop compiled again inside a `#[target_feature]` function
//! runs 8 (AVX2) or 16 (AVX-512) lanes wide. Only the width changes: Rust never contracts a·b + c
//! into an FMA by itself, so every variant computes the same IEEE operations in the same order
//! and gives the same bits (tests/effnet_fused.rs checks that per kernel).
//!
//! `RAN_CPU_SIMD` (read once): `avx512`, `avx2` or `base` caps the choice (for comparisons);
//! unset = the best the CPU has.

use std::sync::OnceLock;

/// Instruction sets, narrowest first (so `min` caps a request at what the CPU has).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Base,
    Avx2,
    Avx512,
}

impl Isa {
    /// What this CPU can run.
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    return Isa::Avx2;
                }
            }
            Isa::Base
        })
    }

    /// `self` where the CPU has it, else the best below it: the only way a kernel is handed an
    /// instruction set, so a request for AVX-512 on an AVX2 machine cannot reach an illegal
    /// instruction.
    pub fn capped(self) -> Isa {
        self.min(Isa::detected())
    }
}

/// The instruction set the kernels use: the detected one, capped by `RAN_CPU_SIMD`.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let want = match std::env::var("RAN_CPU_SIMD").as_deref().map(str::trim) {
            Ok("base") => Isa::Base,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
        };
        want.capped()
    })
}

/// Defines `pub fn $name<T: Real>(isa: Isa, args…)` that runs the `#[inline(always)]` function
/// `$generic` compiled for `isa` (already capped by the caller through `Isa::capped`/`isa()`).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident => $generic:ident <$T:ident: $bound:path> ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: $bound>(isa: $crate::backend::cpu::simd::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            #[allow(clippy::too_many_arguments)]
            fn avx512<$T: $bound>($($arg: $ty),*) $(-> $ret)? {
                $generic::<$T>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2<$T: $bound>($($arg: $ty),*) $(-> $ret)? {
                $generic::<$T>($($arg),*)
            }
            match isa.capped() {
                // SAFETY: `capped` returned this set only because the CPU reported it.
                #[cfg(target_arch = "x86_64")]
                $crate::backend::cpu::simd::Isa::Avx512 => unsafe { avx512::<$T>($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::backend::cpu::simd::Isa::Avx2 => unsafe { avx2::<$T>($($arg),*) },
                _ => $generic::<$T>($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
