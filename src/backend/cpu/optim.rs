//! Optimiser updates on the CPU, in the kernels' (and torch.optim.AdamW's) operation order.
//! Kernel twin: kernels/optim.cu. One pass over each parameter writes the three outputs into
//! pooled buffers (chunks of `CHUNK` values per task), so a training step allocates no fresh
//! pages for them after the first.

use super::buffers::Alloc;
use crate::ops::contract::AdamwCoefs;
use rayon::prelude::*;

/// Values per parallel task: large enough to amortise the task, small enough to spread a
/// 1000-value bias over one task and a 2M-value conv weight over both threads.
const CHUNK: usize = 16 * 1024;

/// (θ, m, v) after one AdamW step.
pub fn adamw_step(param: &[f32], grad: &[f32], m: &[f32], v: &[f32], k: &AdamwCoefs) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = param.len();
    // every element of the three is written below
    let (mut p2, mut m2, mut v2) = (f32::for_overwrite(n), f32::for_overwrite(n), f32::for_overwrite(n));
    let ins = param.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK));
    let outs = p2.par_chunks_mut(CHUNK).zip(m2.par_chunks_mut(CHUNK)).zip(v2.par_chunks_mut(CHUNK));
    ins.zip(outs).for_each(|((((p, g), m), v), ((po, mo), vo))| {
        // one length for all seven, so the loop runs without bounds checks
        let n = p.len();
        let (g, m, v, po, mo, vo) = (&g[..n], &m[..n], &v[..n], &mut po[..n], &mut mo[..n], &mut vo[..n]);
        for i in 0..n {
            let gi = g[i];
            let pd = p[i] * k.decay;
            let mi = m[i] + k.one_minus_beta1 * (gi - m[i]);
            let vi = v[i] * k.beta2 + k.one_minus_beta2 * gi * gi;
            let denom = vi.sqrt() / k.bc2_sqrt + k.eps;
            po[i] = pd - k.step_size * (mi / denom);
            mo[i] = mi;
            vo[i] = vi;
        }
    });
    (p2, m2, v2)
}

/// α·a + β·b (the EMA update), into a pooled buffer.
pub fn axpby(a: &[f32], b: &[f32], alpha: f32, beta: f32) -> Vec<f32> {
    let mut y = f32::for_overwrite(a.len());
    y.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(y, (a, b))| {
        for ((y, &x), &z) in y.iter_mut().zip(a).zip(b) {
            *y = alpha * x + beta * z;
        }
    });
    y
}
