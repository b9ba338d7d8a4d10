//! Writes what `ran detect` needs to run the paper's 553M model on random weights, for the memory
//! and time measurements of benches/RESULTS.md: `unet-f16.safetensors` (the UNet of the paper's
//! flags with the feature head, f16 as `ran convert --dtype f16` writes it, model_flags in the
//! metadata) and `effnet-b4.safetensors` (EfficientNet-B4 to its last tap, f32, with valid BN
//! statistics). Values are `synth_values`, seeded by tensor name (those of `ran bench`).
//!
//!   cargo run --release --example paper_model_files -- OUT_DIR [MODEL_FLAGS]
//!
//! The files are large (1.1 GB for the paper's flags): delete them after use.

use ran::bench::workloads::{self, PAPER_FLAGS};
use ran::io::flags::ModelFlags;
use ran::io::safetensors::{write_streaming, Dtype};
use ran::models::efficientnet::{EffNetConfig, EfficientNet};
use ran::models::unet::UNet;
use ran::models::weights::{synth_values, Loader, Synthetic};
use ran::Cpu;
use std::collections::BTreeMap;
use std::path::Path;

/// The values the synthetic loader hands out for `name` (BN variances made positive as there).
fn values(entries: &[(String, Vec<usize>)], name: &str) -> ran::Result<Vec<f32>> {
    let shape = &entries.iter().find(|(k, _)| k == name).ok_or_else(|| ran::Error::InvalidArgument(format!("no tensor {name}")))?.1;
    let mut v = synth_values(1, name, shape);
    if name.ends_with("running_var") {
        v.iter_mut().for_each(|x| *x = 0.5 + x.abs());
    }
    Ok(v)
}

fn write(path: &Path, entries: &[(String, Vec<usize>)], meta: &BTreeMap<String, String>, dtype: Dtype) -> ran::Result<()> {
    write_streaming(path, entries, |n| values(entries, n), meta, dtype)?;
    let params: usize = entries.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    println!("{}: {params} parameters in {} tensors, {} bytes", path.display(), entries.len(), std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
    Ok(())
}

fn main() -> ran::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| ran::Error::InvalidArgument("usage: paper_model_files OUT_DIR [MODEL_FLAGS]".into()))?;
    let flags_s = args.next().unwrap_or_else(|| PAPER_FLAGS.to_string());
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).map_err(|e| ran::Error::Io { path: dir.to_path_buf(), source: e })?;

    let flags = ModelFlags::parse(&flags_s)?;
    let mut shapes = BTreeMap::new();
    if let Some(n) = workloads::num_classes(&flags) {
        shapes.insert("label_emb.weight".to_string(), vec![n, 4 * flags.num_channels]);
    }
    shapes.insert("feat_rec1.0.weight".to_string(), vec![workloads::feat_tap_channels(&flags)?]);
    // the parameter lists, from building each model once on random weights
    let unet = Loader::synthetic(&Cpu, Synthetic { seed: 1, shapes });
    UNet::load(&flags, &unet)?;
    let mut meta = BTreeMap::new();
    meta.insert("model_flags".to_string(), flags_s.clone());
    meta.insert("feature_extractor".to_string(), "efficientnet-b4".to_string());
    write(&dir.join("unet-f16.safetensors"), &unet.loaded(), &meta, Dtype::F16)?;

    let eff = Loader::synthetic(&Cpu, Synthetic { seed: 1, shapes: BTreeMap::new() });
    EfficientNet::load(&EffNetConfig::from_name("efficientnet-b4")?, &eff)?;
    write(&dir.join("effnet-b4.safetensors"), &eff.loaded(), &BTreeMap::new(), Dtype::F32)
}
