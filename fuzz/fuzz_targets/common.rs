// Shared by the targets (included with `include!`): a scratch file per process, rewritten with
// each input, since the readers take paths (they check and memory-map real files).

#[allow(dead_code)]
fn scratch_file(ext: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ran-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(format!("input.{ext}"));
    std::fs::write(&p, data).expect("write scratch file");
    p
}
