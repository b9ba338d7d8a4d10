//! Pixel and image scores (docs/method.md §1–§3):
//! - KL map: for each k in the timesteps (indices of the respaced schedule), x_k = q_sample(x0, k, ε_k),
//!   one UNet pass at τ_k, KL(q(x_{k−1}|x_k,x0) ‖ p(x_{k−1}|x_k)) in bits per element with x̂0
//!   clipped, z-scored per image (unbiased std); averaged over k and channels.
//! - feature map: the UNet's feature head at x_k vs EfficientNet features of x0 at S×S, mean
//!   squared error over channels, bilinearly upsampled, averaged over k. The head's timestep is k
//!   itself by default (the official code's quirk) or τ_k (`FeatureTimestep::Tau`), in which case
//!   one UNet pass per k serves both maps.
//! - ensemble α·feature + (1−α)·KL (or the released script's plain sum), image score = mean of
//!   the top-k pixels.

use crate::backend::{Backend, Conv2dParams, VarType};
use crate::diffusion::Diffusion;
use crate::models::efficientnet::EfficientNet;
use crate::models::unet::UNet;
use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FeatureTimestep {
    /// the respaced index k (what the official evaluation passes: a quirk of that code)
    #[value(name = "index")]
    RespacedIndex,
    /// the true timestep τ_k (one UNet pass per k serves both maps)
    Tau,
}

impl FeatureTimestep {
    /// The option's spelling (`--feature-timestep`), as results.json and the map cache record it.
    pub fn name(self) -> &'static str {
        match self {
            FeatureTimestep::RespacedIndex => "index",
            FeatureTimestep::Tau => "tau",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ensemble {
    /// α·feature + (1−α)·KL
    Weighted(f32),
    /// feature + KL (the released test.sh)
    Sum,
    /// α·(F−μ_F)/σ_F + (1−α)·(K−μ_K)/σ_K with pixel statistics of normal images: the paper's sum
    /// lets the raw squared error outweigh the z-scored KL map (docs/method.md §3); this puts both on the
    /// scale of their normal variation, one affine map per category, so neither score's own
    /// ranking changes and images stay comparable (unlike a per-image normalisation).
    Calibrated(f32, Calibration),
}

/// Pixel statistics of the KL and feature maps over normal images (the calibrated ensemble).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Calibration {
    pub kl_mean: f32,
    pub kl_std: f32,
    pub feat_mean: f32,
    pub feat_std: f32,
    pub images: usize,
}

impl Calibration {
    /// From (KL map, feature map) pairs of normal images.
    pub fn from_maps(maps: &[(&[f32], &[f32])]) -> Result<Self> {
        fn stats<'a>(parts: impl Iterator<Item = &'a [f32]> + Clone) -> (f64, f64) {
            let n: usize = parts.clone().map(|m| m.len()).sum();
            let mean = parts.clone().flatten().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = parts.flatten().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
            (mean, var.sqrt())
        }
        if maps.is_empty() {
            return Err(Error::InvalidArgument("the calibrated ensemble needs at least one normal image".into()));
        }
        let (km, ks) = stats(maps.iter().map(|m| m.0));
        let (fm, fs) = stats(maps.iter().map(|m| m.1));
        if !(ks > 0.0 && fs > 0.0 && ks.is_finite() && fs.is_finite()) {
            return Err(Error::InvalidArgument(format!("calibration maps have standard deviation {ks} (KL) and {fs} (feature): cannot normalise")));
        }
        Ok(Calibration { kl_mean: km as f32, kl_std: ks as f32, feat_mean: fm as f32, feat_std: fs as f32, images: maps.len() })
    }
}

impl Calibration {
    /// The q-quantile (0..1, nearest rank) of the calibrated-ensemble values on the normal images
    /// (KL map, feature map) the statistics came from. The colour scale [0, the 0.999-quantile]
    /// shows red only where at most 1 normal pixel in 1000 reaches (the maximum itself would
    /// follow single outliers, such as a crater on the moon texture).
    pub fn normal_quantile(&self, alpha: f32, maps: &[(&[f32], &[f32])], q: f64) -> f32 {
        let mut v: Vec<f32> = maps.iter().flat_map(|(k, f)| combine(Ensemble::Calibrated(alpha, *self), f, k)).collect();
        if v.is_empty() {
            return f32::NAN;
        }
        let i = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        *v.select_nth_unstable_by(i, f32::total_cmp).1
    }
}

/// The ensemble map of a feature map `f` and a KL map `k`.
pub fn combine(e: Ensemble, f: &[f32], k: &[f32]) -> Vec<f32> {
    match e {
        Ensemble::Weighted(a) => f.iter().zip(k).map(|(f, k)| a * f + (1.0 - a) * k).collect(),
        Ensemble::Sum => f.iter().zip(k).map(|(f, k)| f + k).collect(),
        Ensemble::Calibrated(a, c) => f.iter().zip(k).map(|(f, k)| a * (f - c.feat_mean) / c.feat_std + (1.0 - a) * (k - c.kl_mean) / c.kl_std).collect(),
    }
}

/// The widest activation a batched pass of all timesteps may have (see `Scorer::batch_timesteps`):
/// the demo's is 1.5 MB and a 128-channel model's at 64² 6 MB, both batched.
pub const BATCH_TIMESTEPS_MAX_BYTES: usize = 64 << 20;

#[derive(Clone, Debug)]
pub struct ScoreConfig {
    pub timesteps: Vec<usize>,
    pub feature_timestep: FeatureTimestep,
    pub ensemble: Ensemble,
    pub topk: usize,
    /// run the timesteps of a batch through the UNet together (one call of batch N·K) where the
    /// activations stay small (`BATCH_TIMESTEPS_MAX_BYTES`)
    pub batch_timesteps: bool,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig { timesteps: vec![5, 50, 100], feature_timestep: FeatureTimestep::RespacedIndex, ensemble: Ensemble::Weighted(0.5), topk: 64, batch_timesteps: true }
    }
}

/// Stacks same-shaped [N, ...] tensors along the batch dimension.
fn stack<B: Backend>(b: &B, xs: &[Tensor<B>]) -> Result<Tensor<B>> {
    let d = xs[0].dims().to_vec();
    let per: usize = d[1..].iter().product();
    let flat: Vec<Tensor<B>> = xs.iter().map(|x| b.reshape(x, &[1, d[0] * per, 1])).collect::<Result<_>>()?;
    let cat = b.concat_channels(&flat.iter().collect::<Vec<_>>())?;
    let mut nd = d.clone();
    nd[0] = d[0] * xs.len();
    b.reshape(&cat, &nd)
}

/// Part j of `k` equal parts of the batch dimension.
fn unstack<B: Backend>(b: &B, x: &Tensor<B>, k: usize, j: usize) -> Result<Tensor<B>> {
    let d = x.dims().to_vec();
    let n = d[0] / k;
    let per: usize = d[1..].iter().product();
    let flat = b.reshape(x, &[1, d[0] * per, 1])?;
    let part = b.slice_channels(&flat, j * n * per, (j + 1) * n * per)?;
    let mut nd = d.clone();
    nd[0] = n;
    b.reshape(&part, &nd)
}

/// One image's maps (row-major H×W) and score.
#[derive(Clone, Debug)]
pub struct ImageScores {
    pub h: usize,
    pub w: usize,
    pub kl_map: Vec<f32>,
    pub feat_map: Option<Vec<f32>>,
    pub score_map: Vec<f32>,
    pub image_score: f32,
}

impl ImageScores {
    /// Recomputes the ensemble and the image score with another weighting (per-category α).
    pub fn reweight(&mut self, ensemble: Ensemble, topk: usize) {
        if let Some(f) = &self.feat_map {
            self.score_map = combine(ensemble, f, &self.kl_map);
            self.image_score = topk_mean(&self.score_map, topk);
        }
    }
}

pub struct Scorer<'a, B: Backend> {
    pub unet: &'a UNet<B>,
    pub effnet: Option<&'a EfficientNet<B>>,
    pub diffusion: Diffusion,
    pub cfg: ScoreConfig,
}

/// The variance parameterisation a model was trained with (create_gaussian_diffusion's rule).
pub fn var_type_of(f: &crate::io::flags::ModelFlags) -> VarType {
    if f.learn_sigma {
        VarType::LearnedRange
    } else if f.sigma_small {
        VarType::FixedSmall
    } else {
        VarType::FixedLarge
    }
}

/// Mean of the `k` largest values.
pub fn topk_mean(v: &[f32], k: usize) -> f32 {
    let mut s: Vec<f32> = v.to_vec();
    let k = k.clamp(1, s.len().max(1));
    s.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    s[..k].iter().map(|&x| x as f64).sum::<f64>() as f32 / k as f32
}

impl<'a, B: Backend> Scorer<'a, B> {
    /// Whether the feature map is computed (the model has the head and an extractor is given).
    pub fn has_features(&self) -> bool {
        self.unet.feat_head.is_some() && self.effnet.is_some()
    }

    /// Whether the K timesteps of a batch of `n` images at h×w run through the UNet as one call:
    /// when its widest activation (the first level's, N·K·C₀·H·W f32) stays within
    /// `BATCH_TIMESTEPS_MAX_BYTES`; beyond that one call per timestep keeps the peak memory of
    /// one (the paper's 553M model at 256²: 201 MB per activation batched, issue #17's ≤ 2.5 GB).
    fn batch_timesteps(&self, n: usize, h: usize, w: usize) -> Result<bool> {
        let c0 = self.unet.flags.channel_mult()?.first().map_or(1.0, |&m| m) * self.unet.model_channels as f64;
        let bytes = (n * self.cfg.timesteps.len() * h * w) as f64 * c0 * 4.0;
        Ok(self.cfg.batch_timesteps && self.cfg.timesteps.len() > 1 && bytes <= BATCH_TIMESTEPS_MAX_BYTES as f64)
    }

    fn var_type(&self) -> VarType {
        var_type_of(&self.unet.flags)
    }

    /// Scores a batch x0 [N,3,H,W] in [−1, 1]; `noise[j]` is ε for timesteps[j], [N,3,H,W].
    pub fn score(&self, b: &B, x0: &Tensor<B>, noise: &[Tensor<B>], y: Option<&[usize]>) -> Result<Vec<ImageScores>> {
        let d = x0.dims().to_vec();
        if d.len() != 4 || d[1] != 3 {
            return Err(Error::shape("score", format!("want images [N,3,H,W], got {:?}", d)));
        }
        if noise.len() != self.cfg.timesteps.len() {
            return Err(Error::InvalidArgument(format!("{} noise tensors for {} timesteps", noise.len(), self.cfg.timesteps.len())));
        }
        let (n, h, w) = (d[0], d[2], d[3]);
        let (plane, per) = (h * w, 3 * h * w);
        let nk = self.cfg.timesteps.len() as f32;
        let target = match (self.has_features(), self.effnet) {
            (true, Some(e)) => Some(e.features(b, x0, self.unet.feat_head.as_ref().map(|f| f.feat_shape).unwrap_or(16))?),
            _ => None,
        };
        let mut vb_sum = vec![0.0f32; n * per];
        let mut d_sum = vec![0.0f32; n * plane];
        let ks = &self.cfg.timesteps;
        let kn = ks.len();
        let xts: Vec<Tensor<B>> = ks
            .iter()
            .enumerate()
            .map(|(j, &k)| {
                let (sa, s1) = self.diffusion.q_sample_coefs(k)?;
                b.q_sample(x0, &noise[j], sa, s1)
            })
            .collect::<Result<_>>()?;
        let taus: Vec<f32> = ks.iter().map(|&k| self.diffusion.model_timestep(k, self.unet.flags.rescale_timesteps)).collect();
        // UNet passes: all timesteps in one call of batch N·K, or one call per timestep
        let batched = self.batch_timesteps(n, h, w)?;
        let run = |t_of: &dyn Fn(usize) -> f32| -> Result<Vec<crate::models::unet::UNetOutput<B>>> {
            if batched {
                let x = stack(b, &xts)?;
                let t: Vec<f32> = (0..kn).flat_map(|j| std::iter::repeat_n(t_of(j), n)).collect();
                let yy: Option<Vec<usize>> = y.map(|y| (0..kn).flat_map(|_| y.iter().copied()).collect());
                let o = self.unet.forward_graphed(b, &x, &b.from_host(&[n * kn], &t)?, yy.as_deref())?;
                (0..kn).map(|j| Ok(crate::models::unet::UNetOutput { out: unstack(b, &o.out, kn, j)?, feat: o.feat.as_ref().map(|f| unstack(b, f, kn, j)).transpose()? })).collect()
            } else {
                (0..kn).map(|j| self.unet.forward_graphed(b, &xts[j], &b.from_host(&[n], &vec![t_of(j); n])?, y)).collect()
            }
        };
        let outs = run(&|j| taus[j])?;
        let feat_outs = match (&target, self.cfg.feature_timestep) {
            (Some(_), FeatureTimestep::RespacedIndex) => Some(run(&|j| ks[j] as f32)?),
            _ => None,
        };
        for (j, &k) in ks.iter().enumerate() {
            let xt = &xts[j];
            let o = &outs[j];
            let c = self.diffusion.step_coefs(k, self.var_type(), true)?;
            let (mean, lv, _) = b.p_mean_variance(xt, &o.out, &c)?;
            let kl = b.to_host(&b.kl_bits(x0, xt, &mean, &lv, &c)?)?;
            for i in 0..n {
                let s = &kl[i * per..(i + 1) * per];
                let m = s.iter().map(|&v| v as f64).sum::<f64>() / per as f64;
                let sd = (s.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (per as f64 - 1.0)).sqrt();
                for (acc, &v) in vb_sum[i * per..(i + 1) * per].iter_mut().zip(s) {
                    *acc += ((v as f64 - m) / sd) as f32;
                }
            }
            if let Some(tgt) = &target {
                let feat = match &feat_outs {
                    Some(fo) => fo[j].feat.clone(),
                    None => o.feat.clone(),
                };
                let feat = feat.ok_or_else(|| Error::InvalidArgument("the model has no feature head".into()))?;
                let diff = b.add(&feat, &b.scale_add_scalar(tgt, -1.0, 0.0)?)?;
                let sq = b.mul(&diff, &diff)?;
                let ch = sq.dims()[1];
                // mean over channels as a 1×1 convolution with weights 1/C
                let wmean = b.from_host(&[1, ch, 1, 1], &vec![1.0 / ch as f32; ch])?;
                let dk = b.resize_bilinear(&b.conv2d(&sq, &wmean, None, &Conv2dParams::default())?, h, w)?;
                for (acc, v) in d_sum.iter_mut().zip(b.to_host(&dk)?) {
                    *acc += v;
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let vb = &vb_sum[i * per..(i + 1) * per];
            let kl_map: Vec<f32> = (0..plane).map(|p| (vb[p] / nk + vb[plane + p] / nk + vb[2 * plane + p] / nk) / 3.0).collect();
            let feat_map: Option<Vec<f32>> = target.as_ref().map(|_| d_sum[i * plane..(i + 1) * plane].iter().map(|v| v / nk).collect());
            let score_map: Vec<f32> = match &feat_map {
                Some(f) => combine(self.cfg.ensemble, f, &kl_map),
                None => kl_map.clone(),
            };
            let image_score = topk_mean(&score_map, self.cfg.topk);
            out.push(ImageScores { h, w, kl_map, feat_map, score_map, image_score });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Calibration;

    #[test]
    fn normal_quantile_is_the_nearest_rank_of_the_calibrated_ensemble() {
        // standard statistics and α = ½: the ensemble is ½·f + ½·k, here f = k = the values 1..=2000 shuffled
        let c = Calibration { kl_mean: 0.0, kl_std: 1.0, feat_mean: 0.0, feat_std: 1.0, images: 2 };
        let v: Vec<f32> = (0..2000).map(|i| ((i * 7919) % 2000 + 1) as f32).collect();
        let (a, b) = v.split_at(700);
        let maps = [(a, a), (b, b)];
        assert_eq!(c.normal_quantile(0.5, &maps, 0.999), 1998.0);
        assert_eq!(c.normal_quantile(0.5, &maps, 1.0), 2000.0);
        assert_eq!(c.normal_quantile(0.5, &maps, 0.0), 1.0);
        assert_eq!(c.normal_quantile(0.5, &maps, 0.5), 1000.0);
        // the statistics shift and scale it: (v − 2)/4 for both maps
        let c2 = Calibration { kl_mean: 2.0, kl_std: 4.0, feat_mean: 2.0, feat_std: 4.0, images: 2 };
        assert_eq!(c2.normal_quantile(0.3, &maps, 0.999), (1998.0 - 2.0) / 4.0);
        assert!(c.normal_quantile(0.5, &[], 0.999).is_nan());
    }
}
