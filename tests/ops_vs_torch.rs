//! Every op and input gradient of the CPU backend against float64 PyTorch / upstream
//! guided_diffusion (tests/fixtures/ops.safetensors, made by tools/reference/make_op_fixtures.py).
//! Table-driven like ggml's test-backend-ops: a new case is a new row in the Python script.

mod common;
use common::*;
use ran::Cpu;

#[test]
fn cpu_ops_match_pytorch() {
    let fx = ops_fixtures();
    let all = cases(&fx);
    let mut failures = Vec::new();
    let mut checked = 0;
    for c in &all {
        let (atol, rtol) = tolerance(c.op());
        let outs = match run_case(&Cpu, c) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: error {e}", c.name));
                continue;
            }
        };
        // every gradient the fixture holds must have been computed
        for g in c.grads() {
            if !outs.iter().any(|(k, _)| *k == format!("g_{g}")) {
                failures.push(format!("{}: gradient g_{g} not computed", c.name));
            }
        }
        for (k, got) in &outs {
            let (_, want) = c.host(k);
            match check_close(&format!("{}.{k}", c.name), got, &want, atol, rtol) {
                Ok(err) => {
                    checked += 1;
                    println!("ok   {:<28} {:<5} max abs err {err:.2e}  (atol {atol:e} rtol {rtol:e})", c.name, k);
                }
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(checked >= 90, "only {checked} comparisons ran");
}

/// The fixture must cover every op of the Backend trait; a new op without a fixture fails here.
#[test]
fn fixtures_cover_every_op() {
    let fx = ops_fixtures();
    let ops: std::collections::BTreeSet<String> = cases(&fx).iter().map(|c| c.op().to_string()).collect();
    for op in [
        "conv2d",
        "linear",
        "group_norm",
        "batch_norm",
        "activation",
        "add",
        "mul",
        "avg_pool2d",
        "max_pool2d",
        "global_avg_pool",
        "upsample_nearest2x",
        "resize_bilinear",
        "concat_channels",
        "slice_channels",
        "attention_legacy",
        "timestep_embedding",
        "embedding",
        "mean_std",
    ] {
        assert!(ops.contains(op), "no fixture case for op {op}");
    }
}
