//! The MVTec/BTAD scanner and the directory walk on trees the input describes: folders, files,
//! FIFOs and symlinks (cycles included) under a scratch root. Every call must return, with the
//! walk listing each real file once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};

const NAMES: [&str; 12] = ["carpet", "01", "test", "train", "good", "ok", "ko", "cut", "ground_truth", "000.png", "000_mask.png", "a.bmp"];

fuzz_target!(|data: &[u8]| {
    let root = std::env::temp_dir().join(format!("ran-fuzz-tree-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("root");
    // each 3 bytes: an operation, a path (up to 3 names from NAMES) and a link target
    let mut made: Vec<PathBuf> = vec![root.clone()];
    for op in data.chunks_exact(3).take(64) {
        let parent = made[op[1] as usize % made.len()].clone();
        let p = parent.join(NAMES[op[2] as usize % NAMES.len()]);
        let ok = match op[0] % 5 {
            0 | 1 => std::fs::create_dir_all(&p).is_ok(),
            // new files only: writing to an existing name could open a FIFO made earlier and
            // block this harness (ran's readers never open one)
            2 => p.symlink_metadata().is_err() && std::fs::write(&p, [op[1], op[2]]).is_ok(),
            3 => {
                let target = &made[op[2] as usize % made.len()];
                std::os::unix::fs::symlink(target, &p).is_ok()
            }
            _ => std::process::Command::new("mkfifo").arg(&p).status().map(|s| s.success()).unwrap_or(false),
        };
        if ok && p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            made.push(p);
        }
    }
    if let Ok((layout, cats)) = ran::eval::datasets::categories(&root) {
        for c in cats {
            let _ = ran::eval::datasets::test_set(&root, &c, layout);
            let _ = ran::eval::datasets::train_images(&root, &c, layout, 3);
        }
    }
    let all = |_: &Path| true;
    if let Ok(files) = ran::io::files::walk_files(&root, &all) {
        // each entry of each real directory at most once, however many links lead there
        let mut seen: Vec<(PathBuf, std::ffi::OsString)> = files
            .iter()
            .map(|f| (std::fs::canonicalize(f.parent().expect("under root")).expect("listed dir exists"), f.file_name().expect("a name").to_os_string()))
            .collect();
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n, "a real directory was walked twice");
    }
});
