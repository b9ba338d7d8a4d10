//! Reference cases of the fused ops (issue #20 item 3), derived from torch's fixture cases of the
//! op they fuse: each keeps torch's inputs and torch's reference output, adds the tensors the
//! fusion reads, and moves the reference only by an exact float64 operation on torch's values —
//! so the reference is still independent of the code under test.
//!   conv2d_add: res seeded, y = torch's conv output + res (in f64, rounded to f32 once);
//!   conv2d_act: y = act(torch's conv output) and, on every other case, each plane's mean of it
//!     (both in f64 from torch's f32 values, rounded once), the activation changing from case to case;
//!   linear_parts: w's rows split into uneven blocks, torch's y as it is (the op is `linear`);
//!   group_norm_emb: scale and shift packed into an emb row at an odd offset between filler
//!     columns (values far from scale's, so a wrong column shows), torch's y as it is;
//!   concat_channels of two parts: concat3's first two parts (float4 path, parts of unequal
//!     width, two images), torch's y without the third part's channels.

use super::case::OpCase;
use super::sizes::uniform;
use serde_json::Value;

/// The fused ops' cases made from `base` (the fixture cases).
pub fn derived_cases(base: &[OpCase]) -> Vec<OpCase> {
    let mut out = Vec::new();
    let mut convs = 0;
    for (i, c) in base.iter().enumerate() {
        let seed = 1000 + i as u64;
        let d = match c.op() {
            // conv2d_act on the small cases only: on a device it is conv2d and activation, whose
            // multi-tile paths the large cases already check
            "conv2d" if c.params["large"].as_bool() == Some(true) => vec![conv2d_add_case(c, seed)],
            "conv2d" => {
                convs += 1;
                vec![conv2d_add_case(c, seed), conv2d_act_case(c, convs - 1)]
            }
            "linear" => vec![linear_parts_case(c)],
            "group_norm" if c.has("scale") => vec![group_norm_emb_case(c, seed)],
            "concat_channels" if c.has("c") => vec![concat2_case(c)],
            _ => vec![],
        };
        out.extend(d.into_iter().flatten());
    }
    out
}

/// The forward inputs of `c` under a new op name, without its gradients (the fused ops have
/// no backward rows) and without the references.
fn inputs_only(c: &OpCase, op: &str, suffix: &str) -> OpCase {
    let mut params = c.params.clone();
    params["op"] = Value::from(op);
    if let Some(p) = params.as_object_mut() {
        p.remove("grads");
    }
    let mut d = OpCase::new(format!("{} {suffix}", c.name), params);
    for (k, t) in &c.tensors {
        if !(k == "y" || k == "gy" || k.starts_with("g_")) {
            d.tensors.insert(k.clone(), t.clone());
        }
    }
    d
}

/// conv2d + a residual of y's shape; values of the residual comparable to y's (so a residual
/// added twice, or not at all, moves the result by about its own size).
fn conv2d_add_case(c: &OpCase, seed: u64) -> Option<OpCase> {
    let (dims, y) = c.tensors.get("y")?;
    let scale = y.iter().fold(1.0f32, |a, v| a.max(v.abs()));
    let res: Vec<f32> = uniform(y.len(), seed).into_iter().map(|u| 2.0 * scale * u).collect();
    let sum: Vec<f32> = y.iter().zip(&res).map(|(&a, &r)| (a as f64 + r as f64) as f32).collect();
    Some(inputs_only(c, "conv2d_add", "+res").with("res", dims, res).with("y", dims, sum))
}

/// The activations the conv2d_act cases take in turn, as upstream defines them (in f64).
const ACTS: [(&str, fn(f64) -> f64); 4] = [("silu", |v| v / (1.0 + (-v).exp())), ("relu6", |v| v.clamp(0.0, 6.0)), ("sigmoid", |v| 1.0 / (1.0 + (-v).exp())), ("relu", |v| v.max(0.0))];

/// The k-th conv case with an activation in its output pass (the k-th of ACTS, round robin) and,
/// for odd k, the planes' means [N, O, 1, 1] of the activated output.
fn conv2d_act_case(c: &OpCase, k: usize) -> Option<OpCase> {
    let (dims, y) = c.tensors.get("y")?;
    let (name, f) = ACTS[k % ACTS.len()];
    let act: Vec<f64> = y.iter().map(|&v| f(v as f64)).collect();
    let mean = k % 2 == 1;
    let mut d = inputs_only(c, "conv2d_act", &format!("+{name}{}", if mean { "+mean" } else { "" })).with("y", dims, act.iter().map(|&v| v as f32).collect());
    d.params["act"] = Value::from(name);
    d.params["mean"] = Value::from(mean);
    if mean {
        let plane: usize = dims[2..].iter().product();
        let means = act.chunks(plane.max(1)).map(|p| (p.iter().sum::<f64>() / plane as f64) as f32).collect();
        d = d.with("mean", &[dims[0], dims[1], 1, 1], means);
    }
    Some(d)
}

/// The linear's rows in three uneven blocks where there are enough (else two, or one).
fn linear_parts_case(c: &OpCase) -> Option<OpCase> {
    let out = *c.tensors.get("w")?.0.first()?;
    let parts: Vec<usize> = match out {
        0 => return None,
        1 => vec![1],
        2 => vec![1, 1],
        _ => vec![1, out / 3 + 1, out - out / 3 - 2].into_iter().filter(|&k| k > 0).collect(),
    };
    let (dims, y) = c.tensors.get("y")?.clone();
    let mut d = inputs_only(c, "linear_parts", "in parts").with("y", &dims, y);
    d.params["parts"] = Value::from(parts);
    Some(d)
}

/// Columns of filler before scale in the packed row (odd: an offset of 0 or an even one is not
/// what this case tests) and after shift.
const EMB_BEFORE: usize = 3;
const EMB_AFTER: usize = 2;

/// emb [N, 3 + 2C + 2] = [filler | scale | shift | filler] per image.
fn group_norm_emb_case(c: &OpCase, seed: u64) -> Option<OpCase> {
    let (sdims, scale) = c.tensors.get("scale")?;
    let (_, shift) = c.tensors.get("shift")?;
    let n = *sdims.first()?;
    let ch = scale.len() / n.max(1);
    let e = EMB_BEFORE + 2 * ch + EMB_AFTER;
    let filler = uniform(n * e, seed);
    let mut emb = Vec::with_capacity(n * e);
    for b in 0..n {
        let fill = |k: usize| 50.0 + 10.0 * filler[b * e + k];
        emb.extend((0..EMB_BEFORE).map(fill));
        emb.extend_from_slice(&scale[b * ch..(b + 1) * ch]);
        emb.extend_from_slice(&shift[b * ch..(b + 1) * ch]);
        emb.extend((EMB_BEFORE + 2 * ch..e).map(fill));
    }
    let (dims, y) = c.tensors.get("y")?.clone();
    let mut d = inputs_only(c, "group_norm_emb", "from a packed emb").with("emb", &[n, e], emb).with("y", &dims, y);
    d.tensors.remove("scale");
    d.tensors.remove("shift");
    d.params["offset"] = Value::from(EMB_BEFORE);
    Some(d)
}

/// concat_channels of a case's parts a and b alone; y = torch's y without c's channels.
fn concat2_case(c: &OpCase) -> Option<OpCase> {
    let (adims, _) = c.tensors.get("a")?;
    let (bdims, _) = c.tensors.get("b")?;
    let (ydims, y) = c.tensors.get("y")?;
    let (n, cy) = (ydims[0], ydims[1]);
    let s: usize = ydims[2..].iter().product();
    let keep = adims[1] + bdims[1];
    let mut dims = ydims.clone();
    dims[1] = keep;
    let y2: Vec<f32> = (0..n).flat_map(|b| y[b * cy * s..(b * cy + keep) * s].iter().copied()).collect();
    let mut d = inputs_only(c, "concat_channels", "(two parts)").with("y", &dims, y2);
    d.tensors.remove("c");
    Some(d)
}
