//! PaDiM (Defard et al. 2020) as the loss of the paper's gradient denoising (docs/method.md §4): ResNet
//! layer1–3 features, layers 2 and 3 bilinearly resized (align_corners=False) to layer1's size
//! and concatenated (1792 channels for wide_resnet50_2), a random subset of D channels, a
//! Gaussian per position — mean μ_p and Σ_p = Σ(f−μ)(f−μ)ᵀ/(N−1) + ε·I — and the anomaly map
//! sqrt((f−μ_p)ᵀΣ_p⁻¹(f−μ_p)), bilinearly resized to the image. Σ_p⁻¹ is kept as the inverse of its
//! Cholesky factor, packed by rows (half the memory of the full inverse, and d = |L⁻¹(f−μ)|).
//!
//! `Padim::loss_and_grad` gives L = mean of the map per image and ∂L/∂x by a manual backward
//! pass: resize → Mahalanobis → concat/select/resize → the ResNet, every step a backend op.

use crate::backend::cpu::mahalanobis::{dot, packed_len};
use crate::backend::cpu::matmul::{matmul, MatRef};
use crate::backend::Backend;
use crate::models::resnet::{ResNet, ResNetTape};
use crate::tensor::Tensor;
use crate::{Error, Result};
use rayon::prelude::*;

/// Added to the covariance diagonal, as the paper's code and PaDiM.
pub const COV_EPS: f64 = 0.01;

/// `d` distinct channels out of `total`, chosen by a seeded shuffle, sorted (the order does not
/// change a Mahalanobis distance; sorted ids read memory in order).
pub fn random_channels(total: usize, d: usize, seed: u64) -> Result<Vec<usize>> {
    if d == 0 || d > total {
        return Err(Error::InvalidArgument(format!("--dims {d}: choose between 1 and {total} channels")));
    }
    let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // splitmix64
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut v: Vec<usize> = (0..total).collect();
    for i in 0..d {
        let j = i + (next() % (total - i) as u64) as usize;
        v.swap(i, j);
    }
    let mut ids = v[..d].to_vec();
    ids.sort_unstable();
    Ok(ids)
}

/// Global channel ids of the concatenation split into per-layer ids (each layer's channels
/// in ascending order, as the concatenation then keeps them).
pub fn split_ids(ids: &[usize], chans: [usize; 3]) -> Result<[Vec<usize>; 3]> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::InvalidArgument("PaDiM channel ids must be distinct".into()));
    }
    let total: usize = chans.iter().sum();
    let mut out: [Vec<usize>; 3] = Default::default();
    for &i in &sorted {
        match i {
            _ if i < chans[0] => out[0].push(i),
            _ if i < chans[0] + chans[1] => out[1].push(i - chans[0]),
            _ if i < total => out[2].push(i - chans[0] - chans[1]),
            _ => return Err(Error::InvalidArgument(format!("PaDiM channel {i} out of range for {total} backbone channels"))),
        }
    }
    Ok(out)
}

/// The embedding [N, D, h1, w1] from (layer1, layer2, layer3).
pub fn embed<B: Backend>(b: &B, layers: &[Tensor<B>; 3], ids: &[Vec<usize>; 3]) -> Result<Tensor<B>> {
    let (h1, w1) = (layers[0].dims()[2], layers[0].dims()[3]);
    let mut parts = Vec::new();
    for (li, l) in layers.iter().enumerate() {
        if ids[li].is_empty() {
            continue;
        }
        let g = b.gather_channels(l, &ids[li])?;
        parts.push(if li == 0 { g } else { b.resize_bilinear(&g, h1, w1)? });
    }
    b.concat_channels(&parts.iter().collect::<Vec<_>>())
}

/// ∂L/∂layer_i given ∂L/∂embedding (None for a layer none of whose channels is kept).
pub fn embed_x_backward<B: Backend>(b: &B, g: &Tensor<B>, layer_dims: [&[usize]; 3], ids: &[Vec<usize>; 3]) -> Result<[Option<Tensor<B>>; 3]> {
    let kept: Vec<usize> = ids.iter().map(|v| v.len()).filter(|&n| n > 0).collect();
    let mut parts = b.concat_channels_x_backward(g, &kept)?.into_iter();
    let mut out: [Option<Tensor<B>>; 3] = Default::default();
    for li in 0..3 {
        if ids[li].is_empty() {
            continue;
        }
        let mut gl = parts.next().ok_or_else(|| Error::InvalidArgument("embedding parts".into()))?;
        let d = layer_dims[li];
        if li > 0 {
            gl = b.resize_bilinear_x_backward(&gl, d[2], d[3])?;
        }
        out[li] = Some(b.gather_channels_x_backward(&gl, &ids[li], d[1])?);
    }
    Ok(out)
}

/// Embeddings of a batch x [N,3,H,W] on the host, laid out [N][P][D] for `fit_stats`; also
/// returns the embedding's (h, w).
pub fn host_features<B: Backend>(b: &B, resnet: &ResNet<B>, ids: &[Vec<usize>; 3], x: &Tensor<B>) -> Result<(Vec<f32>, (usize, usize))> {
    let e = embed(b, &resnet.layers(b, x)?, ids)?;
    let (n, d, h, w) = (e.dims()[0], e.dims()[1], e.dims()[2], e.dims()[3]);
    let v = b.to_host(&e)?;
    let p = h * w;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(format!("non-finite backbone feature ({}) in image {} of the batch", v[i], i / (d * p))));
    }
    let mut out = vec![0.0f32; n * p * d];
    for ni in 0..n {
        for j in 0..d {
            for pi in 0..p {
                out[(ni * p + pi) * d + j] = v[(ni * d + j) * p + pi];
            }
        }
    }
    Ok((out, (h, w)))
}

/// Per-position Gaussian statistics from features laid out [N][P][D] (each image's embedding
/// transposed so a position's vector is contiguous): returns mean [P, D] and the packed inverse
/// Cholesky factors [P, D(D+1)/2] of Σ_p = cov_p + eps·I, everything computed in f64.
pub fn fit_stats(feats: &[f32], n: usize, p: usize, d: usize, eps: f64) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut linv = Vec::with_capacity(p * packed_len(d));
    let mean = fit_stats_streamed(feats, n, p, d, eps, p, |c| {
        linv.extend_from_slice(c);
        Ok(())
    })?;
    Ok((mean, linv))
}

/// `fit_stats` handing the inverse factors to `sink` `chunk` positions at a time (in order), so
/// that only one chunk of the [P, D(D+1)/2] result is in memory: 4096 positions × 500 dims is
/// 2.1 GB in f32. Returns the mean.
pub fn fit_stats_streamed(feats: &[f32], n: usize, p: usize, d: usize, eps: f64, chunk: usize, mut sink: impl FnMut(&[f32]) -> Result<()>) -> Result<Vec<f32>> {
    if n < 2 {
        return Err(Error::InvalidArgument(format!("PaDiM needs at least 2 training images, got {n}")));
    }
    if feats.len() != n * p * d {
        return Err(Error::InvalidArgument(format!("{} feature values for {n} images × {p} positions × {d} dims", feats.len())));
    }
    let mut mean = vec![0.0f32; p * d];
    let chunk = chunk.clamp(1, p.max(1));
    let mut linv = vec![0.0f32; chunk * packed_len(d)];
    for p0 in (0..p).step_by(chunk) {
        let np = chunk.min(p - p0);
        let failed = std::sync::Mutex::new(None::<Error>);
        linv[..np * packed_len(d)].par_chunks_mut(packed_len(d)).zip(mean[p0 * d..(p0 + np) * d].par_chunks_mut(d)).enumerate().for_each_init(
            || (vec![0.0f64; n * d], vec![0.0f64; d * d], vec![0.0f64; d * d]),
            |(x, cov, mt), (i, (out, mu_out))| {
                let pi = p0 + i;
                // centred samples X [N, D] of this position
                let mut mu = vec![0.0f64; d];
                for ni in 0..n {
                    for (m, &v) in mu.iter_mut().zip(&feats[(ni * p + pi) * d..][..d]) {
                        *m += v as f64;
                    }
                }
                mu.iter_mut().for_each(|m| *m /= n as f64);
                for ni in 0..n {
                    for (j, &v) in feats[(ni * p + pi) * d..][..d].iter().enumerate() {
                        x[ni * d + j] = v as f64 - mu[j];
                    }
                }
                // Σ = XᵀX/(N−1) + eps·I
                matmul(d, d, n, cov, d, MatRef::transposed(x, d), MatRef::row_major(x, d), false, false);
                let s = 1.0 / (n as f64 - 1.0);
                for i in 0..d {
                    for j in 0..=i {
                        cov[i * d + j] *= s;
                    }
                    cov[i * d + i] += eps;
                }
                if let Err(e) = cholesky_inverse(cov, mt, d, out) {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Error::InvalidArgument(format!("position {pi}: {e}")));
                }
                for (o, m) in mu_out.iter_mut().zip(&mu) {
                    *o = *m as f32;
                }
            },
        );
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        sink(&linv[..np * packed_len(d)])?;
    }
    Ok(mean)
}

/// In place: the lower triangle of `a` [d×d] becomes its Cholesky factor L; then L⁻¹ is
/// computed column by column (kept transposed in `mt` so every inner sum is a contiguous dot)
/// and written packed by rows to `out`.
fn cholesky_inverse(a: &mut [f64], mt: &mut [f64], d: usize, out: &mut [f32]) -> std::result::Result<(), String> {
    for i in 0..d {
        for j in 0..=i {
            let s = a[i * d + j] - dot(&a[i * d..i * d + j], &a[j * d..j * d + j]);
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return Err(format!("covariance is not positive definite (pivot {s:e} at {i}; NaN or infinite features?)"));
                }
                a[i * d + i] = s.sqrt();
            } else {
                a[i * d + j] = s / a[j * d + j];
            }
        }
    }
    // column j of M = L⁻¹: M[j][j] = 1/L[j][j]; M[i][j] = −(Σ_{k=j}^{i−1} L[i][k]·M[k][j]) / L[i][i]
    for j in 0..d {
        let row = &mut mt[j * d..(j + 1) * d];
        row[j] = 1.0 / a[j * d + j];
        for i in j + 1..d {
            let s = dot(&a[i * d + j..i * d + i], &row[j..i]);
            row[i] = -s / a[i * d + i];
        }
    }
    for i in 0..d {
        for j in 0..=i {
            out[i * (i + 1) / 2 + j] = mt[j * d + i] as f32;
        }
    }
    Ok(())
}

/// A fitted PaDiM model on a backend: the backbone, the kept channels and the statistics.
pub struct Padim<B: Backend> {
    pub resnet: ResNet<B>,
    /// kept channels per layer
    pub ids: [Vec<usize>; 3],
    pub mean: Tensor<B>,
    pub linv: Tensor<B>,
}

/// What one evaluation of the loss gives.
pub struct LossGrad<B: Backend> {
    /// L per image (mean of its anomaly map)
    pub loss: Vec<f64>,
    /// the anomaly map at image size [N, 1, H, W]
    pub map: Tensor<B>,
    /// ∂L_i/∂x_i, [N, 3, H, W]
    pub grad: Tensor<B>,
}

impl<B: Backend> Padim<B> {
    fn embedding(&self, b: &B, layers: &[Tensor<B>; 3]) -> Result<Tensor<B>> {
        let e = embed(b, layers, &self.ids)?;
        let p = self.mean.dims()[0];
        let (h1, w1) = (e.dims()[2], e.dims()[3]);
        if h1 * w1 != p {
            return Err(Error::shape("padim", format!("features at {h1}×{w1} but the statistics were fitted at {p} positions: use the image size of the fit")));
        }
        Ok(e)
    }

    /// The anomaly map at image size [N, 1, H, W].
    pub fn anomaly_map(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        let e = self.embedding(b, &self.resnet.layers(b, x)?)?;
        b.resize_bilinear(&b.mahalanobis(&e, &self.mean, &self.linv)?, x.dims()[2], x.dims()[3])
    }

    /// L_i = mean of image i's map and ∂L_i/∂x_i (images are independent).
    pub fn loss_and_grad(&self, b: &B, x: &Tensor<B>) -> Result<LossGrad<B>> {
        let (n, h, w) = (x.dims()[0], x.dims()[2], x.dims()[3]);
        let (layers, tape): ([Tensor<B>; 3], ResNetTape<B>) = self.resnet.layers_taped(b, x)?;
        let e = self.embedding(b, &layers)?;
        let d = b.mahalanobis(&e, &self.mean, &self.linv)?;
        let map = b.resize_bilinear(&d, h, w)?;
        let host = b.to_host(&map)?;
        let loss: Vec<f64> = host.chunks(h * w).map(|m| m.iter().map(|&v| v as f64).sum::<f64>() / (h * w) as f64).collect();
        // backward: ∂L/∂map = 1/(H·W) everywhere
        let g_map = b.from_host(&[n, 1, h, w], &vec![1.0 / (h * w) as f32; n * h * w])?;
        let g_d = b.resize_bilinear_x_backward(&g_map, d.dims()[2], d.dims()[3])?;
        let g_e = b.mahalanobis_x_backward(&g_d, &e, &self.mean, &self.linv)?;
        let g_l = embed_x_backward(b, &g_e, [layers[0].dims(), layers[1].dims(), layers[2].dims()], &self.ids)?;
        let grad = self.resnet.layers_x_backward(b, &tape, [g_l[0].as_ref(), g_l[1].as_ref(), g_l[2].as_ref()])?;
        Ok(LossGrad { loss, map, grad })
    }
}
