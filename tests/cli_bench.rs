//! `ran bench`: every subcommand runs at tiny sizes and ends with one JSON object holding the
//! fields tools/bench/compare.sh pairs with the PyTorch side; the FLOP count is checked against
//! counts computed here (conv) and against torch.utils.flop_counter on the same architectures
//! (UNet, EfficientNet, the ResNet gradient), and bad options fail with a message.

#[path = "common/paths.rs"]
mod paths;

use serde_json::Value;

fn ran(args: &[&str]) -> (i32, String, String) {
    let o = paths::ran_command().args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Runs `ran bench <args> --json --iters 1 --threads 1` and returns the last line's JSON after
/// checking the fields every bench prints.
fn bench(args: &[&str]) -> Value {
    let mut a: Vec<&str> = vec!["bench"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--json", "--iters", "1", "--threads", "1"]);
    let (rc, so, se) = ran(&a);
    assert_eq!(rc, 0, "{a:?}: {so}{se}");
    assert!(se.contains("iteration 1/1"), "a progress line on stderr: {se}");
    let last = so.lines().last().expect("output");
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{a:?}: last line is not JSON ({e}): {last}"));
    for f in ["median_ms", "min_ms", "max_ms", "gflop", "threads", "commit"] {
        assert!(v.get(f).is_some_and(|x| !x.is_null()), "{a:?}: no `{f}` in {v}");
    }
    let (med, min, max) = (v["median_ms"].as_f64().unwrap(), v["min_ms"].as_f64().unwrap(), v["max_ms"].as_f64().unwrap());
    assert!(min > 0.0 && min <= med && med <= max, "{a:?}: min {min} median {med} max {max}");
    assert_eq!(v["times_ms"].as_array().map(Vec::len), Some(1), "{a:?}: one timed iteration: {v}");
    assert_eq!(v["threads"], 1, "{a:?}: --threads 1: {v}");
    assert!(!v["commit"].as_str().unwrap().is_empty());
    // the words come first, and exactly one line of JSON
    assert_eq!(so.lines().filter(|l| l.starts_with('{')).count(), 1, "{so}");
    assert!(so.contains("median") && so.contains("GFLOP/s") && so.contains("% of the ceiling"), "{so}");
    v
}

fn gflop(v: &Value) -> f64 {
    v["gflop"].as_f64().unwrap()
}

#[test]
fn conv_counts_direct_convolution_flops() {
    // 2 · N · O · C · K² · Ho · Wo with padding K/2, stride 1: Ho = H, Wo = W for odd K
    for (shape, k, out, batch) in [("8x10x12", 3usize, 5usize, 2usize), ("16x7x9", 1, 16, 1), ("4x9x9", 5, 6, 1), ("3x6x8", 4, 2, 1)] {
        let d: Vec<usize> = shape.split('x').map(|s| s.parse().unwrap()).collect();
        let (c, h, w) = (d[0], d[1], d[2]);
        let (ho, wo) = (h + 2 * (k / 2) - k + 1, w + 2 * (k / 2) - k + 1);
        let want = 2.0 * (batch * out * c * k * k * ho * wo) as f64 / 1e9;
        let (ks, os, bs) = (k.to_string(), out.to_string(), batch.to_string());
        let v = bench(&["conv", "--shape", shape, "--kernel", &ks, "--out", &os, "--batch", &bs]);
        assert!((gflop(&v) - want).abs() <= 1e-15 + 1e-12 * want, "{shape} k{k}: gflop {} want {want}", gflop(&v));
        let rate = v["gflops_best"].as_f64().unwrap();
        assert!((rate - want / (v["min_ms"].as_f64().unwrap() / 1e3)).abs() <= 1e-9 * rate, "{v}");
    }
}

/// The references are torch.utils.flop_counter.FlopCounterMode's totals for the same
/// architectures (tools/bench/torch_unet.py, torch_effnet.py, torch_wrn50_grad.py with these
/// shapes): matrix products and convolutions, 2 FLOPs per multiply-add, as ran counts.
#[test]
fn model_flop_counts_match_torch_flop_counter() {
    const TINY: &str = "--image_size 16 --num_channels 32 --num_res_blocks 2 --attention_resolutions 8 --num_head_channels 32 \
--learn_sigma True --class_cond True --num_classes 3 --channel_mult 1,1,2,2";
    let v = bench(&["unet", "--flags", TINY]);
    assert_eq!(v["bench"], "unet");
    assert!((gflop(&v) - 0.121761792).abs() < 1e-12, "unet: {v}");
    let v = bench(&["unet", "--flags", TINY, "--batch", "2"]);
    assert!((gflop(&v) - 2.0 * 0.121761792).abs() < 1e-12, "unet batch 2: {v}");
    let v = bench(&["effnet", "--variant", "b4", "--image-size", "64"]);
    assert!((gflop(&v) - 0.151428288).abs() < 1e-12, "effnet: {v}");
    let v = bench(&["wrn50-grad", "--image-size", "64"]);
    assert!((gflop(&v) - 2.999713792).abs() < 1e-12, "wrn50-grad: {v}");
    // detect: both feature-timestep modes run; index makes a second UNet pass per timestep
    let idx = bench(&["detect", "--flags", TINY, "--feature-timestep", "index"]);
    let tau = bench(&["detect", "--flags", TINY, "--feature-timestep", "tau"]);
    let unet3 = 3.0 * (0.121761792 + 2.0 * 32.0 * 272.0 * 64.0 / 1e9/* head: 1×1 conv 32→272 at its 8² input */);
    assert!(gflop(&idx) > gflop(&tau) + 0.9 * unet3 - 1e-9, "index {} tau {}", gflop(&idx), gflop(&tau));
    // a training step: the forward, then both gradients (x and w) of every product but the first
    // conv's x: at least 3× the forward's products less that one layer (torch's counter gives
    // exactly 3× here, tools/bench/torch_train.py); the step's loss is finite or the bench fails
    let train = bench(&["train", "--flags", &format!("{TINY} --feat_shape 4"), "--batch", "2"]);
    assert_eq!(train["bench"], "train");
    let fwd = 2.0 * 0.121761792;
    assert!(gflop(&train) >= 3.0 * fwd * 0.97, "train {} vs forward {fwd}", gflop(&train));
    // …and at most 3× (the head's 1×1 conv 32→272 at 4² added): the default backward recomputes
    // nothing; --recompute runs each ResBlock's in_conv and each attention's qkv and products
    // again, about half a forward more
    let head = 2.0 * 2.0 * 32.0 * 272.0 * 16.0 / 1e9;
    assert!(gflop(&train) <= 3.0 * (fwd + head) + 1e-9, "train {} recomputes: above 3 × forward {fwd}", gflop(&train));
    let recompute = bench(&["train", "--flags", &format!("{TINY} --feat_shape 4"), "--batch", "2", "--recompute"]);
    assert!(gflop(&recompute) >= gflop(&train) + 0.3 * fwd, "--recompute {} vs {}", gflop(&recompute), gflop(&train));
    // attention: QKᵀ and P·V, 2·2·T²·d per head (tools/bench/torch_attention.py's formula, which
    // FlopCounterMode gives for the legacy einsums); the input gradient adds 4 more products
    let a = bench(&["attention", "--tokens", "70", "--heads", "2", "--head-dim", "8", "--batch", "2"]);
    let fwd = 4.0 * 2.0 * 2.0 * 70.0 * 70.0 * 8.0 / 1e9;
    assert!((gflop(&a) - fwd).abs() < 1e-12, "attention: {a}");
    let a = bench(&["attention", "--tokens", "70", "--heads", "2", "--head-dim", "8", "--batch", "2", "--backward"]);
    assert!((gflop(&a) - 3.0 * fwd).abs() < 1e-12, "attention with its gradient: {a}");
}

#[test]
fn bad_options_fail_with_a_message() {
    for (args, says) in [
        (&["bench", "conv", "--shape", "0x4x4"][..], "CxHxW"),
        (&["bench", "conv", "--shape", "4x4"][..], "CxHxW"),
        (&["bench", "conv", "--iters", "0"][..], "--iters"),
        (&["bench", "conv", "--kernel", "0"][..], "--kernel"),
        (&["bench", "conv", "--threads", "0"][..], "--threads"),
        (&["bench", "conv", "--ceiling", "0"][..], "--ceiling"),
        (&["bench", "conv", "--ceiling=-3"][..], "--ceiling"),
        (&["bench", "unet", "--flags", "--image_size 16 --num_channels 30"][..], "error"),
        (&["bench", "effnet", "--variant", "b9"][..], "b9"),
        (&["bench", "detect", "--feature-timestep", "tua"][..], "tua"),
    ] {
        let (rc, so, se) = ran(args);
        assert_eq!(rc, 2, "{args:?}: {so}{se}");
        assert!(se.contains(says) && !se.contains("panicked"), "{args:?}: {se}");
    }
}

/// A UNet small enough for the emulator in a second or two.
const EMU_TINY: &str = "--image_size 16 --num_channels 32 --num_res_blocks 1 --attention_resolutions 8 --num_head_channels 32 \
--learn_sigma True --class_cond True --num_classes 3 --channel_mult 1,2 --resblock_updown True --use_scale_shift_norm True";

fn count(v: &Value, run: &str, what: &str) -> u64 {
    v[run][what].as_u64().unwrap_or_else(|| panic!("no {run}.{what} in {v}"))
}

/// On the emulator `ran bench unet` counts driver calls per forward: the first run fills the
/// allocator cache, the next one allocates nothing and zeroes nothing (no op of the forward needs
/// zeros), so it makes its launches, the class ids' upload and the read-back (copy + sync) only.
#[test]
fn unet_bench_on_the_emulator_counts_driver_calls() {
    let v = bench(&["unet", "--device", "emulator", "--flags", EMU_TINY, "--warmup", "1"]);
    let (first, per) = ("driver_first_run", "driver_per_run");
    assert!(count(&v, first, "allocs") > 10, "the first run allocates: {v}");
    assert_eq!(count(&v, per, "allocs"), 0, "the cache serves every buffer of the second forward: {v}");
    assert_eq!(count(&v, per, "memsets"), 0, "{v}");
    assert_eq!(count(&v, per, "frees"), 0, "{v}");
    assert_eq!((count(&v, per, "copies"), count(&v, per, "syncs")), (2, 1), "{v}");
    let launches = count(&v, per, "launches");
    assert!(launches > 50 && launches == count(&v, first, "launches"), "{v}");
    assert_eq!(count(&v, per, "calls"), launches + 3, "{v}");
    // the same forward replayed as a graph: the class ids' upload and gather, three input copies,
    // one graph launch, the output's copy, and the read-back (copy + sync) — 9 calls
    let g = "driver_graph_replay";
    assert_eq!((count(&v, g, "graph_launches"), count(&v, g, "launches"), count(&v, g, "copies"), count(&v, g, "syncs")), (1, 1, 6, 1), "{v}");
    assert_eq!((count(&v, g, "allocs"), count(&v, g, "memsets"), count(&v, g, "calls")), (0, 0, 9), "{v}");
    let (_, so, _) = ran(&["bench", "unet", "--device", "emulator", "--flags", EMU_TINY, "--iters", "1", "--warmup", "1", "--quiet"]);
    assert!(so.contains(&format!("per run, steady state (the last of 2): {} driver calls: {launches} launches", launches + 3)), "{so}");
    assert!(so.contains("first run (empty allocator cache): "), "{so}");
    assert!(so.contains("per run replayed as a CUDA graph (RAN_CUDA_GRAPH=0 turns graphs off): 9 driver calls: 1 launches"), "{so}");
}

/// RAN_CUDA_SYNC=1 synchronises after every launch; RAN_EMU_MEM_LIMIT makes the emulator's
/// memory small, and running out is a clear error, not a panic.
#[test]
fn unet_bench_on_the_emulator_sync_and_out_of_memory() {
    let o = paths::ran_command().args(["bench", "unet", "--device", "emulator", "--flags", EMU_TINY, "--iters", "1", "--warmup", "0", "--json", "--quiet"]).env("RAN_CUDA_SYNC", "1").output().unwrap();
    let so = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{so}{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(so.lines().last().unwrap()).unwrap();
    assert_eq!(count(&v, "driver_per_run", "syncs"), count(&v, "driver_per_run", "launches") + 1, "{v}");

    let o = paths::ran_command().args(["bench", "unet", "--device", "emulator", "--flags", EMU_TINY, "--iters", "1", "--warmup", "0", "--quiet"]).env("RAN_EMU_MEM_LIMIT", "100000").output().unwrap();
    let se = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !se.contains("panicked"), "{se}");
    assert!(se.contains("out of device memory allocating") && se.contains("free of 0.1 MiB") && se.contains("reduce the batch"), "{se}");
}
