//! The GPU side of kernels/tc.cuh, which the emulator never runs: the PTX NVRTC built for the
//! probes in kernels/selftest_tc.cu holds the instruction each `kc_*` wrapper promises. Catches a
//! wrapper whose inline PTX names the wrong variant (the f16 mma emitting bf16, ldmatrix without
//! .trans, a cp.async without its size operand) or that fell back to something else.
#![allow(unexpected_cfgs)] // `nvrtc_ptx` is set by build.rs when NVRTC built every file

use ran::backend::cuda::kernels::KERNEL_FILES;

#[test]
#[cfg_attr(not(nvrtc_ptx), ignore = "built without NVRTC (RAN_NVRTC_LIB, RAN_REQUIRE_NVRTC=1): no PTX to read")]
fn tc_wrappers_emit_the_promised_ptx() {
    let f = KERNEL_FILES.iter().find(|f| f.file == "selftest_tc").expect("kernels/selftest_tc.cu is embedded");
    let ptx = f.ptx.expect("selftest_tc has PTX");
    let norm: String = ptx.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32",
        "ldmatrix.sync.aligned.m8n8.x1.shared.b16",
        "ldmatrix.sync.aligned.m8n8.x2.shared.b16",
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
        "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16",
        "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16",
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
        "cp.async.ca.shared.global",
        "cp.async.cg.shared.global",
        "cp.async.commit_group",
        "cp.async.wait_group 1",
        "cp.async.wait_group 0",
        "cvt.rn.bf16.f32",
        "cvt.rn.f16.f32",
        "cvt.rna.tf32.f32",
        "cvt.rn.bf16x2.f32",
        "cvt.rn.f16x2.f32",
        "ld.global.v4.",
        "st.global.v4.",
    ] {
        assert!(norm.contains(want), "selftest_tc PTX lacks `{want}`");
    }
    // cp.async: the three .ca sizes, .cg 16, and the zero-fill form with its source-size operand
    let cps: Vec<&str> = norm.split(';').filter_map(|s| s.find("cp.async.c").map(|i| s[i..].trim())).collect();
    let has = |form: &str, tail: &str, operands: usize| cps.iter().any(|s| s.starts_with(form) && s.ends_with(tail) && s.matches(',').count() + 1 == operands);
    for size in [" 4", " 8", " 16"] {
        assert!(has("cp.async.ca.shared.global", size, 3), "no cp.async.ca of{size} bytes in {cps:?}");
    }
    assert!(has("cp.async.cg.shared.global", " 16", 3), "no cp.async.cg of 16 bytes in {cps:?}");
    assert!(cps.iter().any(|s| s.starts_with("cp.async.cg.shared.global") && s.matches(',').count() == 3), "no zero-filling cp.async.cg (4 operands) in {cps:?}");
    let tc = KERNEL_FILES.iter().find(|f| f.file == "linear_tc").and_then(|f| f.ptx).expect("linear_tc PTX");
    assert!(
        tc.contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") && tc.contains("ldmatrix.sync.aligned.m8n8.x4.shared.b16") && tc.contains("cp.async.cg.shared.global"),
        "linear_tc_bf16 lost its tensor-core instructions"
    );
    // the implicit-GEMM convolutions: all three mma kinds, ldmatrix, the zero-filling cp.async and
    // the 3-stage pipeline's wait (at most one group in flight at the barrier)
    let conv = KERNEL_FILES.iter().find(|f| f.file == "conv2d_tc").and_then(|f| f.ptx).expect("conv2d_tc PTX");
    let conv: String = conv.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32",
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
        "cp.async.cg.shared.global",
        "cp.async.wait_group 1",
    ] {
        assert!(conv.contains(want), "conv2d_tc PTX lacks `{want}`");
    }
}
