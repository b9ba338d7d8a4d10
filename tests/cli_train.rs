//! `ran train` end to end on a tiny model (32 channels, 16², one res block per level) and eight
//! generated 20×20 images of two classes: the loss falls, a run stopped and resumed (by
//! --steps or by Ctrl-C) ends in the same bytes as one straight run, the model it writes runs
//! in `ran detect`, bad inputs are refused by name, and the CUDA kernels (emulated) train as
//! the CPU does. Each CPU run takes about 2 s here, the emulated one ~25 s.

mod common;
use common::fixture_path;
use serde_json::Value;
use std::process::Command;

use common::train_cli::*;

#[test]
fn training_lowers_the_loss_and_resumes_bit_identically() {
    let root = tmp("resume");
    let data = make_data(&root);
    let (a, b) = (root.join("a.safetensors"), root.join("b.safetensors"));
    let (rc, so, se) = train(&data, &a, &[("--steps", "40")]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(se.contains("no --init: all 127 tensors initialised fresh"), "{se}");
    let log = log_of(&root.join("a.train"));
    assert_eq!(log.len(), 40);
    let loss: Vec<f64> = log.iter().map(|r| r["loss"].as_f64().unwrap()).collect();
    for k in ["step", "lr", "mse", "vb", "feat_mse", "loss", "seconds"] {
        assert!(log[0].get(k).is_some(), "log lacks {k}: {}", log[0]);
    }
    assert_eq!(log[39]["step"], 40);
    // lr anneals linearly as upstream's TrainLoop: step j ≥ 1 (0-based) trains at 1e-3·(1 − (j − 1)/40)
    assert!((log[11]["lr"].as_f64().unwrap() - 1e-3 * 0.75).abs() < 1e-12, "{}", log[11]);
    // catches the off-by-one (step j at 1 − j/40): upstream's first two steps share the initial lr
    assert!(log[0]["lr"] == 1e-3 && log[1]["lr"] == 1e-3, "{} {}", log[0], log[1]);
    let (first, last) = (loss[..10].iter().sum::<f64>() / 10.0, loss[30..].iter().sum::<f64>() / 10.0);
    println!("mean loss of steps 1–10: {first:.4}, of steps 31–40: {last:.4}");
    // observed (seed 0, deterministic): 0.852 → 0.364; a loop that does not learn stays near 1
    assert!(last < 0.6 * first, "the loss did not fall: {first} → {last}");
    assert!(root.join("a.train/loss.png").exists() && root.join("a.train/checkpoint.safetensors").exists());

    // 20 steps, then --resume to 40: the same bytes as the straight run
    let (rc, so, se) = train(&data, &b, &[("--steps", "20")]);
    assert_eq!(rc, 0, "{so}{se}");
    let bdir = s(&root.join("b.train"));
    let (rc, so, se) = train(&data, &b, &[("--steps", "40"), ("--resume", &bdir)]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "resumed output differs from the straight run");
    assert!(std::fs::read(root.join("a.train/checkpoint.safetensors")).unwrap() == std::fs::read(root.join("b.train/checkpoint.safetensors")).unwrap(), "checkpoints differ");
    assert_eq!(without_seconds(&log_of(&root.join("b.train"))), without_seconds(&log));

    // a resume under other settings is refused, naming each differing key
    let (rc, _, se) = train(&data, &b, &[("--steps", "40"), ("--resume", &bdir), ("--lr", "2e-3"), ("--seed", "1")]);
    assert_eq!(rc, 2);
    assert!(se.contains("lr: `1e-3` in the checkpoint, `2e-3` now") && se.contains("seed: `0`"), "{se}");
    // a fresh run over an earlier run's folder is refused
    let (rc, _, se) = train(&data, &b, &[("--steps", "5")]);
    assert_eq!(rc, 2);
    assert!(se.contains("--resume"), "{se}");

    // the model runs in detect, its class names mapping the folder names to labels
    let det = s(&root.join("det"));
    let img = s(&data.join("dots/train/good/1.png"));
    let (rc, so, se) = ran(&["detect", &img, "--model", &s(&a), "--kl-only", "--timesteps", "5", "--out", &det, "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    let res: Value = serde_json::from_str(&std::fs::read_to_string(root.join("det/results.json")).unwrap()).unwrap();
    assert!(res.to_string().contains("dots"), "{res}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Ctrl-C writes a checkpoint of the steps done; resuming from it ends where a straight run does.
#[cfg(unix)]
#[test]
fn ctrl_c_checkpoints_and_the_run_resumes_from_it() {
    let root = tmp("sigint");
    let data = make_data(&root);
    let (a, b) = (root.join("a.safetensors"), root.join("b.safetensors"));
    let (rc, so, se) = train(&data, &a, &[("--steps", "30"), ("--lr-anneal-steps", "30")]);
    assert_eq!(rc, 0, "{so}{se}");
    let (d, o) = (s(&data), s(&b));
    let child = common::ran_command()
        .args(["train", "--data", &d, "--out", &o, "--flags", FLAGS, "--lr", "1e-3", "--lr-anneal-steps", "30", "--save-every", "0", "--device", "cpu", "--steps", "30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let bdir = root.join("b.train");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(bdir.join("log.jsonl")).map(|t| t.lines().count()).unwrap_or(0) < 3 {
        assert!(t0.elapsed().as_secs() < 60, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    let out = child.wait_with_output().unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{so}{}", String::from_utf8_lossy(&out.stderr));
    assert!(so.contains("interrupted: checkpoint at step"), "{so}");
    assert!(!b.exists(), "an interrupted run writes no model");
    let done = log_of(&bdir).len();
    assert!(done < 30, "the run ended before the signal ({done} steps)");
    let (rc, so, se) = train(&data, &b, &[("--steps", "30"), ("--lr-anneal-steps", "30"), ("--save-every", "0"), ("--resume", &s(&bdir))]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(so.contains(&format!("steps {done} → 30")), "{so}");
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "interrupted + resumed differs from the straight run");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The feature head learns EfficientNet taps (a B4-shaped extractor of the fixtures, 272
/// channels): the paper-like model of the train_step fixture, whose decoder has the 11 blocks
/// the head taps; detect runs on the result with the same extractor.
#[test]
fn the_feature_head_trains_against_the_extractor() {
    let root = tmp("head");
    let data = make_data(&root);
    let out = root.join("h.safetensors");
    let effnet = s(&fixture_path("effnet_b4w.safetensors"));
    let flags = "--image_size 16 --num_channels 32 --num_res_blocks 2 --channel_mult 1,1,1,2 --attention_resolutions 8,4 --num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --class_cond True --learn_sigma True";
    let (d, o) = (s(&data), s(&out));
    let arch = "custom:1.4,0.25,380";
    // a model without the head first, then the head added to it through --init
    let plain = s(&root.join("plain.safetensors"));
    let (rc, so, se) = ran(&["train", "--data", &d, "--out", &plain, "--flags", flags, "--steps", "2", "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    let (rc, so, se) = ran(&["train", "--data", &d, "--out", &o, "--init", &plain, "--steps", "6", "--feat-shape", "4", "--effnet", &effnet, "--effnet-arch", arch, "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(se.contains("initialised fresh: feat_rec1.0.weight, feat_rec1.0.bias, feat_rec1.2.weight, feat_rec1.2.bias\n"), "only the head is fresh: {se}");
    let log = log_of(&root.join("h.train"));
    assert!(log.iter().all(|r| r["feat_mse"].as_f64().is_some_and(|f| f.is_finite() && f > 0.0)), "{log:?}");
    // its metadata names the extractor: detect needs no --effnet-arch
    let det = s(&root.join("det"));
    let img = s(&data.join("stripes/train/good/0.png"));
    let (rc, so, se) = ran(&["detect", &img, "--model", &o, "--effnet", &effnet, "--timesteps", "5", "--out", &det, "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    assert!(!se.contains("KL score only"), "{se}");
    // as --init without --effnet: the head cannot be trained, said so
    let o2 = s(&root.join("h2.safetensors"));
    let (rc, _, se) = ran(&["train", "--data", &d, "--out", &o2, "--init", &o, "--steps", "2", "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("feature head: give --effnet"), "{se}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// --train-only head: the UNet written is the one loaded, bit for bit, only the head is new;
/// the options' bad values are refused by name.
#[test]
fn the_head_alone_trains_with_the_unet_frozen() {
    let root = tmp("head-only");
    let data = make_data(&root);
    let effnet = s(&fixture_path("effnet_b4w.safetensors"));
    let flags = "--image_size 16 --num_channels 32 --num_res_blocks 2 --channel_mult 1,1,1,2 --attention_resolutions 8,4 --num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --class_cond True --learn_sigma True";
    let d = s(&data);
    let plain = s(&root.join("plain.safetensors"));
    let (rc, so, se) = ran(&["train", "--data", &d, "--out", &plain, "--flags", flags, "--steps", "2", "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    let o = s(&root.join("h.safetensors"));
    let base = ["train", "--data", &d, "--init", &plain, "--feat-shape", "4", "--effnet-arch", "custom:1.4,0.25,380", "--device", "cpu", "--steps", "3"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        ran(&a)
    };
    let (rc, so, se) = with(&["--out", &o, "--effnet", &effnet, "--train-only", "head", "--feature-max-t", "400", "--ema", "0", "--lr-anneal-steps", "0"]);
    assert_eq!(rc, 0, "{so}{se}");
    let (p, h) = (ran::io::safetensors::SafeTensors::open(&plain).unwrap(), ran::io::safetensors::SafeTensors::open(&o).unwrap());
    let (pn, hn): (Vec<String>, Vec<String>) = (p.names().map(String::from).collect(), h.names().map(String::from).collect());
    let mut frozen = 0;
    for name in hn {
        if name.starts_with("feat_rec1.") {
            assert!(!pn.contains(&name));
        } else {
            assert!(p.get(&name).unwrap() == h.get(&name).unwrap(), "{name} of the frozen UNet changed");
            frozen += 1;
        }
    }
    assert_eq!(frozen, pn.len());
    let log = log_of(&root.join("h.train"));
    assert!(log.iter().all(|r| r["feat_mse"].as_f64().is_some_and(|f| f > 0.0) && r["lr"] == 1e-4), "{log:?}");
    // bad values, each named
    let e = s(&root.join("e.safetensors"));
    for (extra, says) in [
        (vec!["--train-only", "head"], "--train-only head trains the feature head: give --effnet"),
        (vec!["--train-only", "unet"], "`unet`: all or head"),
        (vec!["--effnet", &effnet, "--feature-max-t", "0"], "--feature-max-t 0: a timestep in 1..=1000"),
        (vec!["--effnet", &effnet, "--feature-max-t", "1001"], "--feature-max-t 1001"),
        (vec!["--feature-max-t", "400"], "--feature-max-t limits the feature term: give --effnet"),
    ] {
        let mut x = vec!["--out", &e];
        x.extend(extra);
        let (rc, _, se) = with(&x);
        assert_eq!(rc, 2, "{x:?}: {se}");
        assert!(se.contains(says), "{x:?}: {se}");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_inputs_are_refused_by_name() {
    let root = tmp("bad");
    let data = make_data(&root);
    // an empty folder is named
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (rc, _, se) = train(&empty, &root.join("e.safetensors"), &[("--steps", "2")]);
    assert_eq!(rc, 2);
    assert!(se.contains("empty") && se.contains("no images"), "{se}");
    let (rc, _, se) = train(&root.join("missing"), &root.join("e.safetensors"), &[("--steps", "2")]);
    assert_eq!(rc, 2);
    assert!(se.contains("missing") && se.contains("not a folder"), "{se}");
    // an --init whose tensor has another shape: the tensor is named
    let a = root.join("a.safetensors");
    let (rc, so, se) = train(&data, &a, &[("--steps", "2")]);
    assert_eq!(rc, 0, "{so}{se}");
    let other = FLAGS.replace("--channel_mult 1,2", "--channel_mult 1,1");
    let (d, e, init) = (s(&data), s(&root.join("e.safetensors")), s(&a));
    let (rc, _, se) = ran(&["train", "--data", &d, "--out", &e, "--flags", &other, "--init", &init, "--steps", "2", "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("input_blocks.3.0.in_layers.2.weight") && se.contains("[64, 32, 3, 3]"), "{se}");
    // a diverging run stops at the step whose loss is not finite, naming the term, and keeps
    // the last checkpoint (written after every step here) as it was
    let n = root.join("n.safetensors");
    let (rc, _, se) = train(&data, &n, &[("--steps", "30"), ("--lr", "1e30"), ("--save-every", "1")]);
    assert_eq!(rc, 2);
    assert!(se.contains("the training loss is not finite: mse of sample 0 is NaN") && se.contains("last good checkpoint (step"), "{se}");
    let step: u64 = se.split("step ").nth(1).and_then(|t| t.split(':').next()).and_then(|t| t.parse().ok()).unwrap();
    let log = log_of(&root.join("n.train"));
    assert_eq!(log.len() as u64, step - 1, "{se}");
    assert!(se.contains(&format!("checkpoint (step {})", step - 1)), "{se}");
    assert!(!n.exists());
    // a model the loss cannot train
    let (rc, _, se) = ran(&["train", "--data", &d, "--out", &e, "--flags", &FLAGS.replace("--learn_sigma True", "--learn_sigma False"), "--steps", "2", "--device", "cpu"]);
    assert_eq!(rc, 2);
    assert!(se.contains("--learn_sigma True"), "{se}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// The same two steps on the CUDA kernels (through the CPU emulator, ~12 s a step here) as on
/// the CPU backend: train_step is generic over the backend, so this checks that every op the
/// loop uses exists as a kernel and that the run's plumbing (uploads, EMA download, checkpoint)
/// is backend-independent. Step 2's loss depends on step 1's AdamW update, so it checks that too.
#[test]
fn training_runs_on_the_emulated_cuda_backend_as_on_the_cpu() {
    let root = tmp("emulator");
    let data = make_data(&root);
    let (c, e) = (root.join("c.safetensors"), root.join("e.safetensors"));
    let (rc, so, se) = train(&data, &c, &[("--steps", "2")]);
    assert_eq!(rc, 0, "{so}{se}");
    let (rc, so, se) = train(&data, &e, &[("--steps", "2"), ("--device", "emulator")]);
    assert_eq!(rc, 0, "{so}{se}");
    let (lc, le) = (log_of(&root.join("c.train")), log_of(&root.join("e.train")));
    assert_eq!(lc.len(), 2);
    for (rc, re) in lc.iter().zip(&le) {
        for k in ["mse", "vb", "loss"] {
            let (want, got) = (rc[k].as_f64().unwrap(), re[k].as_f64().unwrap());
            // observed |Δ| ≤ 2e-10 (f32 kernels summing in another order); 1e-7 + 1e-6·|ref|
            assert!((got - want).abs() <= 1e-7 + 1e-6 * want.abs(), "step {} {k}: emulator {got}, cpu {want}", rc["step"]);
        }
    }
    // the model written from the device reads back and runs
    let det = s(&root.join("det"));
    let img = s(&data.join("dots/train/good/1.png"));
    let (rc, so, se) = ran(&["detect", &img, "--model", &s(&e), "--kl-only", "--timesteps", "5", "--out", &det, "--device", "cpu"]);
    assert_eq!(rc, 0, "{so}{se}");
    std::fs::remove_dir_all(&root).unwrap();
}
