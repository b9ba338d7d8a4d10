//! `ran train --precision bf16|f16` end to end on the tiny model of tests/cli_train.rs (32
//! channels, 16²; on the CPU through the emulation of the kernels' operand rounding): the loss
//! falls as at f32, an f16 run with skipped steps resumes bit-identically, its log follows the
//! loss-scale rule, and the CUDA kernels (emulated) take the same steps as the CPU emulation.
//! The scaler's arithmetic itself is checked in tests/train_mixed_precision.rs.

mod common;
use serde_json::Value;

use common::train_cli::*;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn skipped(r: &Value) -> bool {
    r.get("skipped").and_then(Value::as_bool).unwrap_or(false)
}

/// (e) The loss falls under bf16 and f16 as under f32: the same 40 steps, the mean loss of the
/// last ten against the first ten, and the last ten against f32's. bf16 and f32 runs carry no
/// loss scale in their log; f16's starts at upstream's 2^20.
/// Catches: a precision that breaks training (a gradient lost to rounding, a scale never undone:
/// AdamW would still move, by lr·sign, but the loss would not follow f32's).
#[test]
fn the_loss_falls_under_bf16_and_f16_as_under_f32() {
    let root = tmp("falls");
    let data = make_data(&root);
    let mut last = Vec::new();
    for p in ["f32", "bf16", "f16"] {
        let out = root.join(format!("{p}.safetensors"));
        let (rc, so, se) = train(&data, &out, &[("--steps", "40"), ("--precision", p)]);
        assert_eq!(rc, 0, "{p}: {so}{se}");
        let log = log_of(&root.join(format!("{p}.train")));
        assert_eq!(log.len(), 40);
        let l = losses(&log);
        let (first, end) = (mean(&l[..10]), mean(&l[30..]));
        println!("{p}: mean loss of steps 1–10 {first:.4}, of steps 31–40 {end:.4}");
        // f32 (tests/cli_train.rs): 0.852 → 0.364
        assert!(end < 0.6 * first, "{p}: the loss did not fall: {first} → {end}");
        assert_eq!(log[0].get("lg_loss_scale").and_then(Value::as_f64), (p == "f16").then_some(20.0), "{p}: {}", log[0]);
        if p != "f32" {
            assert!(se.contains(&format!("CPU emulation of {p} operands")), "{se}");
        }
        last.push(end);
    }
    for (p, l) in ["bf16", "f16"].iter().zip(&last[1..]) {
        assert!((l - last[0]).abs() < 0.15 * last[0], "{p}: final loss {l:.4} against f32's {:.4}", last[0]);
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// The lg_loss_scale of each record follows the rule from the one before: +1e-3 after a taken
/// step, −1 after a skipped one. To 1e-12: serde_json's default float parser may read the
/// shortest text of an f64 an ulp off (the exact bits are checked through the checkpoint,
/// whose metadata Rust's parser reads).
fn check_scale_rule(log: &[Value], lg0: f64) {
    let mut want = lg0;
    for r in log {
        let lg = r["lg_loss_scale"].as_f64().unwrap_or_else(|| panic!("no lg_loss_scale: {r}"));
        assert!((lg - want).abs() < 1e-12, "step {}: lg_loss_scale {lg}, the rule says {want}", r["step"]);
        want = if skipped(r) { lg - 1.0 } else { lg + 1e-3 };
    }
}

/// Two logs record the same steps: the same keys, integers and flags, floats to 1e-12 relative
/// (the parser's ulp, as above).
fn same_log(a: &[Value], b: &[Value]) {
    assert_eq!(a.len(), b.len());
    for (ra, rb) in without_seconds(a).iter().zip(&without_seconds(b)) {
        let (oa, ob) = (ra.as_object().unwrap(), rb.as_object().unwrap());
        assert_eq!(oa.keys().collect::<Vec<_>>(), ob.keys().collect::<Vec<_>>(), "{ra} / {rb}");
        for (k, va) in oa {
            match (va.as_f64(), ob[k].as_f64()) {
                (Some(x), Some(y)) if !va.is_u64() => assert!((x - y).abs() <= 1e-12 * x.abs().max(1e-300), "{k}: {ra} / {rb}"),
                _ => assert_eq!(va, &ob[k], "{k}"),
            }
        }
    }
}

/// (d) An f16 run that starts at 2^30 (the tiny model's backward overflows f16 there: the first
/// steps are skipped) resumes bit-identically from a checkpoint taken after step 12: the same
/// model bytes, checkpoint bytes and log. A resume under another loss scale or precision is
/// refused by name, and the loss-scale options are refused outside f16.
/// Catches: the scale or the AdamW update count not in the checkpoint (the resumed run would
/// restart at 2^30, or from bias corrections of the step count), a scale written with too few
/// digits, a skipped step that moves the EMA or AdamW.
#[test]
fn an_f16_run_with_skipped_steps_resumes_bit_identically() {
    let root = tmp("resume");
    let data = make_data(&root);
    let (a, b) = (root.join("a.safetensors"), root.join("b.safetensors"));
    let f16 = [("--precision", "f16"), ("--loss-scale-init", "30"), ("--save-every", "12")];
    let (rc, so, se) = train(&data, &a, &[&f16[..], &[("--steps", "24")]].concat());
    assert_eq!(rc, 0, "{so}{se}");
    let log = log_of(&root.join("a.train"));
    assert_eq!(log.len(), 24);
    check_scale_rule(&log, 30.0);
    let n_skipped = log.iter().filter(|r| skipped(r)).count();
    println!("2^30: steps skipped {:?}", log.iter().filter(|r| skipped(r)).map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>());
    assert!((1..24).contains(&n_skipped), "{n_skipped} of 24 steps skipped");
    assert!(se.contains("f16 gradients overflowed, step skipped; lg_loss_scale now 29"), "{se}");
    let st = ran::io::safetensors::SafeTensors::open(root.join("a.train/checkpoint.safetensors")).unwrap();
    assert_eq!(st.metadata()["adam_updates"], (24 - n_skipped).to_string());
    let lg_end: f64 = st.metadata()["lg_loss_scale"].parse().unwrap();
    let last = &log[23];
    let lg_last = last["lg_loss_scale"].as_f64().unwrap();
    assert!((lg_end - if skipped(last) { lg_last - 1.0 } else { lg_last + 1e-3 }).abs() < 1e-12, "checkpoint lg {lg_end}, last record {last}");

    let (rc, so, se) = train(&data, &b, &[&f16[..], &[("--steps", "12")]].concat());
    assert_eq!(rc, 0, "{so}{se}");
    let bdir = s(&root.join("b.train"));
    let (rc, so, se) = train(&data, &b, &[&f16[..], &[("--steps", "24"), ("--resume", &bdir)]].concat());
    assert_eq!(rc, 0, "{so}{se}");
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "resumed output differs from the straight run");
    assert!(std::fs::read(root.join("a.train/checkpoint.safetensors")).unwrap() == std::fs::read(root.join("b.train/checkpoint.safetensors")).unwrap(), "checkpoints differ");
    same_log(&log_of(&root.join("b.train")), &log);

    let (rc, _, se) = train(&data, &b, &[("--precision", "f16"), ("--loss-scale-init", "25"), ("--steps", "24"), ("--resume", &bdir)]);
    assert_eq!(rc, 2);
    assert!(se.contains("loss_scale_init: `30` in the checkpoint, `25` now"), "{se}");
    let (rc, _, se) = train(&data, &b, &[("--precision", "bf16"), ("--steps", "24"), ("--resume", &bdir)]);
    assert_eq!(rc, 2);
    assert!(se.contains("precision: `f16` in the checkpoint, `bf16` now"), "{se}");
    let (rc, _, se) = train(&data, &root.join("c.safetensors"), &[("--precision", "bf16"), ("--loss-scale-init", "20"), ("--steps", "2")]);
    assert_eq!(rc, 2);
    assert!(se.contains("--loss-scale-init") && se.contains("bf16"), "{se}");
    let (rc, _, se) = train(&data, &root.join("c.safetensors"), &[("--precision", "f16"), ("--loss-scale-init", "500"), ("--steps", "2")]);
    assert_eq!(rc, 2);
    assert!(se.contains("loss scale"), "{se}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// (c) The CUDA kernels (through the CPU emulator: f16 tensor-core GEMMs) train as the CPU
/// emulation of their rounding: the same steps skipped at the same scales (exact), the loss terms
/// within the f32 summation-order difference. From 2^24 the first step overflows and the next two
/// are taken (observed on the CPU, seed 0, since the convs' weight gradients round ∂y to f16 too:
/// 2^25 skips two, 2^23 none), so step 1 checks the
/// overflow on both paths and step 3's loss step 2's f16 update. ~45 s here.
/// Catches: an overflow one path makes and the other does not (the f16 conversion saturating, a
/// kernel falling back to f32), a scale or skip bookkeeping that depends on the backend.
#[test]
fn f16_training_on_the_emulated_cuda_backend_matches_the_cpu_emulation() {
    let root = tmp("emulator");
    let data = make_data(&root);
    let (c, e) = (root.join("c.safetensors"), root.join("e.safetensors"));
    let opts = [("--steps", "3"), ("--precision", "f16"), ("--loss-scale-init", "24")];
    let (rc, so, se) = train(&data, &c, &opts);
    assert_eq!(rc, 0, "{so}{se}");
    let (rc, so, se) = train(&data, &e, &[&opts[..], &[("--device", "emulator")]].concat());
    assert_eq!(rc, 0, "{so}{se}");
    let (lc, le) = (log_of(&root.join("c.train")), log_of(&root.join("e.train")));
    assert_eq!(lc.iter().map(skipped).collect::<Vec<_>>(), [true, false, false], "the steps this test is built on");
    assert_eq!(le.len(), 3);
    for (rc, re) in lc.iter().zip(&le) {
        assert_eq!((skipped(rc), &rc["lg_loss_scale"]), (skipped(re), &re["lg_loss_scale"]), "step {}", rc["step"]);
        for k in ["mse", "vb", "loss"] {
            let (want, got) = (rc[k].as_f64().unwrap(), re[k].as_f64().unwrap());
            // observed |Δ| 0 at step 1, ≤ 5.4e-8 (mse 0.94) after; 1e-7 + 2e-7·|ref|
            assert!((got - want).abs() <= 1e-7 + 2e-7 * want.abs(), "step {} {k}: emulator {got}, cpu {want}", rc["step"]);
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}
