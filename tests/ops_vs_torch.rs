//! Every op and input gradient of the CPU backend against float64 PyTorch / upstream
//! guided_diffusion (tests/fixtures/ops.safetensors, made by tools/reference/make_op_fixtures.py).
//! Table-driven like ggml's test-backend-ops: a new case is a new row in the Python script.

mod common;
use common::*;
use ran::Cpu;

#[test]
fn cpu_ops_match_pytorch() {
    // outputs an op claims to write whole come NaN-filled: an element it leaves unwritten fails here
    ran::backend::cpu::buffers::set_poison(true);
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

/// Every method of the `Backend` trait, read from its declaration, must have a reference: a
/// case in an independent-code fixture (ops, weight_grads, optim), or for `X_x_backward` a case of
/// X that lists an input gradient, or (the diffusion step ops, whose fixture is upstream's own
/// step-by-step output) a call in tests/diffusion.rs. A new method without one fails here.
#[test]
fn fixtures_cover_every_backend_method() {
    let src = include_str!("../src/backend/mod.rs");
    let start = src.find("pub trait Backend").expect("trait Backend in src/backend/mod.rs");
    let body = &src[start..start + src[start..].find("\n}\n").expect("end of trait Backend")];
    let methods: Vec<&str> = body.split("fn ").skip(1).map(|r| r.split(['(', '<']).next().unwrap().trim()).collect();
    assert!(methods.len() >= 40, "read only {} methods from trait Backend", methods.len());
    let mut ops = std::collections::BTreeSet::new();
    let mut with_grads = std::collections::BTreeSet::new();
    for file in ["ops.safetensors", "weight_grads.safetensors", "optim.safetensors"] {
        let fx = ran::io::safetensors::SafeTensors::open(fixture_path(file)).unwrap();
        for c in cases(&fx) {
            ops.insert(c.op().to_string());
            if !c.grads().is_empty() {
                with_grads.insert(c.op().to_string());
            }
        }
    }
    let diffusion_test = include_str!("diffusion.rs");
    // the fixture's name for an op whose Backend name differs: folded batch norm is a channel affine
    let fixture_name = |m: &str| if m == "channel_affine" { "batch_norm".to_string() } else { m.to_string() };
    // not ops: transfers and views
    let not_ops = ["name", "from_host", "from_host_vec", "to_host", "zeros", "reshape"];
    let mut missing = Vec::new();
    for m in methods {
        let covered = not_ops.contains(&m)
            || ops.contains(&fixture_name(m))
            || m.strip_suffix("_x_backward").is_some_and(|base| with_grads.contains(&fixture_name(base)))
            || diffusion_test.contains(&format!(".{m}("));
        if !covered {
            missing.push(m);
        }
    }
    assert!(missing.is_empty(), "Backend methods without a reference case: {missing:?}");
}
