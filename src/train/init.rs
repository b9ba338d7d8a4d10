//! The model a training run starts from: every tensor of `--init` (a .pt or safetensors) whose
//! name the model has, the rest initialised fresh as upstream's modules initialise themselves —
//! PyTorch's default U(±1/√fan_in) for convolutions and linear layers, GroupNorm γ = 1, β = 0,
//! zero for the layers guided-diffusion wraps in `zero_module` (each ResBlock's last conv,
//! attention's proj_out, out.2), N(0, 1) for the class embedding (docs/method.md §5).

use super::rng::{SplitMix, INIT};
use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::io::flags::ModelFlags;
use crate::models::unet::{UNet, FEAT_TAP};
use crate::models::weights::{Loader, Synthetic, Weights};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Tensors held in memory, by name (the merged initial state).
pub struct MemWeights {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Weights for MemWeights {
    fn path(&self) -> &Path {
        &self.path
    }
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.tensors.get(name).cloned().ok_or_else(|| Error::MissingTensor { path: self.path.clone(), name: name.into() })
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.tensors.get(name).map(|t| t.0.clone()).ok_or_else(|| Error::MissingTensor { path: self.path.clone(), name: name.into() })
    }
}

/// Channels of output_blocks[FEAT_TAP]'s output, where the feature head reads (as UNet::load
/// builds the decoder: each level, deepest first, has num_res_blocks + 1 blocks).
fn feat_tap_channels(f: &ModelFlags) -> Result<usize> {
    let mult = f.channel_mult()?;
    let per_level = f.num_res_blocks + 1;
    let from_deepest = FEAT_TAP / per_level;
    if from_deepest >= mult.len() {
        return Err(Error::InvalidArgument(format!(
            "the feature head taps output_blocks[{FEAT_TAP}] but these flags give {} output blocks: more levels (--channel_mult) or --num_res_blocks",
            mult.len() * per_level
        )));
    }
    Ok((mult[mult.len() - 1 - from_deepest] * f.num_channels as f64) as usize)
}

/// A fresh tensor as upstream's constructor makes it (see the module comment).
fn fresh(seed: u64, name: &str, shape: &[usize], fan_in_of: &dyn Fn(&str) -> usize) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let mut r = SplitMix::stream(seed, INIT, h);
    let zeroed = name.contains(".out_layers.3.") || name.contains(".proj_out.") || name.starts_with("out.2.");
    let layer = name.rsplit_once('.').map(|(l, _)| l).unwrap_or(name);
    let is_norm = fan_in_of(&format!("{layer}.weight")) == 0;
    if zeroed || (is_norm && name.ends_with(".bias")) {
        return vec![0.0; n];
    }
    if is_norm {
        return vec![1.0; n];
    }
    if name == "label_emb.weight" {
        return (0..n).map(|_| r.normal() as f32).collect();
    }
    let bound = 1.0 / (fan_in_of(&format!("{layer}.weight")).max(1) as f64).sqrt();
    (0..n).map(|_| ((2.0 * r.uniform() - 1.0) * bound) as f32).collect()
}

/// What the run starts from.
pub struct Initial {
    pub weights: MemWeights,
    /// the tensors initialised fresh, each with why (absent from --init, or replaced)
    pub fresh: Vec<String>,
}

/// The initial tensors of the model of `flags` with `classes` classes (class-conditional flags)
/// and a feature head predicting `head` channels (None: no head), from `init` where it has them.
pub fn initial(flags: &ModelFlags, classes: usize, head: Option<usize>, init: Option<&Path>, seed: u64) -> Result<Initial> {
    let emb_dim = 4 * flags.num_channels;
    let mut shapes = BTreeMap::new();
    if flags.class_cond {
        let k = flags.num_classes.unwrap_or(classes);
        if k < classes {
            return Err(Error::InvalidArgument(format!("--num_classes {k} in the flags, but the data has {classes} categories")));
        }
        shapes.insert("label_emb.weight".to_string(), vec![k, emb_dim]);
    }
    if let Some(c) = head {
        shapes.insert("feat_rec1.0.weight".to_string(), vec![feat_tap_channels(flags)?]);
        shapes.insert("feat_rec1.2.bias".to_string(), vec![c]);
    }
    // the architecture's names and shapes, from a throwaway build (CPU, invented values)
    let names = {
        let l = Loader::synthetic(&Cpu, Synthetic { seed: 0, shapes });
        let _ = UNet::load(flags, &l)?;
        l.loaded()
    };
    let by_name: BTreeMap<&str, &Vec<usize>> = names.iter().map(|(n, s)| (n.as_str(), s)).collect();
    // fan-in of a weight; 0 marks a 1-d weight (a norm's γ)
    let fan_in_of = |w: &str| by_name.get(w).map(|s| if s.len() == 1 { 0 } else { s[1..].iter().product() }).unwrap_or(1);
    let src = init.map(crate::models::open_weights).transpose()?;
    let mut tensors = BTreeMap::new();
    let mut fresh_names = Vec::new();
    for (name, shape) in &names {
        let from_init = match &src {
            Some(w) if w.contains(name) => {
                let got = w.shape(name)?;
                if &got == shape {
                    Some(w.get(name)?.1)
                } else if name == "label_emb.weight" && got.len() == 2 && got[1] == shape[1] {
                    // the official fine-tuning drops ImageNet's 1000-class table for a new one
                    fresh_names.push(format!("{name} (the init's has {} classes, the data {}: a new embedding, as the official code)", got[0], shape[0]));
                    None
                } else {
                    return Err(Error::BadTensor { path: w.path().to_path_buf(), name: name.clone(), msg: format!("shape {got:?} in --init, the model of these flags expects {shape:?}") });
                }
            }
            _ => {
                fresh_names.push(name.clone());
                None
            }
        };
        let v = match from_init {
            Some(v) => v,
            None => fresh(seed, name, shape, &fan_in_of),
        };
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::BadTensor { path: init.map(Path::to_path_buf).unwrap_or_default(), name: name.clone(), msg: format!("value #{i} is {} (weights must be finite)", v[i]) });
        }
        tensors.insert(name.clone(), (shape.clone(), v));
    }
    if let Some(w) = &src {
        let unused: Vec<String> = w.names().into_iter().filter(|n| !by_name.contains_key(n.as_str())).collect();
        if !unused.is_empty() {
            let head = unused.iter().any(|n| n.starts_with("feat_rec1.")) && head.is_none();
            let hint = if head { "the --init model has a feature head: give --effnet to train it" } else { "other --flags?" };
            return Err(Error::BadFile {
                path: w.path().to_path_buf(),
                msg: format!("{} tensor(s) of --init the model does not have, e.g. {} ({hint})", unused.len(), unused.iter().take(6).cloned().collect::<Vec<_>>().join(", ")),
            });
        }
    }
    Ok(Initial { weights: MemWeights { path: init.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("<fresh weights>")), tensors }, fresh: fresh_names })
}

/// The model on `b` from in-memory tensors (every tensor used, shapes as the flags say).
pub fn build<B: Backend>(b: &B, flags: &ModelFlags, w: &dyn Weights) -> Result<UNet<B>> {
    let l = Loader::new(w, b);
    let m = UNet::load(flags, &l)?;
    l.finish()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &str = "--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --attention_resolutions 2 --num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --class_cond True --learn_sigma True";

    fn stats(v: &[f32]) -> (f64, f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt(), v.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs())))
    }

    /// Fresh tensors follow upstream's constructors: a wrong rule (a zero_module layer left
    /// random, a norm not at 1/0, the wrong fan-in) shows up here.
    #[test]
    fn fresh_tensors_are_initialised_as_upstream() {
        let f = ModelFlags::parse(FLAGS).unwrap();
        let init = initial(&f, 3, None, None, 0).unwrap();
        let t = |n: &str| &init.weights.tensors[n].1;
        for zero in ["out.2.weight", "out.2.bias", "input_blocks.1.0.out_layers.3.weight", "middle_block.1.proj_out.weight"] {
            assert!(t(zero).iter().all(|&x| x == 0.0), "{zero}");
        }
        assert!(t("input_blocks.1.0.in_layers.0.weight").iter().all(|&x| x == 1.0));
        assert!(t("out.0.bias").iter().all(|&x| x == 0.0));
        // conv 3→32, 3×3: U(±1/√27), std = bound/√3
        let (mean, std, max) = stats(t("input_blocks.0.0.weight"));
        let bound = 1.0 / 27f64.sqrt();
        assert!(max <= bound && mean.abs() < 0.03 && (std - bound / 3f64.sqrt()).abs() < 0.15 * bound, "{mean} {std} {max}");
        // the bias shares its layer's fan-in
        assert!(stats(t("time_embed.0.bias")).2 <= 1.0 / 32f64.sqrt());
        let (mean, std, _) = stats(t("label_emb.weight"));
        assert_eq!(init.weights.tensors["label_emb.weight"].0, vec![3, 128]);
        assert!(mean.abs() < 0.1 && (std - 1.0).abs() < 0.1, "{mean} {std}");
        assert_eq!(init.fresh.len(), init.weights.tensors.len());
    }

    /// --init supplies what it has; a class table of another size is replaced (and said so),
    /// any other shape mismatch names the tensor.
    #[test]
    fn init_tensors_are_taken_by_name() {
        let f = ModelFlags::parse(FLAGS).unwrap();
        let src = initial(&f, 2, None, None, 7).unwrap();
        let d = std::env::temp_dir().join(format!("ran-init-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("init.safetensors");
        let list: Vec<(&str, &[usize], &[f32])> = src.weights.tensors.iter().map(|(n, (s, v))| (n.as_str(), &s[..], &v[..])).collect();
        crate::io::safetensors::write_f32(&p, &list, &BTreeMap::new()).unwrap();
        let got = initial(&f, 3, None, Some(&p), 0).unwrap();
        assert_eq!(got.fresh.len(), 1, "{:?}", got.fresh);
        assert!(got.fresh[0].starts_with("label_emb.weight (the init's has 2 classes, the data 3"), "{:?}", got.fresh);
        assert_eq!(got.weights.tensors["input_blocks.0.0.weight"], src.weights.tensors["input_blocks.0.0.weight"]);
        let other = ModelFlags::parse(&FLAGS.replace("--channel_mult 1,2", "--channel_mult 1,1")).unwrap();
        let e = initial(&other, 2, None, Some(&p), 0).err().expect("a shape mismatch").to_string();
        assert!(e.contains("input_blocks.3.0.in_layers.2.weight") && e.contains("[64, 32, 3, 3]"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
