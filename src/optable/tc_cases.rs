//! Op-table cases for the tensor-core rows at tf32, bf16 and f16 (tests/backends_agree.rs): seeded
//! inputs whose GEMMs reach what the engine's launch plan (`tensor_core::tc_plan`) can do — a
//! second block tile in M or N, split-K, and a depth K that is not a multiple of the 32-deep step —
//! with channels and features multiples of 8, so that all three precisions take the tensor cores.
//! The torch fixtures reach few of these (their linears have 10, 33 and 130 input features: no
//! linear reaches the tensor cores there at all). These cases carry no reference outputs: their
//! reference is the CPU backend on operands rounded the same way (backend/rounded_cpu.rs).

use super::case::OpCase;
use super::sizes::uniform;
use serde_json::{json, Value};

struct Make {
    case: OpCase,
    seed: u64,
}

impl Make {
    fn new(name: &str, params: Value, seed: u64) -> Self {
        Make { case: OpCase::new(name, params), seed }
    }
    /// uniform in [−scale/2, scale/2)
    fn t(mut self, k: &str, dims: &[usize], scale: f32) -> Self {
        self.seed += 1;
        let v = uniform(dims.iter().product(), self.seed).into_iter().map(|u| u * scale).collect();
        self.case = self.case.with(k, dims, v);
        self
    }
}

#[derive(Clone, Copy)]
struct Conv {
    name: &'static str,
    n: usize,
    c: usize,
    hw: usize,
    o: usize,
    stride: usize,
    /// left, right, top, bottom
    pad: [usize; 4],
}

impl Conv {
    fn out(&self) -> (usize, usize) {
        let [l, r, t, b] = self.pad;
        ((self.hw + t + b - 3) / self.stride + 1, (self.hw + l + r - 3) / self.stride + 1)
    }
}

/// 3×3 convolutions. Forward GEMM M = o, N = n·ho·wo, K = 9c; input gradient M = c, N = n·h·w,
/// K = 9o (plans with 128/64 tiles, split while < 264 blocks, ≥ 4 K steps a split):
const CONVS: [Conv; 3] = [
    // forward 136×162×144: 2×2 large tiles, 4.5 K steps; ∂x 16×162×1224: 3 small tiles in N, 8 splits, K tail 8
    Conv { name: "tc 3x3 two tiles 16->136 @9x9 n2", n: 2, c: 16, hw: 9, o: 136, stride: 1, pad: [1, 1, 1, 1] },
    // forward 24×36×360: one small tile, 3 splits of 4 K steps, K tail 8; ∂x 40×36×216, one split
    Conv { name: "tc 3x3 split-K 40->24 @6x6", n: 1, c: 40, hw: 6, o: 24, stride: 1, pad: [1, 1, 1, 1] },
    // stride 2, top ≠ left: forward 32×25×216; ∂x 24×121×288: 2 tiles in N, 2 splits (taps that reach no output)
    Conv { name: "tc 3x3 s2 asym 24->32 @11x11", n: 1, c: 24, hw: 11, o: 32, stride: 2, pad: [1, 0, 0, 1] },
];

/// 3×3 weight gradients: GEMM M = o, N = 9c, K = n·ho·wo padded to a multiple of 8.
const WGRADS: [Conv; 3] = [
    // 136×144×168 (K = 162 + 6 zeros): 2×2 large tiles, 5.25 K steps (a K tail of 8), one split
    Conv { name: "tc wgrad 3x3 two tiles 16->136 @9x9 n2", n: 2, c: 16, hw: 9, o: 136, stride: 1, pad: [1, 1, 1, 1] },
    // 40×216×288: 4 small tiles in N, 9 K steps in 2 splits
    Conv { name: "tc wgrad 3x3 split-K 24->40 @12x12 n2", n: 2, c: 24, hw: 12, o: 40, stride: 1, pad: [1, 1, 1, 1] },
    // stride 2, top ≠ left, c = 3 (no other tensor-core path takes it): K = 25 output pixels + 7
    // zeros, so a pad column read from past the image, or not zeroed, shows
    Conv { name: "tc wgrad 3x3 s2 asym 3->8 @11x11", n: 1, c: 3, hw: 11, o: 8, stride: 2, pad: [1, 0, 0, 1] },
];

#[derive(Clone, Copy)]
struct Linear {
    name: &'static str,
    rows: usize,
    fin: usize,
    fout: usize,
    parts: [usize; 3],
}

/// Forward GEMM M = rows, N = fout, K = fin; input gradient M = rows, N = fin, K = fout.
const LINEARS: [Linear; 2] = [
    // forward 136×136×72: 2×2 large tiles, K tail 8; ∂x 136×72×136: 2 large tiles in M, K tail 8
    Linear { name: "tc linear two tiles 136 rows 72->136", rows: 136, fin: 72, fout: 136, parts: [1, 46, 89] },
    // forward 24×296×264 and ∂x 24×264×296: 5 small tiles in N, 2 splits of 5 K steps, K tails 8
    Linear { name: "tc linear split-K 24 rows 264->296", rows: 24, fin: 264, fout: 296, parts: [1, 99, 196] },
];

/// The cases: per conv shape conv2d (with ∂x), conv2d_add and conv2d_act (SiLU with the planes'
/// means on the first, sigmoid on the second); per weight-gradient shape conv2d_w_backward (with
/// the bias gradient); per linear shape linear (with ∂x) and linear_parts.
pub fn tensor_core_cases() -> Vec<OpCase> {
    let mut v = Vec::new();
    for (i, s) in CONVS.iter().enumerate() {
        let (ho, wo) = s.out();
        let p = |op: &str| json!({"op": op, "stride": s.stride, "pad": s.pad, "groups": 1});
        let x = [s.n, s.c, s.hw, s.hw];
        let w = [s.o, s.c, 3, 3];
        let y = [s.n, s.o, ho, wo];
        let seed = 7000 + 100 * i as u64;
        let mut conv = p("conv2d");
        conv["grads"] = json!(["x"]);
        v.push(Make::new(s.name, conv, seed).t("x", &x, 2.0).t("w", &w, 1.0).t("b", &[s.o], 1.0).t("gy", &y, 2.0).case);
        if i < 2 {
            v.push(Make::new(&format!("{} +res", s.name), p("conv2d_add"), seed + 10).t("x", &x, 2.0).t("w", &w, 1.0).t("b", &[s.o], 1.0).t("res", &y, 4.0).case);
            let mut act = p("conv2d_act");
            act["act"] = Value::from(if i == 0 { "silu" } else { "sigmoid" });
            act["mean"] = Value::from(i == 0);
            v.push(Make::new(&format!("{} +act", s.name), act, seed + 20).t("x", &x, 2.0).t("w", &w, 1.0).t("b", &[s.o], 1.0).case);
        }
    }
    for (i, s) in WGRADS.iter().enumerate() {
        let (ho, wo) = s.out();
        let params = json!({"op": "conv2d_w_backward", "stride": s.stride, "pad": s.pad, "groups": 1});
        let seed = 7500 + 100 * i as u64;
        v.push(Make::new(s.name, params, seed).t("x", &[s.n, s.c, s.hw, s.hw], 2.0).t("w", &[s.o, s.c, 3, 3], 1.0).t("b", &[s.o], 1.0).t("gy", &[s.n, s.o, ho, wo], 2.0).case);
    }
    for (i, l) in LINEARS.iter().enumerate() {
        let seed = 8000 + 100 * i as u64;
        let lin = json!({"op": "linear", "grads": ["x"]});
        v.push(Make::new(l.name, lin, seed).t("x", &[l.rows, l.fin], 2.0).t("w", &[l.fout, l.fin], 1.0).t("b", &[l.fout], 1.0).t("gy", &[l.rows, l.fout], 2.0).case);
        let parts = json!({"op": "linear_parts", "parts": l.parts});
        v.push(Make::new(&format!("{} in parts", l.name), parts, seed + 10).t("x", &[l.rows, l.fin], 2.0).t("w", &[l.fout, l.fin], 1.0).t("b", &[l.fout], 1.0).case);
    }
    v
}
