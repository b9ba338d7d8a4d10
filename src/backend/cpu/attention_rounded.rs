//! The numerics of the tensor-core flash attention (kernels/attention_flash_tc.cu) on the CPU, in
//! f32: the CPU proxy's attention at bf16/f16 (backend/rounded_cpu.rs). q, k, v rounded once; per
//! query, key tiles of 64 in order, the running max m over the tiles so far, P = exp(s − m) rounded
//! to the precision (the PV operand), l summing the rounded P, the earlier tiles rescaled by
//! exp(m_old − m_new); out = o / l. The kernel's mma sums in another order: the two agree to f32
//! summation error, not bit for bit.

use crate::ops::precision::Precision;
use rayon::prelude::*;

/// Keys per tile, as the kernel's FTC_BK: where the running max changes, and so P's rounding.
const KEY_TILE: usize = 64;

/// qkv [N·H, 3d, T] (q, k, v blocks of d channel rows) → [N·H, d, T].
pub fn attention_legacy_rounded(qkv: &[f32], bh: usize, d: usize, t: usize, p: Precision) -> Vec<f32> {
    let s2 = 1.0f32 / (d as f32).sqrt();
    let mut out = vec![0.0f32; bh * d * t];
    out.par_chunks_mut(d * t).enumerate().for_each(|(b, ob)| {
        // token-major copies of this head, rounded: row j is token j's d channels
        let blk = &qkv[b * 3 * d * t..][..3 * d * t];
        let tokens = |part: usize| -> Vec<f32> { (0..t * d).map(|e| p.round(blk[(part * d + e % d) * t + e / d])).collect() };
        let (q, k, v) = (tokens(0), tokens(1), tokens(2));
        let mut o = vec![0.0f32; d];
        let mut s = [0.0f32; KEY_TILE];
        for i in 0..t {
            let qi = &q[i * d..][..d];
            let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
            o.iter_mut().for_each(|x| *x = 0.0);
            for j0 in (0..t).step_by(KEY_TILE) {
                let j1 = (j0 + KEY_TILE).min(t);
                let mut mx = f32::NEG_INFINITY;
                for j in j0..j1 {
                    let dot: f32 = qi.iter().zip(&k[j * d..][..d]).map(|(a, b)| a * b).sum();
                    s[j - j0] = dot * s2;
                    mx = mx.max(s[j - j0]);
                }
                let mnew = m.max(mx);
                let alpha = (m - mnew).exp(); // 0 on the first tile (m = −∞)
                m = mnew;
                l *= alpha;
                o.iter_mut().for_each(|x| *x *= alpha);
                for j in j0..j1 {
                    let pj = p.round((s[j - j0] - mnew).exp());
                    l += pj;
                    o.iter_mut().zip(&v[j * d..][..d]).for_each(|(x, &vj)| *x += pj * vj);
                }
            }
            let inv = 1.0 / l;
            for c in 0..d {
                ob[c * t + i] = o[c] * inv;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Catches: P not rounded, or the tiles' running max misapplied. Two keys, hand-worked: with
    /// one tile, query 0's weights are P = (bf16(e^-1), 1) against the max; query 1's are equal.
    #[test]
    fn two_keys_by_hand() {
        // d = 1, t = 2: q = [1, 0], k = [0, 1], v = [2, 3] → query 0 scores (0, 1), query 1 (0, 0)
        let qkv = [1.0f32, 0.0, 0.0, 1.0, 2.0, 3.0];
        let y = attention_legacy_rounded(&qkv, 1, 1, 2, Precision::Bf16);
        assert_eq!(y[1], 2.5);
        let pw = half::bf16::from_f32((-1.0f32).exp()).to_f32();
        let want = (pw * 2.0 + 3.0) / (pw + 1.0);
        assert!((y[0] - want).abs() <= 1e-6, "{} vs {want}", y[0]);
        let exact = ((-1.0f32).exp() * 2.0 + 3.0) / ((-1.0f32).exp() + 1.0);
        assert!((y[0] - exact).abs() > 1e-4, "P was not rounded");
    }
}
