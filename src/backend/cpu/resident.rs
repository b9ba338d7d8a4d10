//! What a CPU tensor holds: f32 values (every op's output), or a weight kept as the f16 file
//! stored it. The paper's 553M UNet is 1.1 GB in f16 and 2.2 GB in f32; keeping the f16 copy
//! resident halves the model's memory (issue #17: detect in ≤ 2.5 GB). Each use widens the f16
//! values into a pooled f32 buffer (`Values::f32`): f16 → f32 is exact, so every op sees the very
//! f32 values that widening at load gave, and results are bit-identical.
//!
//! `RAN_CPU_F16_WEIGHTS=0` widens at load instead (the old behaviour, for comparison). Tensors
//! under `MIN_F16_LEN` values (biases, norms) are widened at load anyway: they are a small part
//! of any model, and widening them per use would only add calls.

use super::buffers::Pooled;
use crate::{Error, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::ops::Deref;
use std::sync::OnceLock;

/// Below this many values a weight is kept in f32 (64 KiB: the pool's own threshold).
pub const MIN_F16_LEN: usize = 16 * 1024;
/// Values widened per rayon task.
const WIDEN_CHUNK: usize = 64 * 1024;

/// A CPU tensor's storage.
pub enum Values {
    F32(Pooled<f32>),
    /// a weight as an f16 file held it; read through `f32()`
    F16(Box<[f16]>),
}

/// The f32 view of `Values`: the buffer itself, or a pooled widened copy (freed to the pool when
/// dropped, so the next weight of that size reuses it).
pub enum Widened<'a> {
    Borrowed(&'a [f32]),
    Owned(Pooled<f32>),
}

impl Deref for Widened<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Widened::Borrowed(s) => s,
            Widened::Owned(p) => p,
        }
    }
}

impl Values {
    /// The values as f32 (widened if held as f16).
    pub fn f32(&self) -> Widened<'_> {
        match self {
            Values::F32(p) => Widened::Borrowed(p),
            Values::F16(h) => Widened::Owned(widen(h)),
        }
    }

    /// Values `range` as f32 (one part of a stacked weight without widening the rest).
    pub fn f32_range(&self, range: std::ops::Range<usize>) -> Widened<'_> {
        match self {
            Values::F32(p) => Widened::Borrowed(&p[range]),
            Values::F16(h) => Widened::Owned(widen(&h[range])),
        }
    }

    /// The f16 values when held as f16.
    pub fn as_f16(&self) -> Option<&[f16]> {
        match self {
            Values::F16(h) => Some(h),
            Values::F32(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Values::F32(p) => p.len(),
            Values::F16(h) => h.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `h` widened into a pooled buffer (every element written), in parallel for large weights.
pub fn widen(h: &[f16]) -> Pooled<f32> {
    let mut out = Pooled::<f32>::for_overwrite(h.len());
    if h.len() <= WIDEN_CHUNK {
        h.convert_to_f32_slice(&mut out);
    } else {
        out.par_chunks_mut(WIDEN_CHUNK).zip(h.par_chunks(WIDEN_CHUNK)).for_each(|(d, s)| s.convert_to_f32_slice(d));
    }
    out
}

/// Whether f16 weights stay f16 (`RAN_CPU_F16_WEIGHTS`: unset or 1 = yes, 0 = widen at load),
/// read once; another value is an error.
pub fn enabled() -> Result<bool> {
    static ON: OnceLock<std::result::Result<bool, String>> = OnceLock::new();
    ON.get_or_init(|| parse_setting(std::env::var("RAN_CPU_F16_WEIGHTS").ok().as_deref())).clone().map_err(Error::InvalidArgument)
}

/// `RAN_CPU_F16_WEIGHTS`'s value (None: unset) as on/off.
pub fn parse_setting(v: Option<&str>) -> std::result::Result<bool, String> {
    match v.map(str::trim) {
        None | Some("") | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => Err(format!("RAN_CPU_F16_WEIGHTS={other:?}: want 1 (keep f16 weights f16, the default) or 0 (widen them to f32 at load)")),
    }
}

/// How a weight of `len` f16 values is stored: kept f16, or widened now.
pub fn store(h: Vec<f16>) -> Result<Values> {
    Ok(if enabled()? && h.len() >= MIN_F16_LEN {
        Values::F16(h.into_boxed_slice())
    } else {
        let mut v = <f32 as super::buffers::Alloc>::for_overwrite(h.len());
        h.convert_to_f32_slice(&mut v);
        Values::F32(Pooled::new(v))
    })
}

/// torch.cat(parts, dim=1) of f16 tensors [n, c_i, s], kept f16 (an exact copy: the UNet stacks
/// its ResBlocks' timestep projections this way, 106 MB in f16 at the paper's size).
pub fn concat_f16(parts: &[(&[f16], usize)], n: usize, s: usize) -> Vec<f16> {
    let ctot: usize = parts.iter().map(|p| p.1).sum();
    let mut y = Vec::with_capacity(n * ctot * s);
    for ni in 0..n {
        for &(d, c) in parts {
            y.extend_from_slice(&d[ni * c * s..][..c * s]);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses_on_off_and_names_a_bad_value() {
        assert_eq!(parse_setting(None), Ok(true));
        assert_eq!(parse_setting(Some("1")), Ok(true));
        assert_eq!(parse_setting(Some(" 0 ")), Ok(false));
        let e = parse_setting(Some("yes")).unwrap_err();
        assert!(e.contains("RAN_CPU_F16_WEIGHTS=\"yes\""), "{e}");
    }

    #[test]
    fn widening_is_exact_in_both_the_serial_and_the_parallel_path() {
        // every finite f16 bit pattern, repeated past WIDEN_CHUNK so the parallel path runs
        let finite: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).filter(|h| h.is_finite()).collect();
        let all: Vec<f16> = finite.iter().copied().cycle().take(2 * WIDEN_CHUNK + 7).collect();
        for h in [&all[..1000], &all[..]] {
            let w = widen(h);
            assert_eq!(w.len(), h.len());
            for (a, b) in h.iter().zip(w.iter()) {
                // the reference: half's scalar conversion, one value at a time
                assert_eq!(a.to_f32().to_bits(), b.to_bits(), "{a:?}");
            }
        }
        let v = Values::F16(all.clone().into_boxed_slice());
        let r = v.f32_range(70_000..70_010);
        assert_eq!(r.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), all[70_000..70_010].iter().map(|h| h.to_f32().to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn concat_of_f16_parts_interleaves_them_per_image() {
        let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
        let (a, b) = (h(&[1.0, 2.0, 3.0, 4.0]), h(&[5.0, 6.0]));
        // n = 2 images, s = 1: a has 2 channels, b 1
        let y = concat_f16(&[(&a, 2), (&b, 1)], 2, 1);
        assert_eq!(y.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), vec![1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
    }
}
