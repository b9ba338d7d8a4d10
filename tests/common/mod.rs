//! Shared test helpers: the fixture file, llm.c-style tolerance checks, and the table-driven
//! runner that executes one fixture case on any `Backend` (the CUDA emulator reuses it).
#![allow(dead_code)]

pub mod fd;

use ran::backend::{fold_batch_norm, Activation, Backend, Conv2dParams, GroupNormParams, Padding2d, Pool2dParams};
use ran::io::safetensors::SafeTensors;
use ran::{Shape, Tensor};
use serde_json::Value;

/// tests/fixtures/NAME; RAN_FIXTURES_DIR overrides the folder (prebuilt test binaries run on
/// another host, see benches/gpu.sh).
pub fn fixture_path(name: &str) -> std::path::PathBuf {
    match std::env::var_os("RAN_FIXTURES_DIR") {
        Some(d) => std::path::PathBuf::from(d).join(name),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name),
    }
}

pub fn ops_fixtures() -> SafeTensors {
    SafeTensors::open(fixture_path("ops.safetensors")).expect("tests/fixtures/ops.safetensors (run tools/reference/make_op_fixtures.py)")
}

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

/// One fixture case: its name, its JSON parameters, and access to its tensors.
pub struct Case<'a> {
    pub name: String,
    pub params: Value,
    pub fx: &'a SafeTensors,
}

impl<'a> Case<'a> {
    pub fn op(&self) -> &str {
        self.params["op"].as_str().unwrap_or("?")
    }
    pub fn has(&self, k: &str) -> bool {
        self.fx.contains(&format!("{}.{k}", self.name))
    }
    pub fn host(&self, k: &str) -> (Vec<usize>, Vec<f32>) {
        self.fx.get(&format!("{}.{k}", self.name)).unwrap_or_else(|e| panic!("{e}"))
    }
    pub fn load<B: Backend>(&self, b: &B, k: &str) -> Tensor<B> {
        let (s, v) = self.host(k);
        b.from_host(&s, &v).unwrap()
    }
    pub fn usize(&self, k: &str) -> usize {
        self.params[k].as_u64().unwrap_or_else(|| panic!("{}: param {k}", self.name)) as usize
    }
    pub fn grads(&self) -> Vec<String> {
        self.params["grads"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default()
    }
}

pub fn cases(fx: &SafeTensors) -> Vec<Case<'_>> {
    fx.metadata().iter().filter(|(k, _)| !k.starts_with("__")).map(|(k, v)| Case { name: k.clone(), params: serde_json::from_str(v).expect("case metadata is JSON"), fx }).collect()
}

/// Tolerance per op for f32 results against float64 PyTorch, `(atol, rtol)`.
pub fn tolerance(op: &str) -> (f64, f64) {
    match op {
        // sums of up to a few hundred f32 products
        "conv2d" | "linear" | "attention_legacy" => (2e-5, 1e-5),
        // a quadratic form over up to 70 dims: f32 dot products of whitened differences
        "mahalanobis" => (2e-5, 2e-5),
        // normalisation: f64 statistics, then an f32 affine
        "group_norm" | "batch_norm" | "mean_std" => (1e-5, 1e-5),
        // upstream computes it in f32 with args up to ~1000 rad: one f32 ulp of the argument
        // (6e-5 at 1000) moves cos/sin by as much, and libm vs. SLEEF differ by an ulp or two
        "timestep_embedding" => (2e-4, 0.0),
        // single products / sums of a handful of terms
        _ => (2e-6, 1e-6),
    }
}

/// Results of one case: (tensor name, computed) pairs to compare with the fixture's.
pub type Outputs = Vec<(String, Vec<f32>)>;

/// Runs a fixture case's forward op and every input gradient it lists on backend `b`.
pub fn run_case<B: Backend>(b: &B, c: &Case) -> ran::Result<Outputs> {
    let mut out: Outputs = Vec::new();
    let host = |t: &Tensor<B>| b.to_host(t);
    let gy = if c.has("gy") { Some(c.load(b, "gy")) } else { None };
    let gy = || gy.clone().expect("case lists grads but has no gy");
    let want_grads = c.grads();
    let wants = |k: &str| want_grads.iter().any(|g| g == k);
    match c.op() {
        "conv2d" => {
            let pad: Vec<usize> = c.params["pad"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let s = c.usize("stride");
            let p = Conv2dParams { stride: (s, s), padding: Padding2d::lrtb(pad[0], pad[1], pad[2], pad[3]), groups: c.usize("groups") };
            let (x, w) = (c.load(b, "x"), c.load(b, "w"));
            let bias = c.has("b").then(|| c.load(b, "b"));
            out.push(("y".into(), host(&b.conv2d(&x, &w, bias.as_ref(), &p)?)?));
            if wants("x") {
                out.push(("g_x".into(), host(&b.conv2d_x_backward(&gy(), &w, x.shape(), &p)?)?));
            }
        }
        "linear" => {
            let (x, w) = (c.load(b, "x"), c.load(b, "w"));
            let bias = c.has("b").then(|| c.load(b, "b"));
            out.push(("y".into(), host(&b.linear(&x, &w, bias.as_ref())?)?));
            if wants("x") {
                out.push(("g_x".into(), host(&b.linear_x_backward(&gy(), &w)?)?));
            }
        }
        "group_norm" => {
            let p = GroupNormParams { groups: c.usize("groups"), eps: c.params["eps"].as_f64().unwrap() as f32, silu: c.params["silu"].as_bool().unwrap() };
            let (x, ga, be) = (c.load(b, "x"), c.load(b, "gamma"), c.load(b, "beta"));
            let ss = c.has("scale").then(|| (c.load(b, "scale"), c.load(b, "shift")));
            let ssr = ss.as_ref().map(|(a, s)| (a, s));
            out.push(("y".into(), host(&b.group_norm(&x, &ga, &be, &p, ssr)?)?));
            if wants("x") {
                out.push(("g_x".into(), host(&b.group_norm_x_backward(&gy(), &x, &ga, &be, &p, ssr)?)?));
            }
        }
        "batch_norm" => {
            let v = |k: &str| c.host(k).1;
            let (scale, shift) = fold_batch_norm(&v("weight"), &v("bias"), &v("mean"), &v("var"), c.params["eps"].as_f64().unwrap() as f32)?;
            let x = c.load(b, "x");
            let (sc, sh) = (b.from_host(&[scale.len()], &scale)?, b.from_host(&[shift.len()], &shift)?);
            out.push(("y".into(), host(&b.channel_affine(&x, &sc, &sh)?)?));
            if wants("x") {
                out.push(("g_x".into(), host(&b.channel_affine_x_backward(&gy(), &sc)?)?));
            }
        }
        "activation" => {
            let act = Activation::parse(c.params["act"].as_str().unwrap())?;
            let x = c.load(b, "x");
            out.push(("y".into(), host(&b.activation(&x, act)?)?));
            if wants("x") {
                out.push(("g_x".into(), host(&b.activation_x_backward(&gy(), &x, act)?)?));
            }
        }
        op @ ("add" | "mul") => {
            let (a, bb) = (c.load(b, "a"), c.load(b, "b"));
            let y = if op == "add" { b.add(&a, &bb)? } else { b.mul(&a, &bb)? };
            out.push(("y".into(), host(&y)?));
            if wants("a") {
                let (ga, gb) = if op == "add" { b.add_x_backward(&gy(), bb.shape())? } else { b.mul_x_backward(&gy(), &a, &bb)? };
                out.push(("g_a".into(), host(&ga)?));
                out.push(("g_b".into(), host(&gb)?));
            }
        }
        op @ ("avg_pool2d" | "max_pool2d") => {
            let p = Pool2dParams::new(c.usize("kernel"), c.usize("stride"), c.usize("padding"));
            let x = c.load(b, "x");
            let avg = op == "avg_pool2d";
            out.push(("y".into(), host(&if avg { b.avg_pool2d(&x, &p)? } else { b.max_pool2d(&x, &p)? })?));
            if wants("x") {
                let g = if avg { b.avg_pool2d_x_backward(&gy(), x.shape(), &p)? } else { b.max_pool2d_x_backward(&gy(), &x, &p)? };
                out.push(("g_x".into(), host(&g)?));
            }
        }
        "global_avg_pool" => out.push(("y".into(), host(&b.global_avg_pool(&c.load(b, "x"))?)?)),
        "upsample_nearest2x" => {
            out.push(("y".into(), host(&b.upsample_nearest2x(&c.load(b, "x"))?)?));
            if wants("x") {
                out.push(("g_x".into(), host(&b.upsample_nearest2x_x_backward(&gy())?)?));
            }
        }
        "resize_bilinear" => {
            let size: Vec<usize> = c.params["size"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let x = c.load(b, "x");
            out.push(("y".into(), host(&b.resize_bilinear(&x, size[0], size[1])?)?));
            if wants("x") {
                out.push(("g_x".into(), host(&b.resize_bilinear_x_backward(&gy(), x.dims()[2], x.dims()[3])?)?));
            }
        }
        "concat_channels" => {
            let parts: Vec<Tensor<B>> = ["a", "b", "c"].iter().filter(|k| c.has(k)).map(|k| c.load(b, k)).collect();
            let refs: Vec<&Tensor<B>> = parts.iter().collect();
            out.push(("y".into(), host(&b.concat_channels(&refs)?)?));
            let chans: Vec<usize> = parts.iter().map(|t| t.dims()[1]).collect();
            for (k, g) in ["a", "b", "c"].iter().zip(b.concat_channels_x_backward(&gy(), &chans)?) {
                out.push((format!("g_{k}"), host(&g)?));
            }
        }
        "slice_channels" => {
            let (s, e) = (c.usize("start"), c.usize("end"));
            let x = c.load(b, "x");
            out.push(("y".into(), host(&b.slice_channels(&x, s, e)?)?));
            // ∂/∂x of a slice: the gradient in the slice, zeros elsewhere (concat with zero parts)
            let (n, ch, rest) = (x.dims()[0], x.dims()[1], &x.dims()[2..]);
            let zeros = |k: usize| b.zeros(&[&[n, k][..], rest].concat());
            let (z0, z1) = (zeros(s)?, zeros(ch - e)?);
            out.push(("g_x".into(), host(&b.concat_channels(&[&z0, &gy(), &z1])?)?));
        }
        "attention_legacy" => {
            let (qkv, h) = (c.load(b, "qkv"), c.usize("heads"));
            out.push(("y".into(), host(&b.attention_legacy(&qkv, h)?)?));
            if wants("qkv") {
                out.push(("g_qkv".into(), host(&b.attention_legacy_x_backward(&gy(), &qkv, h)?)?));
            }
        }
        "timestep_embedding" => {
            let t = c.load(b, "t");
            out.push(("y".into(), host(&b.timestep_embedding(&t, c.usize("dim"), c.params["max_period"].as_f64().unwrap() as f32)?)?));
        }
        "embedding" => {
            let ids: Vec<usize> = c.params["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            out.push(("y".into(), host(&b.embedding(&c.load(b, "table"), &ids)?)?));
        }
        "scale_add_scalar" => {
            let (alpha, beta) = (c.params["alpha"].as_f64().unwrap() as f32, c.params["beta"].as_f64().unwrap() as f32);
            out.push(("y".into(), host(&b.scale_add_scalar(&c.load(b, "x"), alpha, beta)?)?));
        }
        "mean_std" => {
            let (m, s) = b.mean_std(&c.load(b, "x"))?;
            out.push(("y".into(), vec![m as f32, s as f32]));
        }
        "gather_channels" => {
            let ids: Vec<usize> = c.params["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let x = c.load(b, "x");
            out.push(("y".into(), host(&b.gather_channels(&x, &ids)?)?));
            out.push(("g_x".into(), host(&b.gather_channels_x_backward(&gy(), &ids, x.dims()[1])?)?));
        }
        "mahalanobis" => {
            let (f, mean, linv) = (c.load(b, "f"), c.load(b, "mean"), c.load(b, "linv"));
            out.push(("y".into(), host(&b.mahalanobis(&f, &mean, &linv)?)?));
            out.push(("g_f".into(), host(&b.mahalanobis_x_backward(&gy(), &f, &mean, &linv)?)?));
        }
        other => panic!("fixture case {} has op `{other}` that the runner does not know", c.name),
    }
    Ok(out)
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
