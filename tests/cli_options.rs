//! Closed options are refused while the command line is parsed — clap's error naming the option
//! and its values, exit status 2, before any model is read or device probed — and the demo fills
//! in only the options the user left unset.

#[path = "common/paths.rs"]
mod paths;

use std::time::{Duration, Instant};

fn ran(args: &[&str]) -> (i32, String, String, Duration) {
    let t = Instant::now();
    let o = paths::ran_command().args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned(), t.elapsed())
}

/// A bad value: exit 2 with clap's message naming the value and the option, nothing on stdout
/// (the demo announces itself there before it loads anything), and no device probe.
fn refused(args: &[&str], value: &str, option: &str) -> String {
    let (rc, so, se, took) = ran(args);
    assert_eq!(rc, 2, "{args:?}: {so}{se}");
    assert!(se.contains(&format!("invalid value '{value}'")) && se.contains(option), "{args:?}: {se}");
    assert!(so.is_empty(), "{args:?} ran before refusing: {so}");
    assert!(!se.contains("no usable GPU") && !se.contains("panicked"), "{args:?}: {se}");
    // parsing only: far below the demo's model load and scoring (seconds)
    assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    se
}

#[test]
fn closed_options_are_refused_at_parse_time() {
    let se = refused(&["detect", "--demo", "--ensemble", "bogus", "--device", "cpu"], "bogus", "--ensemble");
    assert!(se.contains("weighted") && se.contains("sum") && se.contains("calibrated"), "the error lists the choices: {se}");
    // verify takes the same options and refuses the same typos (it used to score `bogus` as weighted)
    refused(&["verify", "--model", "m.safetensors", "--reference", "r.safetensors", "--ensemble", "bogus"], "bogus", "--ensemble");
    refused(&["verify", "--model", "m.safetensors", "--reference", "r.safetensors", "--feature-timestep", "tua"], "tua", "--feature-timestep");
    refused(&["detect", "--demo", "--feature-timestep", "tua"], "tua", "--feature-timestep");
    refused(&["eval", "--demo", "--device", "gpu"], "gpu", "--device");
    refused(&["detect", "--demo", "--device", "cuda:x"], "cuda:x", "--device");
    refused(&["detect", "--demo", "--range", "3,2"], "3,2", "--range");
    refused(&["detect", "--demo", "--threshold", "high"], "high", "--threshold");
    refused(&["detect", "--demo", "--effnet-arch", "efficientnet-b9"], "efficientnet-b9", "--effnet-arch");
    refused(&["eval", "--demo", "--pro-variant", "mvtech"], "mvtech", "--pro-variant");
    refused(&["detect", "--demo", "--max-pixels", "0"], "0", "--max-pixels");
    refused(&["detect", "--demo", "--max-pixels", "64Q"], "64Q", "--max-pixels");
    refused(&["--max-pixels", "1.5M", "detect", "--demo"], "1.5M", "--max-pixels");
    refused(&["eval", "--demo", "--shard", "2/2"], "2/2", "--shard");
    refused(&["metrics", "--input", "x.safetensors", "--pro-variant", "official"], "official", "--pro-variant");
    refused(&["convert", "--checkpoint", "x.pt", "--flags", "--image_size 16", "--out", "y", "--dtype", "f64"], "f64", "--dtype");
    // PaDiM fits are stored in f32 or f16 only
    refused(&["fit-padim", "--train", "d", "--backbone", "b.pth", "--out", "o", "--dtype", "bf16"], "bf16", "--dtype");
    refused(&["fit-padim", "--train", "d", "--backbone", "b.pth", "--out", "o", "--arch", "resnet19"], "resnet19", "--arch");
    refused(&["reconstruct", "--demo", "--device", "tpu"], "tpu", "--device");
    // α outside [0, 1] or not a number (NaN would write null scores and skew eval's metrics)
    for bad in ["nan", "inf", "-1", "2", "x"] {
        refused(&["detect", "--demo", "--alpha", bad], bad, "--alpha");
    }
    // the valid spellings still parse: cuda:N is open-ended (this machine may have no GPU: any exit but a parse error)
    let (rc, _, se, _) = ran(&["detect", "--demo", "--device", "cuda:3", "--ensemble", "calibrated", "/nonexistent.png"]);
    assert!(!se.contains("invalid value"), "{rc}: {se}");
}

/// The commands that run a model, each with the arguments it needs to reach its backend.
const MODEL_COMMANDS: &[&[&str]] = &[
    &["detect", "--demo"],
    &["eval", "--demo"],
    &["verify", "--model", "m.safetensors", "--reference", "r.safetensors"],
    &["calibrate", "--demo"],
    &["serve", "--demo"],
    &["fit-padim", "--train", "d", "--backbone", "b.pth", "--out", "o"],
    &["reconstruct", "--demo"],
    &["train", "--data", "d", "--out", "o"],
    &["bench", "unet"],
    &["bench", "effnet"],
    &["bench", "wrn50-grad"],
    &["bench", "detect"],
    &["bench", "conv"],
    &["bench", "train"],
    &["bench", "attention"],
];

/// Catches: a model command without `--precision`, or one that takes any string (a typo would
/// run in another precision than asked, or fail late). Every command with a --device is listed
/// (src/cli/mod.rs checks that through clap, so a new command cannot be left out).
#[test]
fn every_model_command_takes_precision_and_refuses_a_bad_one() {
    for cmd in MODEL_COMMANDS {
        let args: Vec<&str> = cmd.iter().copied().chain(["--precision", "fp8"]).collect();
        let se = refused(&args, "fp8", "--precision");
        assert!(se.contains("f32") && se.contains("tf32") && se.contains("bf16") && se.contains("f16"), "{cmd:?}: the error lists the choices: {se}");
        // each of the four spellings parses (--help stops there, after the value is taken)
        for p in ["f32", "tf32", "bf16", "f16", "BF16"] {
            let args: Vec<&str> = cmd.iter().copied().chain(["--precision", p, "--help"]).collect();
            let (rc, so, se, _) = ran(&args);
            assert_eq!(rc, 0, "{args:?}: {so}{se}");
            assert!(so.contains("--precision"), "{args:?}: no --precision in the help");
        }
    }
}

/// On the CPU backend another precision is its proxy of the kernels' rounding, with a one-line
/// notice, not an error (bench's JSON records the precision it ran at); f32 says nothing; the
/// emulator runs the one asked for.
#[test]
fn the_cpu_backend_notes_that_it_emulates_another_precision() {
    let bench = |device: &str, p: &str| {
        let (rc, so, se, _) = ran(&["bench", "conv", "--shape", "8x6x6", "--iters", "1", "--warmup", "0", "--quiet", "--json", "--device", device, "--precision", p]);
        assert_eq!(rc, 0, "{device} {p}: {so}{se}");
        let json: serde_json::Value = serde_json::from_str(so.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {so}"));
        (json["precision"].as_str().unwrap_or("").to_string(), se)
    };
    let (p, se) = bench("cpu", "bf16");
    assert_eq!(p, "bf16");
    let notes: Vec<&str> = se.lines().filter(|l| l.starts_with("note: ")).collect();
    assert_eq!(notes.len(), 1, "{se}");
    assert!(notes[0].starts_with("note: CPU emulation of bf16 operands (f32 accumulate)"), "{se}");
    let (p, se) = bench("cpu", "f32");
    assert_eq!(p, "f32");
    assert!(!se.contains("note"), "{se}");
    let (p, se) = bench("emulator", "tf32");
    assert_eq!(p, "tf32");
    assert!(!se.contains("note"), "{se}");
}

/// reconstruct --demo with an input that does not exist: the model and fit are read, the image
/// is skipped (exit 1), and reconstruct.json records the settings the run would have used,
/// without a single iteration.
fn demo_reconstruct_settings(extra: &[&str], name: &str) -> serde_json::Value {
    let out = std::env::temp_dir().join(format!("ran-cli-options-{}-{name}", std::process::id()));
    let o = out.display().to_string();
    let mut args = vec!["reconstruct", "--demo", "/nonexistent/brick/000.png", "--device", "cpu", "--out", o.as_str()];
    args.extend_from_slice(extra);
    let (rc, so, se, _) = ran(&args);
    assert_eq!(rc, 1, "{so}{se}");
    assert!(se.contains("/nonexistent/brick/000.png"), "{se}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("reconstruct.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    json["settings"].clone()
}

#[test]
fn the_demo_keeps_what_the_user_set_even_when_it_equals_the_default() {
    // the demo's own defaults where nothing is given
    let s = demo_reconstruct_settings(&[], "unset");
    assert_eq!((s["iters"].as_u64(), s["every"].as_u64()), (Some(20), Some(4)), "{s}");
    // an explicit --iters 100 / --every 10 (the non-demo defaults) used to be taken for "unset"
    let s = demo_reconstruct_settings(&["--iters", "100", "--every", "10"], "explicit");
    assert_eq!((s["iters"].as_u64(), s["every"].as_u64()), (Some(100), Some(10)), "{s}");
}

/// `--max-pixels` reaches every image a command reads: the demo's images (256×256 and larger)
/// are refused by name under a 1000-pixel limit, before decoding, and the run says so; the same
/// flag before the command name works too (it is global).
#[test]
fn max_pixels_limits_every_image_a_command_reads() {
    for args in [&["detect", "--demo", "--device", "cpu", "--max-pixels", "1K", "--out"][..], &["--max-pixels", "1000", "detect", "--demo", "--device", "cpu", "--out"][..]] {
        let out = std::env::temp_dir().join(format!("ran-maxpx-{}-{}", std::process::id(), args[0]));
        let mut a: Vec<&str> = args.to_vec();
        let o = out.display().to_string();
        a.push(&o);
        let (rc, so, se, _) = ran(&a);
        assert_ne!(rc, 0, "{a:?}: every image is over the limit: {so}{se}");
        assert!(se.contains("exceeds the limit of 1000 (--max-pixels)") && se.contains(".png"), "{a:?}: {se}");
        assert!(!se.contains("panicked"), "{se}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
