//! Channel concat and slice over [N, C, S] (copies; the backward of one is the other).

use super::real::Real;

/// torch.cat(parts, dim=1); each part is (data, channels), all with the same N and S.
pub fn concat_channels<T: Real>(parts: &[(&[T], usize)], n: usize, s: usize) -> Vec<T> {
    let ctot: usize = parts.iter().map(|p| p.1).sum();
    // the parts tile every image's channels, so every element is written
    let mut y = T::for_overwrite(n * ctot * s);
    let mut at = 0;
    for ni in 0..n {
        for &(d, c) in parts {
            y[at..at + c * s].copy_from_slice(&d[ni * c * s..][..c * s]);
            at += c * s;
        }
    }
    y
}

pub fn slice_channels<T: Real>(x: &[T], n: usize, c: usize, s: usize, start: usize, end: usize) -> Vec<T> {
    let len = (end - start) * s;
    let mut y = T::for_overwrite(n * len);
    for (ni, yn) in y.chunks_mut(len.max(1)).enumerate().take(n) {
        yn.copy_from_slice(&x[(ni * c + start) * s..(ni * c + end) * s]);
    }
    y
}

/// x[:, ids] (torch.index_select along channels) over [N, C, S].
pub fn gather_channels<T: Real>(x: &[T], n: usize, c: usize, s: usize, ids: &[usize]) -> Vec<T> {
    let mut y = Vec::with_capacity(n * ids.len() * s);
    for ni in 0..n {
        for &ch in ids {
            y.extend_from_slice(&x[(ni * c + ch) * s..][..s]);
        }
    }
    y
}

/// Backward of `gather_channels` with distinct ids: gy [N, len(ids), S] placed into zeros [N, C, S].
pub fn gather_channels_x_backward<T: Real>(gy: &[T], n: usize, c: usize, s: usize, ids: &[usize]) -> Vec<T> {
    let mut gx = vec![T::zero(); n * c * s];
    for ni in 0..n {
        for (k, &ch) in ids.iter().enumerate() {
            gx[(ni * c + ch) * s..][..s].copy_from_slice(&gy[(ni * ids.len() + k) * s..][..s]);
        }
    }
    gx
}
