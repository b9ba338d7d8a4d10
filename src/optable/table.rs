//! The op table: one row per Backend method — the fixture op whose cases test it, the inputs it
//! reads, its f32 tolerance against a float64 reference, and the work it does (FLOPs for the
//! GEMM-like ops, minimum bytes for the memory-bound ones) for the benchmarks' GFLOP/s and GB/s.
//! The coverage test requires a row for every method of `trait Backend` and a case for every row.

use super::case::OpCase;

/// `|got − ref| ≤ atol + rtol·|ref|`
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

const fn tol(atol: f64, rtol: f64) -> Tol {
    Tol { atol, rtol }
}

#[derive(Clone, Copy, Debug)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
}

/// What a method costs, from its case.
#[derive(Clone, Copy)]
pub enum Cost {
    /// FLOPs (multiply and add counted as two) from the case's shapes
    Flops(fn(&OpCase) -> f64),
    /// read every listed input once and write every output once (the least traffic possible)
    MinBytes,
}

/// How a row's tolerance is found.
#[derive(Clone, Copy)]
pub enum TolRule {
    Fixed(Tol),
    /// f32 sums of K products: `atol` at K ≤ 256 for unit-scale outputs, growing as √(K/256) beyond
    /// (rounding errors of a long sum grow like a random walk) and with the output's scale
    /// max(1, max|ref|) (they are relative to the terms summed, not to each result); K from the case
    Reduction {
        base: Tol,
        k: fn(&OpCase) -> f64,
    },
    /// The gradient of a broadcast input: output `g_X` sums numel(gy)/numel(X) terms of gy (an
    /// nc11 scale over 64² positions sums 4,096), so `base` grows as `Reduction`'s does with that
    /// K; a same-shape input's gradient is K = 1, `base` itself
    BroadcastSum(Tol),
    /// `atol` times the output's scale max(1, max|ref|): normalisation of small-variance input
    /// (x̂ = (x − μ)/σ amplifies the rounding of x − μ by 1/σ, and ∂x carries 1/σ too)
    Scaled(Tol),
    /// AdamW: the parameters' updates are ~lr in size (atol = 5e-3·lr); the moments' scale is the
    /// gradients' (atol = 1e-6·max|ref|)
    Adamw,
}

pub struct Entry {
    /// the Backend method
    pub method: &'static str,
    /// the fixture op whose cases run it (`_x_backward` rows only on cases that list gradients)
    pub case_op: &'static str,
    /// input tensors it reads (for the minimum traffic)
    pub reads: &'static [&'static str],
    pub tol: TolRule,
    pub cost: Cost,
}

impl Entry {
    pub fn is_input_gradient(&self) -> bool {
        self.method.ends_with("_x_backward")
    }

    /// Tolerance of output `out` of case `c` against reference values `reference`.
    /// A case may widen it by its parameter `tol_scale`, with the reason stated where the case is
    /// made (tools/reference/*.py).
    pub fn tolerance(&self, c: &OpCase, out: &str, reference: &[f32]) -> Tol {
        let t = self.base_tolerance(c, out, reference);
        let s = c.params["tol_scale"].as_f64().unwrap_or(1.0);
        tol(t.atol * s, t.rtol * s)
    }

    fn base_tolerance(&self, c: &OpCase, out: &str, reference: &[f32]) -> Tol {
        let scale = || reference.iter().fold(1.0f64, |a, &v| a.max(v.abs() as f64));
        match self.tol {
            TolRule::Fixed(t) => t,
            TolRule::Reduction { base, k } => {
                let grow = (k(c) / 256.0).sqrt().max(1.0);
                tol(base.atol * grow * scale(), base.rtol * grow)
            }
            TolRule::BroadcastSum(base) => {
                let numel = |k: &str| c.tensors.get(k).map_or(1, |(_, v)| v.len().max(1));
                let terms = out.strip_prefix("g_").map_or(1.0, |x| numel("gy") as f64 / numel(x) as f64);
                if terms <= 1.0 {
                    return base;
                }
                let grow = (terms / 256.0).sqrt().max(1.0);
                tol(base.atol * grow * scale(), base.rtol * grow)
            }
            TolRule::Scaled(base) => tol(base.atol * scale(), base.rtol),
            TolRule::Adamw => {
                if out.starts_with("param") {
                    tol(5e-3 * c.f64("lr").unwrap_or(1e-3), 2e-6)
                } else {
                    let scale = reference.iter().fold(0.0f64, |a, &v| a.max(v.abs() as f64));
                    tol(1e-6 * scale, 2e-6)
                }
            }
        }
    }

    /// The work of one call on case `c` that wrote `out_elems` values.
    pub fn work(&self, c: &OpCase, out_elems: usize) -> Work {
        match self.cost {
            Cost::Flops(f) => Work::Flops(f(c)),
            Cost::MinBytes => Work::Bytes(self.min_bytes(c, out_elems)),
        }
    }

    /// The least traffic of one call that wrote `out_elems` f32 values: every listed input read
    /// once, every output written once (the memory-bound rows' work; the GEMM rows' floor).
    pub fn min_bytes(&self, c: &OpCase, out_elems: usize) -> f64 {
        let read: usize = self.reads.iter().filter_map(|k| c.tensors.get(*k)).map(|(_, v)| v.len()).sum();
        4.0 * (read + out_elems) as f64
    }

    /// The row's FLOPs on case `c`, for the GEMM-like rows (multiply and add counted as two).
    pub fn flops(&self, c: &OpCase) -> Option<f64> {
        match self.cost {
            Cost::Flops(f) => Some(f(c)),
            Cost::MinBytes => None,
        }
    }
}

/// Output positions × (Cin/groups)·kh·kw for a conv case: the multiply-adds of the forward, and
/// of each backward.
fn conv_macs(c: &OpCase) -> f64 {
    let (Ok(x), Ok(w)) = (c.dims("x"), c.dims("w")) else { return 0.0 };
    let pad = c.usizes("pad").unwrap_or_else(|_| vec![0; 4]);
    let s = c.usize("stride").unwrap_or(1).max(1);
    let ho = (x[2] + pad[2] + pad[3]).saturating_sub(w[2]) / s + 1;
    let wo = (x[3] + pad[0] + pad[1]).saturating_sub(w[3]) / s + 1;
    (x[0] * w[0] * ho * wo * w[1] * w[2] * w[3]) as f64
}

fn conv_k(c: &OpCase) -> f64 {
    c.dims("w").map(|w| (w[1] * w[2] * w[3]) as f64).unwrap_or(1.0)
}

/// K of the second conv (w2) of a records case
fn conv2_k(c: &OpCase) -> f64 {
    c.dims("w2").map(|w| (w[1] * w[2] * w[3]) as f64).unwrap_or(1.0)
}

/// the longer of the producer's and the next conv's sums
fn conv_gn_k(c: &OpCase) -> f64 {
    conv_k(c).max(conv2_k(c))
}

/// ∂w sums over every output position of the batch
fn conv_w_k(c: &OpCase) -> f64 {
    c.dims("gy").map(|g| (g[0] * g[2] * g[3]) as f64).unwrap_or(1.0)
}

fn linear_macs(c: &OpCase) -> f64 {
    let (Ok(x), Ok(w)) = (c.dims("x"), c.dims("w").or_else(|_| c.dims("gy"))) else { return 0.0 };
    let rows: usize = x[..x.len() - 1].iter().product();
    (rows * w[0] * x[x.len() - 1]) as f64
}

fn linear_k(c: &OpCase) -> f64 {
    c.dims("x").map(|x| x[x.len() - 1] as f64).unwrap_or(1.0)
}

fn linear_w_k(c: &OpCase) -> f64 {
    c.dims("x").map(|x| x[..x.len() - 1].iter().product::<usize>() as f64).unwrap_or(1.0)
}

/// QKᵀ and PV per head: 2·T²·d multiply-adds; qkv is [B, 3·H·d, T]
fn attention_macs(c: &OpCase) -> f64 {
    c.dims("qkv").map(|q| (q[0] * q[1] / 3 * q[2] * q[2] * 2) as f64).unwrap_or(0.0)
}

/// the softmax-weighted sum runs over T keys
fn attention_k(c: &OpCase) -> f64 {
    c.dims("qkv").map(|q| q[2] as f64).unwrap_or(1.0)
}

/// quadratic form over d dims per position
fn maha_k(c: &OpCase) -> f64 {
    c.dims("f").map(|f| f[1] as f64).unwrap_or(1.0)
}

// Bases set a few times above the largest error seen on the CPU and on the emulator under every
// schedule (both printed by tests/ops_vs_torch.rs and tests/backends_agree.rs as "uses N% of
// tolerance"); a real GPU gets 4× the absolute part.
/// f32 sums of products, per unit of the output's scale
const GEMM: Tol = tol(2e-6, 1e-6);
/// softmax over f32 logits: their rounding moves the weights
const ATTENTION: Tol = tol(6e-6, 3e-6);
const NORM: Tol = tol(1e-5, 1e-5);
/// one f32 rounding or a handful (activations, pools, broadcast sums)
const SIMPLE: Tol = tol(1e-6, 5e-7);
/// copies and single IEEE operations (f32 add/mul of f32 inputs is the f64 result rounded once):
/// any difference is a wrong index
const EXACT: Tol = tol(0.0, 0.0);
const STEP: Tol = tol(1e-6, 2e-6);
const BILINEAR: Tol = tol(2e-5, 1e-5);

macro_rules! row {
    ($m:literal, $op:literal, [$($r:literal),*], $tol:expr, $cost:expr) => {
        Entry { method: $m, case_op: $op, reads: &[$($r),*], tol: $tol, cost: $cost }
    };
}

use Cost::{Flops, MinBytes};
use TolRule::{Adamw, BroadcastSum, Fixed, Reduction, Scaled};

/// Every Backend op, once.
pub static TABLE: &[Entry] = &[
    row!("conv2d", "conv2d", ["x", "w", "b"], Reduction { base: GEMM, k: conv_k }, Flops(|c| 2.0 * conv_macs(c))),
    // conv2d with the residual add in its epilogue: the conv's sums, then one more rounding
    row!("conv2d_add", "conv2d_add", ["x", "w", "b", "res"], Reduction { base: GEMM, k: conv_k }, Flops(|c| 2.0 * conv_macs(c))),
    // conv2d with its activation (and the planes' means) in the output pass: the conv's sums, then
    // the activation's one rounding (its slope is at most 1.1) and the fast exp's 4e-7
    row!("conv2d_act", "conv2d_act", ["x", "w", "b"], Reduction { base: GEMM, k: conv_k }, Flops(|c| 2.0 * conv_macs(c))),
    row!("conv2d_x_backward", "conv2d", ["gy", "w"], Reduction { base: GEMM, k: conv_k }, Flops(|c| 2.0 * conv_macs(c))),
    row!("conv2d_w_backward", "conv2d_w_backward", ["gy", "x"], Reduction { base: GEMM, k: conv_w_k }, Flops(|c| 2.0 * conv_macs(c))),
    row!("linear", "linear", ["x", "w", "b"], Reduction { base: GEMM, k: linear_k }, Flops(|c| 2.0 * linear_macs(c))),
    // the same sums as `linear`, in one GEMM or one per block of rows
    row!("linear_parts", "linear_parts", ["x", "w", "b"], Reduction { base: GEMM, k: linear_k }, Flops(|c| 2.0 * linear_macs(c))),
    row!("linear_x_backward", "linear", ["gy", "w"], Reduction { base: GEMM, k: linear_k }, Flops(|c| 2.0 * linear_macs(c))),
    row!("linear_w_backward", "linear_w_backward", ["gy", "x"], Reduction { base: GEMM, k: linear_w_k }, Flops(|c| 2.0 * linear_macs(c))),
    // normalisation: f64 statistics on the CPU, f32 on the device, then an f32 affine
    row!("group_norm", "group_norm", ["x", "gamma", "beta", "scale", "shift"], Scaled(NORM), MinBytes),
    // scale and shift read from columns of a packed projection: group_norm's arithmetic
    row!("group_norm_emb", "group_norm_emb", ["x", "gamma", "beta", "emb"], Scaled(NORM), MinBytes),
    // group norm feeding a conv: the norm's f32 rounding (relative to its unit-scale output) carried
    // through the conv's sums of K products
    row!("group_norm_conv2d", "group_norm_conv2d", ["x", "gamma", "beta", "emb", "w", "b", "res"], Reduction { base: NORM, k: conv_k }, Flops(|c| 2.0 * conv_macs(c))),
    // records made by the producer: y its own output (a conv: its K; a concat: exact), z the next
    // norm's conv from them (the norm's rounding through w2's K)
    row!("conv2d_gn", "conv2d_gn", ["x", "w", "b", "res", "gamma", "beta", "emb", "w2"], Reduction { base: NORM, k: conv_gn_k }, Flops(|c| 2.0 * conv_macs(c))),
    row!("concat_channels_gn", "concat_channels_gn", ["a", "b", "gamma", "beta", "emb", "w2"], Reduction { base: NORM, k: conv2_k }, MinBytes),
    // group norm and a 2×2 pool or nearest copy: the norm's rounding, averaged or copied
    row!("group_norm_resample", "group_norm_resample", ["a", "b", "gamma", "beta"], Scaled(NORM), MinBytes),
    row!("group_norm_x_backward", "group_norm", ["gy", "x", "gamma", "beta", "scale", "shift"], Scaled(NORM), MinBytes),
    row!("group_norm_w_backward", "group_norm_w_backward", ["gy", "x", "gamma", "beta", "scale", "shift"], Fixed(tol(4e-6, 2e-6)), MinBytes),
    row!("channel_affine", "batch_norm", ["x"], Fixed(SIMPLE), MinBytes),
    row!("channel_affine_x_backward", "batch_norm", ["gy"], Fixed(SIMPLE), MinBytes),
    row!("activation", "activation", ["x"], Fixed(SIMPLE), MinBytes),
    row!("activation_x_backward", "activation", ["gy", "x"], Fixed(SIMPLE), MinBytes),
    row!("add", "add", ["a", "b"], Fixed(EXACT), MinBytes),
    row!("add_x_backward", "add", ["gy"], BroadcastSum(SIMPLE), MinBytes),
    row!("mul", "mul", ["a", "b"], Fixed(EXACT), MinBytes),
    row!("mul_x_backward", "mul", ["gy", "a", "b"], BroadcastSum(SIMPLE), MinBytes),
    row!("scale_add_scalar", "scale_add_scalar", ["x"], Fixed(SIMPLE), MinBytes),
    row!("avg_pool2d", "avg_pool2d", ["x"], Fixed(SIMPLE), MinBytes),
    row!("avg_pool2d_x_backward", "avg_pool2d", ["gy"], Fixed(SIMPLE), MinBytes),
    row!("max_pool2d", "max_pool2d", ["x"], Fixed(EXACT), MinBytes),
    row!("max_pool2d_x_backward", "max_pool2d", ["gy", "x"], Fixed(SIMPLE), MinBytes),
    row!("global_avg_pool", "global_avg_pool", ["x"], Fixed(SIMPLE), MinBytes),
    row!("upsample_nearest2x", "upsample_nearest2x", ["x"], Fixed(EXACT), MinBytes),
    row!("upsample_nearest2x_x_backward", "upsample_nearest2x", ["gy"], Fixed(SIMPLE), MinBytes),
    // four taps, but source coordinates (dst + ½)·in/out − ½ in f32: at a non-integer ratio their
    // rounding (~4e-6 at 37 rows) times the image's slope dominates
    row!("resize_bilinear", "resize_bilinear", ["x"], Fixed(BILINEAR), MinBytes),
    row!("resize_bilinear_x_backward", "resize_bilinear", ["gy"], Fixed(BILINEAR), MinBytes),
    row!("concat_channels", "concat_channels", ["a", "b", "c"], Fixed(EXACT), MinBytes),
    row!("concat_channels_x_backward", "concat_channels", ["gy"], Fixed(EXACT), MinBytes),
    row!("slice_channels", "slice_channels", ["x"], Fixed(EXACT), MinBytes),
    row!("gather_channels", "gather_channels", ["x"], Fixed(EXACT), MinBytes),
    row!("gather_channels_x_backward", "gather_channels", ["gy"], Fixed(EXACT), MinBytes),
    // a quadratic form over d dims: f32 dot products of whitened differences; the packed factor
    // is most of the traffic
    row!("mahalanobis", "mahalanobis", ["f", "mean", "linv"], Reduction { base: tol(1e-6, 1e-6), k: maha_k }, MinBytes),
    row!("mahalanobis_x_backward", "mahalanobis", ["gy", "f", "mean", "linv"], Reduction { base: tol(1e-6, 1e-6), k: maha_k }, MinBytes),
    row!("attention_legacy", "attention_legacy", ["qkv"], Reduction { base: ATTENTION, k: attention_k }, Flops(|c| 2.0 * attention_macs(c))),
    // the backward's four products (∂V, ∂P, ∂Q, ∂K) are twice the forward's two
    row!("attention_legacy_x_backward", "attention_legacy", ["gy", "qkv"], Reduction { base: ATTENTION, k: attention_k }, Flops(|c| 4.0 * attention_macs(c))),
    // upstream computes it in f32 with arguments up to ~1000 rad: one f32 ulp of the argument
    // (6e-5 at 1000) moves cos/sin by as much, and libm vs. SLEEF differ by an ulp or two
    row!("timestep_embedding", "timestep_embedding", ["t"], Fixed(tol(2e-4, 0.0)), MinBytes),
    row!("embedding", "embedding", ["table"], Fixed(EXACT), MinBytes),
    row!("embedding_w_backward", "embedding_w_backward", ["gy"], Fixed(tol(3e-7, 2e-7)), MinBytes),
    row!("mean_std", "mean_std", ["x"], Fixed(tol(2e-7, 2e-7)), MinBytes),
    row!("adamw_step", "adamw_step", ["param0", "grad1"], Adamw, MinBytes),
    row!("axpby", "axpby", ["ema0", "param"], Fixed(tol(1e-7, 1e-6)), MinBytes),
    // the diffusion step math, against upstream GaussianDiffusion's own tensors
    row!("q_sample", "diffusion_step", ["x0", "noise"], Fixed(STEP), MinBytes),
    row!("p_mean_variance", "diffusion_step", ["xt", "model_out"], Fixed(STEP), MinBytes),
    row!("kl_bits", "diffusion_step", ["x0", "xt", "p_mean", "p_logvar"], Fixed(STEP), MinBytes),
    row!("p_sample", "diffusion_step", ["p_mean", "p_logvar", "z"], Fixed(STEP), MinBytes),
    row!("ddim_step", "diffusion_step", ["xt", "pred_xstart", "z"], Fixed(STEP), MinBytes),
];

/// Backend methods that are not ops: transfers, views and what the backend says of itself (its
/// precision's rows are the GEMM rows above, checked per precision by optable::precision; the
/// driver-call counter; graph_forward, a way of running a function of ops: tests/cuda_graph.rs;
/// from_host_f16, an upload of f16 weights: tests/cpu_f16_weights.rs; on_workers, where a
/// function of ops runs: tests/effnet_fused.rs).
pub const NOT_OPS: &[&str] = &["name", "precision", "from_host", "from_host_vec", "from_host_f16", "to_host", "zeros", "reshape", "driver_counts", "graph_forward", "on_workers"];

pub fn entry(method: &str) -> Option<&'static Entry> {
    TABLE.iter().find(|e| e.method == method)
}

/// The rows a case runs: those of its op (`_x_backward` rows only when it lists gradients).
pub fn entries_for(c: &OpCase) -> impl Iterator<Item = &'static Entry> + '_ {
    let grads = !c.grads().is_empty();
    TABLE.iter().filter(move |e| e.case_op == c.op() && (!e.is_input_gradient() || grads))
}
