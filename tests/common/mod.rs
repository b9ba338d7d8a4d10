//! Shared test helpers: fixture files, llm.c-style tolerance checks, the op-table checker
//! (table.rs) and finite differences (fd.rs).
#![allow(dead_code)]

pub mod fd;
pub mod paths;
pub mod table;
pub mod tc;
pub mod train_cli;

#[allow(unused_imports)] // each test binary uses some of them
pub use paths::{fixture_path, ran_bin, ran_command, repo_path};

use ran::io::safetensors::SafeTensors;
use ran::Shape;

/// `|got − want| <= atol + rtol·|want|` everywhere; Err names the worst element.
pub fn check_close(what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) -> Result<f64, String> {
    if got.len() != want.len() {
        return Err(format!("{what}: {} values, reference has {}", got.len(), want.len()));
    }
    let mut max_err = 0.0f64;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        max_err = max_err.max(err);
        let excess = err - (atol + rtol * (w as f64).abs());
        #[allow(clippy::neg_cmp_op_on_partial_ord)] // a NaN must fail
        if !(excess <= 0.0) && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    match worst {
        None => Ok(max_err),
        Some((i, _)) => Err(format!("{what}: element {i} got {} want {} (atol {atol:e}, rtol {rtol:e}; max abs err {max_err:e})", got[i], want[i])),
    }
}

/// Every op-table case with an independent reference (the fixture files of tools/reference/).
pub fn fixture_cases() -> Vec<ran::optable::OpCase> {
    let dir = fixture_path("ops.safetensors");
    ran::optable::fixtures::all_cases(dir.parent().unwrap()).expect("the op-table fixtures (tools/reference/make_*_fixtures.py)")
}

/// Shape helper for tests.
pub fn shape(d: &[usize]) -> Shape {
    Shape::new(d)
}

/// The paper-like fixture's weights alone, with its flags, as `ran convert` would write them
/// (the fixture file also holds its inputs and outputs).
pub fn paperlike_model_file(dir: &std::path::Path) -> String {
    let fx = SafeTensors::open(fixture_path("unet_guided_paperlike.safetensors")).unwrap();
    let names: Vec<String> = fx.names().filter(|n| !["x", "t", "y", "out", "feat"].contains(n)).map(String::from).collect();
    let data: Vec<(Vec<usize>, Vec<f32>)> = names.iter().map(|n| fx.get(n).unwrap()).collect();
    let tensors: Vec<(&str, &[usize], &[f32])> = names.iter().zip(&data).map(|(n, (s, v))| (n.as_str(), &s[..], &v[..])).collect();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("model_flags".to_string(), fx.metadata()["model_flags"].clone());
    let p = dir.join("model.safetensors");
    ran::io::safetensors::write_f32(&p, &tensors, &meta).unwrap();
    p.display().to_string()
}

/// Weights made up by a counter-based generator that tools/reference/make_padim_fixtures.py
/// (`counter_value`) reproduces in numpy, for testing a full-size network against its PyTorch
/// original without storing its weights: u_i = splitmix64(fnv1a64(name) ^ i·0x9E3779B97F4A7C15)
/// mapped to [−1, 1) by its top 24 bits; conv weights u·√(2/fan_in), BN γ = 1 + 0.1u,
/// β = mean = 0.1u, var = 1 + 0.5|u|.
pub struct CounterWeights {
    pub shapes: std::collections::BTreeMap<String, Vec<usize>>,
}

impl CounterWeights {
    pub fn uniform(name: &str, n: usize) -> Vec<f64> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for c in name.bytes() {
            h = (h ^ c as u64).wrapping_mul(0x100_0000_01b3);
        }
        (0..n as u64)
            .map(|i| {
                let mut z = (h ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                (z >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0
            })
            .collect()
    }
}

impl ran::models::weights::Weights for CounterWeights {
    fn path(&self) -> &std::path::Path {
        std::path::Path::new("<counter-generated weights>")
    }
    fn names(&self) -> Vec<String> {
        self.shapes.keys().cloned().collect()
    }
    fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
    fn get(&self, name: &str) -> ran::Result<(Vec<usize>, Vec<f32>)> {
        let shape = self.shape(name)?;
        let n: usize = shape.iter().product();
        let u = Self::uniform(name, n);
        let v: Vec<f32> = if name.ends_with("running_var") {
            u.iter().map(|u| (1.0 + 0.5 * u.abs()) as f32).collect()
        } else if shape.len() == 1 && name.ends_with("weight") {
            u.iter().map(|u| (1.0 + 0.1 * u) as f32).collect()
        } else if shape.len() == 1 {
            u.iter().map(|u| (0.1 * u) as f32).collect()
        } else {
            let scale = (2.0 / (n / shape[0]) as f64).sqrt();
            u.iter().map(|u| (u * scale) as f32).collect()
        };
        Ok((shape, v))
    }
    fn shape(&self, name: &str) -> ran::Result<Vec<usize>> {
        self.shapes.get(name).cloned().ok_or_else(|| ran::Error::MissingTensor { path: self.path().to_path_buf(), name: name.into() })
    }
}
