//! Op-table cases at the models' production sizes (the paper's 553M UNet at 256², EfficientNet-B4,
//! PaDiM on WideResNet-50 layer1–3), with seeded random inputs: what the kernel benchmarks time.
//! Every row of the table has at least one (tests/ops_vs_torch.rs checks).

use super::case::OpCase;
use serde_json::{json, Value};

/// Seeded uniform values in [−0.5, 0.5) (an LCG: cheap, and the same on every machine).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

struct Build {
    case: OpCase,
    seed: u64,
}

impl Build {
    fn new(name: &str, params: Value) -> Self {
        Build { case: OpCase::new(name, params), seed: 1 }
    }
    /// a random tensor scaled by `scale`, shifted by `shift`
    fn t(mut self, k: &str, dims: &[usize], scale: f32, shift: f32) -> Self {
        self.seed += 1;
        let v = uniform(dims.iter().product(), self.seed).into_iter().map(|u| u * scale + shift).collect();
        self.case = self.case.with(k, dims, v);
        self
    }
    fn r(self, k: &str, dims: &[usize]) -> Self {
        self.t(k, dims, 1.0, 0.0)
    }
}

fn conv(name: &str, c_in: usize, c_out: usize, hw: usize, k: usize, stride: usize) -> OpCase {
    conv_batch(name, 1, c_in, c_out, hw, k, stride)
}

fn conv_batch(name: &str, n: usize, c_in: usize, c_out: usize, hw: usize, k: usize, stride: usize) -> OpCase {
    let p = k / 2;
    let ho = (hw + 2 * p - k) / stride + 1;
    let b = Build::new(name, json!({"op": "conv2d", "stride": stride, "pad": [p, p, p, p], "groups": 1, "grads": ["x"]}));
    b.r("x", &[n, c_in, hw, hw]).t("w", &[c_out, c_in, k, k], 0.1, 0.0).r("b", &[c_out]).r("gy", &[n, c_out, ho, ho]).case
}

fn renamed(mut c: OpCase, op: &str) -> OpCase {
    c.params["op"] = Value::from(op);
    c.name = format!("{} ({op})", c.name);
    c
}

/// The benchmark cases, one or more per row of the table.
pub fn production_cases() -> Vec<OpCase> {
    let mut v = Vec::new();
    // the UNet's 3×3 convolutions at 64² (256 ch) and 256² (128 ch); a down-sampling one
    let c64 = conv("conv3x3 256->256 @64x64", 256, 256, 64, 3, 1);
    v.push(renamed(c64.clone(), "conv2d_w_backward"));
    // the demo's training step (32 channels at 64², batch 2): few output channels, a long kk
    v.push(renamed(conv_batch("conv3x3 32->32 @64x64 batch 2", 2, 32, 32, 64, 3, 1), "conv2d_w_backward"));
    v.push(renamed(conv_batch("conv3x3 64->64 @32x32 batch 2", 2, 64, 64, 32, 3, 1), "conv2d_w_backward"));
    v.push(c64);
    v.push(conv("conv3x3 128->128 @256x256", 128, 128, 256, 3, 1));
    // the ResBlock's out_conv with the skip added in its epilogue
    let res = Build { case: renamed(conv("conv3x3+res 256->256 @64x64", 256, 256, 64, 3, 1), "conv2d_add"), seed: 50 };
    v.push(res.r("res", &[1, 256, 64, 64]).case);
    v.push(conv("conv3x3 s2 256->256 @64x64", 256, 256, 64, 3, 2));
    // EfficientNet-B4's expansion at 64² (32 → 192) with SiLU in the output pass
    let mut act = renamed(conv("conv1x1+silu 32->192 @64x64", 32, 192, 64, 1, 1), "conv2d_act");
    act.params["act"] = Value::from("silu");
    act.params["mean"] = Value::from(false);
    v.push(act);

    // the attention's qkv projection as a linear over 1024 tokens
    let lin = Build::new("linear 1024 tokens 512->1536", json!({"op": "linear", "grads": ["x"]})).r("x", &[1024, 512]).t("w", &[1536, 512], 0.05, 0.0).r("b", &[1536]).r("gy", &[1024, 1536]).case;
    // the paper UNet's ResBlock timestep projections (1024 → 2C) stacked: six of its 42 blocks
    let widths = [512, 512, 512, 512, 1024, 1024];
    let total: usize = widths.iter().sum();
    let packed = Build::new("linear_parts emb 1024 -> 4x512 + 2x1024", json!({"op": "linear_parts", "parts": widths})).r("x", &[1, 1024]).t("w", &[total, 1024], 0.03, 0.0).r("b", &[total]).case;
    v.push(packed);
    v.push(renamed(lin.clone(), "linear_w_backward"));
    v.push(lin);
    // group norm with the ResBlock's scale-shift and SiLU
    let gn = Build::new("group_norm32+ss+silu 256ch @64x64", json!({"op": "group_norm", "groups": 32, "eps": 1e-5, "silu": true, "grads": ["x"]}))
        .r("x", &[1, 256, 64, 64])
        .t("gamma", &[256], 0.1, 1.0)
        .t("beta", &[256], 0.1, 0.0)
        .r("scale", &[1, 256, 1, 1])
        .r("shift", &[1, 256, 1, 1])
        .r("gy", &[1, 256, 64, 64])
        .case;
    let gn_emb = Build { case: OpCase::new("group_norm32+emb+silu 256ch @64x64", json!({"op": "group_norm_emb", "groups": 32, "eps": 1e-5, "silu": true, "offset": 512})), seed: 60 }
        .r("x", &[1, 256, 64, 64])
        .t("gamma", &[256], 0.1, 1.0)
        .t("beta", &[256], 0.1, 0.0)
        .r("emb", &[1, 2048])
        .case;
    v.push(gn_emb);
    // the ResBlock's out_layers: group norm with scale-shift from the packed projection and SiLU,
    // folded into the 3×3 out_conv with the skip added
    let gn_conv = Build {
        case: OpCase::new(
            "group_norm32+emb+silu -> conv3x3+res 256->256 @64x64",
            json!({"op": "group_norm_conv2d", "gn_groups": 32, "eps": 1e-5, "silu": true, "offset": 512, "stride": 1, "pad": [1, 1, 1, 1], "groups": 1}),
        ),
        seed: 70,
    }
    .r("x", &[1, 256, 64, 64])
    .t("gamma", &[256], 0.1, 1.0)
    .t("beta", &[256], 0.1, 0.0)
    .r("emb", &[1, 2048])
    .t("w", &[256, 256, 3, 3], 0.1, 0.0)
    .r("b", &[256])
    .r("res", &[1, 256, 64, 64])
    .case;
    v.push(gn_conv);
    // the ResBlock's in_conv making out_norm's records in its epilogue (z: the next norm's conv,
    // 8 outputs, from them)
    v.push(
        Build {
            case: OpCase::new(
                "conv3x3 256->256 @64x64 + records for group_norm32+emb -> conv3x3 256->8",
                json!({"op": "conv2d_gn", "gn_groups": 32, "eps": 1e-5, "silu": true, "offset": 512, "stride": 1, "pad": [1, 1, 1, 1], "groups": 1}),
            ),
            seed: 71,
        }
        .r("x", &[1, 256, 64, 64])
        .t("w", &[256, 256, 3, 3], 0.1, 0.0)
        .r("b", &[256])
        .t("gamma", &[256], 0.1, 1.0)
        .t("beta", &[256], 0.1, 0.0)
        .r("emb", &[1, 2048])
        .t("w2", &[8, 256, 3, 3], 0.1, 0.0)
        .r("b2", &[8])
        .case,
    );
    // the decoder's cat([h, skip]) making in_norm's records
    v.push(
        Build { case: OpCase::new("concat 256+256 @64x64 + records for group_norm32 -> conv3x3 512->8", json!({"op": "concat_channels_gn", "gn_groups": 32, "eps": 1e-5, "silu": true})), seed: 72 }
            .r("a", &[1, 256, 64, 64])
            .r("b", &[1, 256, 64, 64])
            .t("gamma", &[512], 0.1, 1.0)
            .t("beta", &[512], 0.1, 0.0)
            .t("w2", &[8, 512, 3, 3], 0.1, 0.0)
            .r("b2", &[8])
            .case,
    );
    // the down ResBlock's in_norm → 2×2 pool from the concat's records
    v.push(
        Build {
            case: OpCase::new("group_norm32+silu -> avg_pool2x2 256ch @64x64 (records from a concat)", json!({"op": "group_norm_resample", "gn_groups": 32, "eps": 1e-5, "silu": true, "up": false})),
            seed: 73,
        }
        .r("a", &[1, 128, 64, 64])
        .r("b", &[1, 128, 64, 64])
        .t("gamma", &[256], 0.1, 1.0)
        .t("beta", &[256], 0.1, 0.0)
        .case,
    );
    v.push(renamed(gn.clone(), "group_norm_w_backward"));
    v.push(gn);
    v.push(
        Build::new("batch_norm 448ch @32x32 (EfficientNet-B4)", json!({"op": "batch_norm", "eps": 1e-3, "grads": ["x"]}))
            .r("x", &[1, 448, 32, 32])
            .t("weight", &[448], 0.1, 1.0)
            .r("bias", &[448])
            .r("mean", &[448])
            .t("var", &[448], 0.1, 1.0)
            .r("gy", &[1, 448, 32, 32])
            .case,
    );
    v.push(Build::new("silu 256ch @64x64", json!({"op": "activation", "act": "silu", "grads": ["x"]})).t("x", &[1, 256, 64, 64], 6.0, 0.0).r("gy", &[1, 256, 64, 64]).case);
    // the residual add, and the timestep embedding broadcast over a ResBlock's pixels
    v.push(Build::new("add residual 256ch @64x64", json!({"op": "add", "grads": ["a", "b"]})).r("a", &[1, 256, 64, 64]).r("b", &[1, 256, 64, 64]).r("gy", &[1, 256, 64, 64]).case);
    v.push(Build::new("mul bcast nc11 256ch @64x64", json!({"op": "mul", "grads": ["a", "b"]})).r("a", &[1, 256, 64, 64]).r("b", &[1, 256, 1, 1]).r("gy", &[1, 256, 64, 64]).case);
    v.push(Build::new("scale_add_scalar 256x256 map", json!({"op": "scale_add_scalar", "alpha": 0.37, "beta": -1.25})).r("x", &[1, 1, 256, 256]).case);
    v.push(Build::new("avg_pool2x2 256ch @64x64", json!({"op": "avg_pool2d", "kernel": 2, "stride": 2, "padding": 0, "grads": ["x"]})).r("x", &[1, 256, 64, 64]).r("gy", &[1, 256, 32, 32]).case);
    v.push(
        Build::new("max_pool3x3 s2 64ch @128x128 (ResNet stem)", json!({"op": "max_pool2d", "kernel": 3, "stride": 2, "padding": 1, "grads": ["x"]}))
            .r("x", &[1, 64, 128, 128])
            .r("gy", &[1, 64, 64, 64])
            .case,
    );
    v.push(Build::new("global_avg_pool 1632ch @8x8 (squeeze-excite)", json!({"op": "global_avg_pool"})).r("x", &[1, 1632, 8, 8]).case);
    v.push(Build::new("upsample_nearest2x 256ch @32x32", json!({"op": "upsample_nearest2x", "grads": ["x"]})).r("x", &[1, 256, 32, 32]).r("gy", &[1, 256, 64, 64]).case);
    v.push(
        Build::new("resize_bilinear 160ch 16x16->64x64 (feature taps)", json!({"op": "resize_bilinear", "size": [64, 64], "grads": ["x"]})).r("x", &[1, 160, 16, 16]).r("gy", &[1, 160, 64, 64]).case,
    );
    v.push(Build::new("concat skip 256+256ch @64x64", json!({"op": "concat_channels", "grads": ["a", "b"]})).r("a", &[1, 256, 64, 64]).r("b", &[1, 256, 64, 64]).r("gy", &[1, 512, 64, 64]).case);
    v.push(Build::new("slice 3 of 6 channels @256x256 (ε of the model output)", json!({"op": "slice_channels", "start": 0, "end": 3})).r("x", &[1, 6, 256, 256]).case);
    let ids: Vec<usize> = (0..500).map(|i| i * 2).collect();
    v.push(Build::new("gather_channels 1024->500 @64x64 (PaDiM)", json!({"op": "gather_channels", "ids": ids, "grads": ["x"]})).r("x", &[1, 1024, 64, 64]).r("gy", &[1, 500, 64, 64]).case);
    // PaDiM at the paper's size: 500 dims at 64×64 positions, the inverse factors packed
    let (d, p) = (500usize, 64 * 64);
    v.push(
        Build::new("mahalanobis 500 dims @64x64 (PaDiM)", json!({"op": "mahalanobis", "grads": ["f"]}))
            .r("f", &[1, d, 64, 64])
            .r("mean", &[p, d])
            .t("linv", &[p, d * (d + 1) / 2], 0.1, 0.0)
            .r("gy", &[1, 1, 64, 64])
            .case,
    );
    v.push(Build::new("attention 4 heads x 64, 1024 tokens", json!({"op": "attention_legacy", "heads": 4, "grads": ["qkv"]})).r("qkv", &[1, 768, 1024]).r("gy", &[1, 256, 1024]).case);
    v.push(Build::new("timestep_embedding 8 x 256", json!({"op": "timestep_embedding", "dim": 256, "max_period": 10000})).t("t", &[8], 1000.0, 500.0).case);
    let rows: Vec<usize> = (0..8).map(|i| i % 15).collect();
    v.push(Build::new("embedding 15 classes x 1024", json!({"op": "embedding", "ids": rows})).r("table", &[15, 1024]).case);
    v.push(Build::new("embedding_w_backward 15 classes x 1024", json!({"op": "embedding_w_backward", "ids": rows})).r("table", &[15, 1024]).r("gy", &[8, 1024]).case);
    v.push(Build::new("mean_std 256x256 map", json!({"op": "mean_std"})).r("x", &[1, 1, 256, 256]).case);
    // one AdamW step and one EMA update on a 256→256 3×3 conv's weights
    let n = 256 * 256 * 9;
    v.push(
        Build::new("adamw_step 590k params", json!({"op": "adamw_step", "lr": 1e-4, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "steps": 1}))
            .r("param0", &[n])
            .t("grad1", &[n], 1e-3, 0.0)
            .case,
    );
    v.push(Build::new("axpby (EMA) 590k params", json!({"op": "axpby", "rate": 0.997})).r("ema0", &[n]).r("param", &[n]).case);
    // one reverse step of the 250-step respaced schedule at 256²
    let step = json!({"op": "diffusion_step", "k": 50, "var_type": "learned_range", "clip": true, "eta": 0.0,
        "schedule_params": {"noise_schedule": "linear", "steps": 1000, "timestep_respacing": "250"}});
    let s = [1, 3, 256, 256];
    v.push(
        Build::new("diffusion step 3x256x256", step)
            .r("x0", &s)
            .r("noise", &s)
            .r("xt", &s)
            .r("model_out", &[1, 6, 256, 256])
            .r("p_mean", &s)
            .t("p_logvar", &s, 0.5, -4.0)
            .r("pred_xstart", &s)
            .r("z", &s)
            .case,
    );
    // random inputs, no reference outputs: a tensor named like an output (the diffusion step's
    // xt, p_mean, ... feed its later rows) is not an expected value
    for c in &mut v {
        c.params["synthetic"] = Value::Bool(true);
    }
    v
}
