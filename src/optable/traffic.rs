//! Traffic per kernel at the 553M UNet's shapes (issue #20 item 6), measured by the emulator's
//! traffic accounting (`emu::set_traffic`): the global bytes every launch of an op reads and
//! writes, exact per block, the grid sampled; against the op table's minimum (every input read
//! once, every output written once), with FLOPs, arithmetic intensity and the roofline lower bound
//! on an H200. `ran kernels --traffic` prints it; tests/traffic_bound.rs bounds it.
//!
//! Bytes are what the kernels request (every load and store, no cache): the traffic of a device
//! without L1/L2 reuse, an upper bound on HBM bytes. A GEMM's operand re-reads are therefore
//! visible as such (where an L2 would absorb some on a GPU).

use super::case::OpCase;
use super::run::{run_method, Inputs};
use super::sizes::uniform;
use super::table::{entry, Cost};
use crate::backend::cuda::emu::{self, LaunchTraffic};
use crate::backend::cuda::EmulatedCuda;
use crate::ops::precision::Precision;
use crate::{Error, Result};
use serde_json::{json, Value};

/// H200 (SXM) ceilings of the roofline: HBM3e bandwidth and dense peaks.
pub const H200_BYTES_PER_S: f64 = 4.8e12;
pub const H200_FP32_FLOPS: f64 = 67e12;
pub const H200_BF16_FLOPS: f64 = 989e12;
/// dense TF32 (half the bf16 rate)
pub const H200_TF32_FLOPS: f64 = 494.5e12;

/// One op of the traffic table: a case, the Backend method run on it, the operand precision.
pub struct TrafficCase {
    pub case: OpCase,
    pub method: &'static str,
    pub precision: Precision,
}

/// One op measured: its launches (exact counts of the sampled blocks) and the table's floor.
pub struct OpTraffic {
    pub case: String,
    pub method: &'static str,
    pub precision: Precision,
    pub launches: Vec<LaunchTraffic>,
    /// every listed input read once, every output written once (op table)
    pub min_bytes: f64,
    /// the table's FLOPs for the GEMM-like rows
    pub table_flops: Option<f64>,
    /// memory-bound row of the op table (`Cost::MinBytes`)
    pub memory_bound: bool,
}

impl OpTraffic {
    /// Bytes read and written by all launches, the grids' estimate (sampled counts scaled).
    pub fn bytes(&self) -> f64 {
        self.launches.iter().map(|l| (l.read() + l.written()) as f64 * l.scale()).sum()
    }
    pub fn fma_flops(&self) -> f64 {
        self.launches.iter().map(|l| l.fma_flops as f64 * l.scale()).sum()
    }
    pub fn mma_flops(&self) -> f64 {
        self.launches.iter().map(|l| l.mma_flops as f64 * l.scale()).sum()
    }
    pub fn flops(&self) -> f64 {
        self.fma_flops() + self.mma_flops()
    }
    pub fn ratio(&self) -> f64 {
        self.bytes() / self.min_bytes
    }
    /// Lower bound on an H200: the larger of the memory time and the compute time (fmaf at the
    /// FP32 peak, mma at the precision's tensor peak).
    pub fn roofline_s(&self) -> f64 {
        let tensor = match self.precision {
            Precision::Tf32 => H200_TF32_FLOPS,
            _ => H200_BF16_FLOPS,
        };
        (self.bytes() / H200_BYTES_PER_S).max(self.fma_flops() / H200_FP32_FLOPS + self.mma_flops() / tensor)
    }

    pub fn to_json(&self) -> Value {
        let launches: Vec<Value> = self
            .launches
            .iter()
            .map(|l| {
                json!({"kernel": l.kernel, "grid": [l.grid.0, l.grid.1, l.grid.2], "block": [l.block.0, l.block.1, l.block.2],
                    "blocks": l.nblocks, "sampled": l.sampled, "read": l.read() as f64 * l.scale(), "written": l.written() as f64 * l.scale(),
                    "fma_flops": l.fma_flops as f64 * l.scale(), "mma_flops": l.mma_flops as f64 * l.scale()})
            })
            .collect();
        json!({"case": self.case, "method": self.method, "precision": self.precision.to_string(), "bytes": self.bytes(),
            "min_bytes": self.min_bytes, "ratio": self.ratio(), "flops": self.flops(), "table_flops": self.table_flops,
            "intensity": self.flops() / self.bytes(), "roofline_us": self.roofline_s() * 1e6, "memory_bound": self.memory_bound,
            "launches": launches})
    }
}

/// Runs `tc.method` on the emulator with the traffic accounting on (at most `max_blocks` sampled
/// blocks per launch) and collects its launches. The outputs are not meaningful (sampled grids).
pub fn measure(tc: &TrafficCase, max_blocks: u32) -> Result<OpTraffic> {
    // the accounting and its log are process-wide: one measurement at a time (tests run in threads)
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !emu::instrumented() {
        return Err(Error::InvalidArgument("traffic accounting needs the instrumented emulator kernels, which this build lacks (a sanitizer build)".into()));
    }
    let row = entry(tc.method).ok_or_else(|| Error::InvalidArgument(format!("traffic: `{}` is not a row of the op table", tc.method)))?;
    let b = EmulatedCuda::emulated().with_precision(tc.precision);
    let inputs = Inputs::load(&b, &tc.case)?;
    emu::take_traffic(); // nothing of another call
    emu::set_traffic(true, max_blocks);
    let outs = run_method(&b, tc.method, &tc.case, &inputs);
    emu::set_traffic(false, 0);
    let launches = emu::take_traffic();
    let outs = outs?;
    let out_elems: usize = outs.iter().map(|(_, t)| t.numel()).sum();
    Ok(OpTraffic {
        case: tc.case.name.clone(),
        method: tc.method,
        precision: tc.precision,
        launches,
        min_bytes: row.min_bytes(&tc.case, out_elems),
        table_flops: row.flops(&tc.case),
        memory_bound: matches!(row.cost, Cost::MinBytes),
    })
}

fn t(c: OpCase, k: &str, dims: &[usize], seed: u64) -> OpCase {
    c.with(k, dims, uniform(dims.iter().product(), seed))
}

fn conv(c_in: usize, c_out: usize, hw: usize) -> OpCase {
    let c = OpCase::new(format!("conv3x3 {c_in}->{c_out} @{hw}x{hw}"), json!({"op": "conv2d", "stride": 1, "pad": [1, 1, 1, 1], "groups": 1, "grads": ["x"]}));
    let c = t(c, "x", &[1, c_in, hw, hw], 1);
    let c = t(c, "w", &[c_out, c_in, 3, 3], 2);
    let c = t(c, "b", &[c_out], 3);
    t(c, "gy", &[1, c_out, hw, hw], 4)
}

fn group_norm(ch: usize, hw: usize) -> OpCase {
    let c = OpCase::new(format!("group_norm32+ss+silu {ch}ch @{hw}x{hw}"), json!({"op": "group_norm", "groups": 32, "eps": 1e-5, "silu": true, "grads": ["x"]}));
    let c = t(c, "x", &[1, ch, hw, hw], 5);
    let c = t(c, "gamma", &[ch], 6);
    let c = t(c, "beta", &[ch], 7);
    let c = t(c, "scale", &[1, ch, 1, 1], 8);
    let c = t(c, "shift", &[1, ch, 1, 1], 9);
    t(c, "gy", &[1, ch, hw, hw], 10)
}

fn two(name: &str, params: Value, a: &[usize], b: &[usize], gy: &[usize]) -> OpCase {
    let c = t(OpCase::new(name, params), "a", a, 11);
    let c = t(c, "b", b, 12);
    t(c, "gy", gy, 13)
}

/// The ops of the 553M UNet (guided-diffusion, 256 base channels, mult 1,1,2,2,4,4, 256² input,
/// batch 1, attention 4 heads × 64 at 32²) and of its sampler step, one shape or two per kernel
/// family; built lazily, one case at a time (the largest tensors are 64 MiB).
pub fn unet_cases() -> Vec<(&'static str, fn() -> Vec<TrafficCase>)> {
    use Precision::{Bf16, F32};
    fn tc(case: OpCase, methods: &[(&'static str, Precision)]) -> Vec<TrafficCase> {
        methods.iter().map(|&(method, precision)| TrafficCase { case: case.clone(), method, precision }).collect()
    }
    vec![
        ("conv3x3 256->256 @256x256", || tc(conv(256, 256, 256), &[("conv2d", F32), ("conv2d", Bf16), ("conv2d_x_backward", Bf16)])),
        ("conv3x3 512->512 @32x32", || tc(conv(512, 512, 32), &[("conv2d", F32), ("conv2d", Bf16)])),
        ("conv3x3 1024->1024 @8x8", || tc(conv(1024, 1024, 8), &[("conv2d", F32), ("conv2d", Bf16)])),
        ("linear 1024 tokens 512->1536", || {
            let c = t(OpCase::new("linear 1024 tokens 512->1536", json!({"op": "linear", "grads": ["x"]})), "x", &[1024, 512], 14);
            let c = t(t(t(c, "w", &[1536, 512], 15), "b", &[1536], 16), "gy", &[1024, 1536], 17);
            tc(c, &[("linear", F32), ("linear", Bf16)])
        }),
        ("group norm 256ch @256x256", || tc(group_norm(256, 256), &[("group_norm", F32), ("group_norm_x_backward", F32), ("group_norm_w_backward", F32)])),
        ("group norm 1024ch @8x8", || tc(group_norm(1024, 8), &[("group_norm", F32)])),
        ("silu 256ch @256x256", || {
            let c = t(OpCase::new("silu 256ch @256x256", json!({"op": "activation", "act": "silu", "grads": ["x"]})), "x", &[1, 256, 256, 256], 18);
            tc(t(c, "gy", &[1, 256, 256, 256], 19), &[("activation", F32), ("activation_x_backward", F32)])
        }),
        ("add residual 256ch @256x256", || {
            let s = [1, 256, 256, 256];
            tc(two("add residual 256ch @256x256", json!({"op": "add", "grads": ["a", "b"]}), &s, &s, &s), &[("add", F32)])
        }),
        ("add embedding nc11 256ch @256x256", || {
            let s = [1, 256, 256, 256];
            tc(two("add embedding nc11 256ch @256x256", json!({"op": "add", "grads": ["a", "b"]}), &s, &[1, 256, 1, 1], &s), &[("add", F32)])
        }),
        ("upsample_nearest2x 256ch @128x128", || {
            let c = t(OpCase::new("upsample_nearest2x 256ch @128x128", json!({"op": "upsample_nearest2x", "grads": ["x"]})), "x", &[1, 256, 128, 128], 20);
            tc(t(c, "gy", &[1, 256, 256, 256], 21), &[("upsample_nearest2x", F32), ("upsample_nearest2x_x_backward", F32)])
        }),
        ("avg_pool2x2 256ch @256x256", || {
            let c = t(OpCase::new("avg_pool2x2 256ch @256x256", json!({"op": "avg_pool2d", "kernel": 2, "stride": 2, "padding": 0, "grads": ["x"]})), "x", &[1, 256, 256, 256], 22);
            tc(t(c, "gy", &[1, 256, 128, 128], 23), &[("avg_pool2d", F32)])
        }),
        ("concat skip 256+256ch @256x256", || {
            let s = [1, 256, 256, 256];
            tc(
                two("concat skip 256+256ch @256x256", json!({"op": "concat_channels", "grads": ["a", "b"]}), &s, &s, &[1, 512, 256, 256]),
                &[("concat_channels", F32), ("concat_channels_x_backward", F32)],
            )
        }),
        ("attention 4 heads x 64, 1024 tokens", || {
            let c = t(OpCase::new("attention 4 heads x 64, 1024 tokens", json!({"op": "attention_legacy", "heads": 4, "grads": ["qkv"]})), "qkv", &[1, 768, 1024], 24);
            tc(t(c, "gy", &[1, 256, 1024], 25), &[("attention_legacy", F32)])
        }),
        ("diffusion step 3x256x256", || {
            let step = json!({"op": "diffusion_step", "k": 50, "var_type": "learned_range", "clip": true, "eta": 0.0,
                "schedule_params": {"noise_schedule": "linear", "steps": 1000, "timestep_respacing": "250"}});
            let s = [1, 3, 256, 256];
            let mut c = OpCase::new("diffusion step 3x256x256", step);
            for (i, k) in ["x0", "noise", "xt", "p_mean", "pred_xstart", "z"].iter().enumerate() {
                c = t(c, k, &s, 30 + i as u64);
            }
            let c = t(c, "model_out", &[1, 6, 256, 256], 40);
            let lv = uniform(s.iter().product(), 41).into_iter().map(|u| u * 0.5 - 4.0).collect();
            let c = c.with("p_logvar", &s, lv);
            tc(c, &[("q_sample", F32), ("p_mean_variance", F32), ("kl_bits", F32), ("p_sample", F32), ("ddim_step", F32)])
        }),
    ]
}

/// One line of the human table.
pub fn format_row(o: &OpTraffic) -> String {
    format!(
        "{:<40} {:<30} {:>5} {:>10.2} {:>10.2} {:>6.2}x {:>11.3} {:>9.1} {:>10.2}",
        o.case,
        o.method,
        o.precision.to_string(),
        o.bytes() / 1e6,
        o.min_bytes / 1e6,
        o.ratio(),
        o.flops() / 1e9,
        o.flops() / o.bytes(),
        o.roofline_s() * 1e6
    )
}

pub fn header() -> String {
    format!("{:<40} {:<30} {:>5} {:>10} {:>10} {:>7} {:>11} {:>9} {:>10}", "case", "op", "prec", "MB moved", "MB min", "ratio", "GFLOP", "FLOP/B", "H200 µs ≥")
}
