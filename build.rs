//! Build script:
//! 1. scans kernels/*.cu for `extern "C" __global__ void NAME(` declarations;
//! 2. builds the CPU emulator of CUDA (kernels/emu) with every kernel file compiled by the host
//!    C++ compiler, plus a generated registry so kernels can be launched by name;
//! 3. compiles every kernel file with NVRTC (see build_nvrtc.rs) to PTX and CUBINs and embeds
//!    them; where NVRTC is absent the sources are embedded for compilation at first use, unless
//!    RAN_REQUIRE_NVRTC=1 asks for a hard failure;
//! 4. generates the Rust side of the kernel contract (build_contract.rs): parameter structs and
//!    launch constants from kernels/contract.cuh, a typed launch function per kernel;
//! 5. records the git commit for `ran info`.
//!
//! It never probes GPU hardware and never needs nvcc.

#[path = "build_contract.rs"]
mod build_contract;
#[path = "build_nvrtc.rs"]
mod build_nvrtc;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A kernel source file and the kernels it declares.
pub struct KernelFile {
    pub stem: String,
    pub path: PathBuf,
    pub source: String,
    pub kernels: Vec<String>,
    /// each kernel's parameter list, the text between its parentheses
    pub params: Vec<String>,
}

fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// (name, parameter list) of each `extern "C" __global__ void [__launch_bounds__(...)] NAME(...)`.
fn kernel_decls(src: &str) -> Vec<(String, String)> {
    let s = strip_comments(src);
    let key = "extern \"C\" __global__ void";
    let mut decls = Vec::new();
    let mut rest = s.as_str();
    while let Some(p) = rest.find(key) {
        let mut t = rest[p + key.len()..].trim_start();
        if let Some(lb) = t.strip_prefix("__launch_bounds__") {
            let close = lb.find(')').expect("unterminated __launch_bounds__");
            t = lb[close + 1..].trim_start();
        }
        let name: String = t.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        assert!(!name.is_empty(), "cannot read a kernel name after `{key}`");
        let after = t[name.len()..].trim_start();
        let close = after.find(')').unwrap_or_else(|| panic!("kernel {name}: unterminated parameter list"));
        assert!(after.starts_with('('), "kernel {name}: want `(` after the name");
        decls.push((name, after[1..close].to_string()));
        rest = &rest[p + key.len()..];
    }
    decls
}

fn scan(dir: &Path) -> Vec<KernelFile> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("kernels/ directory").filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "cu")).collect();
    files.sort();
    let mut all = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for path in files {
        let source = std::fs::read_to_string(&path).expect("read kernel source");
        let (kernels, params): (Vec<String>, Vec<String>) = kernel_decls(&source).into_iter().unzip();
        for k in &kernels {
            assert!(seen.insert(k.clone()), "kernel name {k} is declared twice");
        }
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        all.push(KernelFile { stem, path, source, kernels, params });
    }
    all
}

/// One C++ file per kernel file (kernel symbols renamed so they cannot clash with anything),
/// and the registry table the runtime searches by name.
fn build_emulator(root: &Path, out: &Path, files: &[KernelFile]) {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-fno-strict-aliasing")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unused-function")
        .include(root.join("kernels/emu"))
        .include(root.join("kernels"));
    // A second copy of every kernel, instrumented: GCC's address-sanitizer instrumentation in
    // callback mode calls __asan_{load,store}N_noabort (defined by the runtime, emu_race.inc) on
    // every load and store, for the race detector and preemption points. The runtime uses it
    // only when one of those is on, so ordinary tests keep the plain copy's speed.
    // Not under a Rust sanitizer (cargo fuzz): cc then compiles every C++ file with
    // -fsanitize=address, which excludes -fsanitize=kernel-address, and the real ASan runtime
    // owns the __asan_* hooks. The fuzz targets need no race detector; instrumented() is false.
    let sanitized = std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("sanitizer"));
    if sanitized {
        b.define("EMU_NO_ASAN_HOOKS", None);
    }
    let mut checked = b.clone();
    for f in ["-fsanitize=kernel-address", "--param=asan-instrumentation-with-call-threshold=0", "--param=asan-stack=0", "--param=asan-globals=0"] {
        checked.flag(f);
    }
    // the instrumented copy also counts FLOPs (fmaf) for the traffic accounting (cuda_emu.h)
    checked.define("EMU_CHECKED_BUILD", None);
    b.file(root.join("kernels/emu/emu_runtime.cpp"));
    let mut registry = String::from("#include \"cuda_emu.h\"\n");
    for f in files.iter().filter(|f| !f.kernels.is_empty()) {
        let mut s = String::from("#include \"cuda_emu.h\"\n");
        for k in &f.kernels {
            writeln!(s, "#define {k} emu_kernel_{k}").unwrap();
        }
        writeln!(s, "#include \"{}\"", f.path.display()).unwrap();
        writeln!(s, "extern \"C\" const EmuKernelEntry emu_entries_{}[] = {{", f.stem).unwrap();
        for k in &f.kernels {
            writeln!(s, "  EMU_KERNEL_ENTRY({k}),").unwrap();
        }
        writeln!(s, "}};").unwrap();
        let p = out.join(format!("emu_{}.cpp", f.stem));
        std::fs::write(&p, &s).unwrap();
        b.file(p);
        writeln!(registry, "extern \"C\" const EmuKernelEntry emu_entries_{}[];", f.stem).unwrap();
        if sanitized {
            continue;
        }
        let cs = s.replace("emu_kernel_", "emu_kernel_checked_").replace("emu_entries_", "emu_checked_entries_");
        let cp = out.join(format!("emu_checked_{}.cpp", f.stem));
        std::fs::write(&cp, cs).unwrap();
        checked.file(cp);
        writeln!(registry, "extern \"C\" const EmuKernelEntry emu_checked_entries_{}[];", f.stem).unwrap();
    }
    println!("cargo::rustc-check-cfg=cfg(emu_instrumented)");
    if !sanitized {
        b.objects(checked.compile_intermediates());
        registry.push_str("extern \"C\" const EmuKernelTable emu_kernel_tables_checked[] = {\n");
        for f in files.iter().filter(|f| !f.kernels.is_empty()) {
            writeln!(registry, "  {{emu_checked_entries_{}, {}}},", f.stem, f.kernels.len()).unwrap();
        }
        registry.push_str("  {nullptr, 0}};\n");
        println!("cargo:rustc-cfg=emu_instrumented");
    }
    registry.push_str("extern \"C\" const EmuKernelTable emu_kernel_tables[] = {\n");
    for f in files.iter().filter(|f| !f.kernels.is_empty()) {
        writeln!(registry, "  {{emu_entries_{}, {}}},", f.stem, f.kernels.len()).unwrap();
    }
    registry.push_str("  {nullptr, 0}};\n");
    let rp = out.join("emu_registry.cpp");
    std::fs::write(&rp, registry).unwrap();
    b.file(rp);
    b.compile("ran_cuda_emu");
}

fn git_hash() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown commit".into())
}

/// Where git keeps `p` (HEAD, refs/heads) for this checkout, worktrees included.
fn git_path(p: &str) -> Option<PathBuf> {
    let o = std::process::Command::new("git").args(["rev-parse", "--path-format=absolute", "--git-path", p]).output().ok()?;
    o.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let files = scan(&root.join("kernels"));
    build_emulator(&root, &out, &files);
    build_contract::generate(&root, &out, &files);
    build_nvrtc::compile_and_embed(&root, &out, &files);

    println!("cargo:rustc-env=RAN_GIT_HASH={}", git_hash());
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=build_nvrtc.rs");
    println!("cargo:rerun-if-changed=build_contract.rs");
    // the commit moves: HEAD and the branch refs, wherever git keeps them (in a worktree .git is
    // a file, and a path that does not exist makes cargo rerun this script on every build)
    for p in ["HEAD", "refs/heads"] {
        if let Some(path) = git_path(p).filter(|q| q.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-env-changed=RAN_REQUIRE_NVRTC");
    println!("cargo:rerun-if-env-changed=RAN_NVRTC_LIB");
}
