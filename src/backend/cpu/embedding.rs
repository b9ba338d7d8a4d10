//! Sinusoidal timestep embedding (guided-diffusion's `timestep_embedding`, cos first) and
//! embedding-table lookup.

/// Upstream computes in float32: freqs = exp(−ln(max_period)·arange(half)/half), args = t·freqs.
/// We follow the same f32 operation order so that large t (up to 999) round the same way.
pub fn timestep_embedding(t: &[f32], dim: usize, max_period: f32) -> Vec<f32> {
    let half = dim / 2;
    let neg_log = -(max_period as f64).ln() as f32;
    let freqs: Vec<f32> = (0..half).map(|i| ((neg_log * i as f32) / half as f32).exp()).collect();
    let mut out = vec![0.0f32; t.len() * dim];
    for (row, &tv) in out.chunks_mut(dim).zip(t) {
        for (i, &f) in freqs.iter().enumerate() {
            let arg = tv * f;
            row[i] = arg.cos();
            row[half + i] = arg.sin();
        }
        // odd dim: the last column stays zero, like upstream's zero padding
    }
    out
}

pub fn embedding<T: Copy>(table: &[T], dim: usize, ids: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &i in ids {
        out.extend_from_slice(&table[i * dim..(i + 1) * dim]);
    }
    out
}

/// ∂L/∂table of `embedding`: each gradient row added into the row it was read from (ids may repeat).
pub fn embedding_w_backward<T: super::real::Real>(gy: &[T], rows: usize, dim: usize, ids: &[usize]) -> Vec<T> {
    let mut gt = vec![T::zero(); rows * dim];
    for (r, &i) in ids.iter().enumerate() {
        gt[i * dim..(i + 1) * dim].iter_mut().zip(&gy[r * dim..(r + 1) * dim]).for_each(|(d, &v)| *d += v);
    }
    gt
}
