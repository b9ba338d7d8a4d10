//! Every row of the op table (src/optable) on the CPU backend against its independent reference:
//! float64 PyTorch / upstream guided_diffusion (tests/fixtures/{ops,weight_grads,optim}.safetensors,
//! tools/reference/make_{op,weight_grad,optim}_fixtures.py) and upstream GaussianDiffusion's step
//! tensors (diffusion.safetensors). Table-driven like ggml's test-backend-ops: a new case is a row
//! in a Python script; a new Backend method needs a row in the table and a case (checked below).

mod common;
use common::table::check_cases;
use common::*;
use ran::optable::fixtures::OP_FILES;
use ran::optable::{entries_for, sizes, table, TABLE};
use ran::Cpu;
use std::collections::BTreeSet;

#[test]
fn cpu_matches_every_reference_case() {
    // outputs an op claims to write whole come NaN-filled: an element it leaves unwritten fails here
    ran::backend::cpu::buffers::set_poison(true);
    let cases = fixture_cases();
    let r = check_cases(&Cpu, "cpu", &cases, 1.0);
    r.print("cpu");
    let mut failures = r.failures.clone();
    // every reference output a case holds (y, g_*) must have been computed by some row; the one
    // exception is said here: slice_channels has no _x_backward (the models' backward of a slice
    // is the concat's), its fixture gradient serves the Python side only
    let computed: BTreeSet<(String, String)> = r.computed.iter().cloned().collect();
    for c in &cases {
        for k in c.tensors.keys().filter(|k| *k == "y" || k.starts_with("g_")) {
            if c.op() == "slice_channels" && k == "g_x" {
                continue;
            }
            if !computed.contains(&(c.name.clone(), k.clone())) {
                failures.push(format!("{}: reference {k} not computed by any row", c.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    // each file's cases ran (a fixture that failed to load would leave its rows unchecked)
    assert!(cases.len() >= 70 + 18 + 4 + 8, "only {} cases loaded", cases.len());
    assert_eq!(r.rows.len(), TABLE.len(), "rows without a comparison: {:?}", TABLE.iter().map(|e| e.method).filter(|m| !r.rows.contains_key(m)).collect::<Vec<_>>());
}

/// The table covers the trait: every method of `trait Backend`, read from its declaration, has a
/// row (or is a transfer/view); every row names a real method, has a reference case and a
/// production-size case for the benchmarks.
#[test]
fn the_op_table_covers_every_backend_method() {
    let src = include_str!("../src/backend/mod.rs");
    let start = src.find("pub trait Backend").expect("trait Backend in src/backend/mod.rs");
    let body = &src[start..start + src[start..].find("\n}\n").expect("end of trait Backend")];
    let methods: BTreeSet<&str> = body.split("fn ").skip(1).map(|r| r.split(['(', '<']).next().unwrap().trim()).collect();
    assert!(methods.len() >= 50, "read only {} methods from trait Backend", methods.len());
    let rows: BTreeSet<&str> = TABLE.iter().map(|e| e.method).collect();
    assert_eq!(rows.len(), TABLE.len(), "a method has two rows");
    let missing: Vec<_> = methods.iter().filter(|m| !rows.contains(*m) && !table::NOT_OPS.contains(m)).collect();
    assert!(missing.is_empty(), "Backend methods without a row in the op table: {missing:?}");
    let stale: Vec<_> = rows.iter().filter(|m| !methods.contains(*m)).collect();
    assert!(stale.is_empty(), "op-table rows for methods the trait does not have: {stale:?}");

    let reference: BTreeSet<&str> = fixture_cases().iter().flat_map(|c| entries_for(c).map(|e| e.method).collect::<Vec<_>>()).collect();
    let production: BTreeSet<&str> = sizes::production_cases().iter().flat_map(|c| entries_for(c).map(|e| e.method).collect::<Vec<_>>()).collect();
    let no_ref: Vec<_> = rows.difference(&reference).collect();
    let no_prod: Vec<_> = rows.difference(&production).collect();
    assert!(no_ref.is_empty(), "rows without a reference case in {OP_FILES:?} or diffusion.safetensors: {no_ref:?}");
    assert!(no_prod.is_empty(), "rows without a production-size case in src/optable/sizes.rs: {no_prod:?}");
}

/// The work the benchmarks divide by, against counts done by hand for two shapes.
#[test]
fn op_table_work_counts_are_right() {
    let cases = sizes::production_cases();
    let find = |name: &str| cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("production case {name}"));
    let conv = find("conv3x3 256->256 @64x64");
    // 64·64 outputs × 256 out-channels × 256·9 taps, two FLOPs each
    match table::entry("conv2d").unwrap().work(conv, 0) {
        ran::optable::Work::Flops(f) => assert_eq!(f, 2.0 * 4096.0 * 256.0 * 2304.0),
        w => panic!("{w:?}"),
    }
    let s2 = find("conv3x3 s2 256->256 @64x64");
    match table::entry("conv2d").unwrap().work(s2, 0) {
        ran::optable::Work::Flops(f) => assert_eq!(f, 2.0 * 1024.0 * 256.0 * 2304.0, "stride 2 has 32² outputs"),
        w => panic!("{w:?}"),
    }
    let attn = find("attention 4 heads x 64, 1024 tokens");
    match table::entry("attention_legacy").unwrap().work(attn, 0) {
        ran::optable::Work::Flops(f) => assert_eq!(f, 4.0 * 4.0 * 1024.0 * 1024.0 * 64.0, "QKᵀ and PV per head"),
        w => panic!("{w:?}"),
    }
    let add = find("add residual 256ch @64x64");
    match table::entry("add").unwrap().work(add, 256 * 4096) {
        ran::optable::Work::Bytes(b) => assert_eq!(b, 3.0 * 4.0 * 256.0 * 4096.0, "two reads and a write"),
        w => panic!("{w:?}"),
    }
}
