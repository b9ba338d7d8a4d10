//! The tiny training runs shared by tests/cli_train.rs and tests/cli_train_mixed.rs: the model
//! flags, the generated two-class data set, `ran train` with overridable options, the JSON-lines log.

use serde_json::Value;
use std::path::{Path, PathBuf};

pub const FLAGS: &str = "--image_size 16 --num_channels 32 --num_res_blocks 1 --channel_mult 1,2 --attention_resolutions 2 --num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --class_cond True --learn_sigma True";

pub fn ran(args: &[&str]) -> (i32, String, String) {
    let o = super::ran_command().args(args).output().expect("run ran");
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ran-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two MVTec-style categories of four 20×20 textures each: stripes and dots.
pub fn make_data(root: &Path) -> PathBuf {
    let data = root.join("data");
    for (cat, k0) in [("stripes", 0u32), ("dots", 10)] {
        let dir = data.join(cat).join("train/good");
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..4u32 {
            let img = image::RgbImage::from_fn(20, 20, |x, y| {
                let on = if k0 == 0 { ((x + k) / 3) % 2 == 0 } else { (x + k) % 5 < 2 && y % 5 < 2 };
                let v = if on { 210u8 } else { 50 };
                image::Rgb([v, v / 2, 255 - v])
            });
            img.save(dir.join(format!("{k}.png"))).unwrap();
        }
    }
    data
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `ran train` on the tiny model with 40-step annealing; `extra` (option, value) pairs add
/// options or replace these defaults (clap refuses an option given twice).
pub fn train(data: &Path, out: &Path, extra: &[(&str, &str)]) -> (i32, String, String) {
    let (d, o) = (s(data), s(out));
    let mut opts: Vec<(&str, &str)> = vec![("--data", &d), ("--out", &o), ("--flags", FLAGS), ("--lr", "1e-3"), ("--lr-anneal-steps", "40"), ("--save-every", "10"), ("--device", "cpu")];
    for &(k, v) in extra {
        match opts.iter_mut().find(|(k2, _)| *k2 == k) {
            Some(slot) => slot.1 = v,
            None => opts.push((k, v)),
        }
    }
    let mut args = vec!["train"];
    for (k, v) in opts {
        args.extend([k, v]);
    }
    ran(&args)
}

pub fn log_of(run_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(run_dir.join("log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The log without the wall times (the one field that differs between identical runs).
pub fn without_seconds(log: &[Value]) -> Vec<Value> {
    log.iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("seconds");
            r
        })
        .collect()
}

pub fn losses(log: &[Value]) -> Vec<f64> {
    log.iter().map(|r| r["loss"].as_f64().unwrap()).collect()
}
