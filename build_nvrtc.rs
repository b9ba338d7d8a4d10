//! NVRTC step of build.rs: compiles every kernels/*.cu to PTX (compute_80, JIT-able by any newer
//! driver) and to CUBINs for sm_80, sm_86, sm_89 and sm_90, and embeds them; keeps ptxas's
//! register / shared-memory / spill report for sm_90. libnvrtc is loaded dynamically
//! (RAN_NVRTC_LIB = the .so or its folder; else the system's libnvrtc.so.12; else the folder that
//! .ci/run installs the PyPI wheel into). No NVRTC: sources only, compiled at first use on the
//! GPU host — unless RAN_REQUIRE_NVRTC=1, which turns any NVRTC absence or error into a build failure.

use super::KernelFile;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const PTX_ARCH: &str = "compute_80";
pub const CUBIN_ARCHS: &[u32] = &[80, 86, 89, 90];
pub const REPORT_ARCH: u32 = 90;

type Prog = *mut c_void;
type Create = unsafe extern "C" fn(*mut Prog, *const c_char, *const c_char, c_int, *const *const c_char, *const *const c_char) -> c_int;
type Compile = unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int;
type GetSize = unsafe extern "C" fn(Prog, *mut usize) -> c_int;
type GetData = unsafe extern "C" fn(Prog, *mut c_char) -> c_int;
type Destroy = unsafe extern "C" fn(*mut Prog) -> c_int;
type Version = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;

struct Nvrtc {
    lib: libloading::Library,
    path: String,
}

fn candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = std::env::var("RAN_NVRTC_LIB") {
        let p = PathBuf::from(p);
        v.push(if p.is_dir() { p.join("libnvrtc.so.12") } else { p });
    }
    v.push(PathBuf::from("libnvrtc.so.12"));
    v.push(PathBuf::from("libnvrtc.so"));
    if let Ok(home) = std::env::var("HOME") {
        v.push(PathBuf::from(home).join(".cache/ran/nvrtc-12.9.86/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"));
    }
    v
}

fn load() -> Result<Nvrtc, String> {
    let mut errs = Vec::new();
    for c in candidates() {
        // SAFETY: loading NVRTC runs its initialisers only; symbols are used with their C signatures.
        match unsafe { libloading::Library::new(&c) } {
            Ok(lib) => return Ok(Nvrtc { lib, path: c.display().to_string() }),
            Err(e) => errs.push(format!("{}: {e}", c.display())),
        }
    }
    Err(errs.join("; "))
}

/// What one compile produced: the binary (PTX text or CUBIN) and NVRTC's log.
struct Output {
    data: Vec<u8>,
    log: String,
}

impl Nvrtc {
    fn version(&self) -> String {
        unsafe {
            let Ok(f) = self.lib.get::<Version>(b"nvrtcVersion") else { return "?".into() };
            let (mut a, mut b) = (0, 0);
            f(&mut a, &mut b);
            format!("{a}.{b}")
        }
    }

    /// Compiles one source for `arch` ("compute_80" → PTX, "sm_90" → CUBIN).
    fn compile(&self, name: &str, src: &str, headers: &[(String, String)], arch: &str, extra: &[&str]) -> Result<Output, String> {
        unsafe {
            let sym = |n: &[u8]| -> Result<*const (), String> { self.lib.get::<*const ()>(n).map(|s| *s).map_err(|e| format!("NVRTC lacks {}: {e}", String::from_utf8_lossy(n))) };
            let create: Create = std::mem::transmute(sym(b"nvrtcCreateProgram")?);
            let compile: Compile = std::mem::transmute(sym(b"nvrtcCompileProgram")?);
            let log_size: GetSize = std::mem::transmute(sym(b"nvrtcGetProgramLogSize")?);
            let log_get: GetData = std::mem::transmute(sym(b"nvrtcGetProgramLog")?);
            let destroy: Destroy = std::mem::transmute(sym(b"nvrtcDestroyProgram")?);
            let ptx = arch.starts_with("compute_");
            let (size_f, data_f): (GetSize, GetData) = if ptx {
                (std::mem::transmute::<*const (), GetSize>(sym(b"nvrtcGetPTXSize")?), std::mem::transmute::<*const (), GetData>(sym(b"nvrtcGetPTX")?))
            } else {
                (std::mem::transmute::<*const (), GetSize>(sym(b"nvrtcGetCUBINSize")?), std::mem::transmute::<*const (), GetData>(sym(b"nvrtcGetCUBIN")?))
            };
            let c_src = CString::new(src).map_err(|e| e.to_string())?;
            let c_name = CString::new(name).unwrap();
            let h_src: Vec<CString> = headers.iter().map(|(_, s)| CString::new(s.as_str()).unwrap()).collect();
            let h_name: Vec<CString> = headers.iter().map(|(n, _)| CString::new(n.as_str()).unwrap()).collect();
            let hs: Vec<*const c_char> = h_src.iter().map(|c| c.as_ptr()).collect();
            let hn: Vec<*const c_char> = h_name.iter().map(|c| c.as_ptr()).collect();
            let mut prog: Prog = std::ptr::null_mut();
            let rc = create(&mut prog, c_src.as_ptr(), c_name.as_ptr(), hs.len() as c_int, hs.as_ptr(), hn.as_ptr());
            if rc != 0 {
                return Err(format!("nvrtcCreateProgram failed ({rc})"));
            }
            let mut opts: Vec<CString> = vec![CString::new(format!("--gpu-architecture={arch}")).unwrap(), CString::new("-std=c++17").unwrap()];
            opts.extend(extra.iter().map(|o| CString::new(*o).unwrap()));
            let op: Vec<*const c_char> = opts.iter().map(|c| c.as_ptr()).collect();
            let rc = compile(prog, op.len() as c_int, op.as_ptr());
            let mut n = 0usize;
            log_size(prog, &mut n);
            let mut log = vec![0u8; n.max(1)];
            log_get(prog, log.as_mut_ptr() as *mut c_char);
            let log = CStr::from_bytes_until_nul(&log).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
            if rc != 0 {
                destroy(&mut prog);
                return Err(format!("{name} for {arch}:\n{log}"));
            }
            let mut n = 0usize;
            size_f(prog, &mut n);
            let mut data = vec![0u8; n];
            data_f(prog, data.as_mut_ptr() as *mut c_char);
            destroy(&mut prog);
            if ptx {
                while data.last() == Some(&0) {
                    data.pop();
                }
            }
            Ok(Output { data, log })
        }
    }
}

fn require() -> bool {
    std::env::var("RAN_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

/// Compiled artefacts of one kernel file: (ptx path, [(sm, cubin path)], ptxas report).
struct Built {
    ptx: PathBuf,
    cubins: Vec<(u32, PathBuf)>,
    report: String,
}

fn build_file(nv: &Nvrtc, f: &KernelFile, headers: &[(String, String)], out: &Path) -> Result<Built, String> {
    let name = format!("{}.cu", f.stem);
    let ptx = nv.compile(&name, &f.source, headers, PTX_ARCH, &[])?;
    let ptx_path = out.join(format!("{}.{PTX_ARCH}.ptx", f.stem));
    std::fs::write(&ptx_path, &ptx.data).map_err(|e| e.to_string())?;
    let mut cubins = Vec::new();
    let mut report = String::new();
    for &sm in CUBIN_ARCHS {
        let extra: &[&str] = if sm == REPORT_ARCH { &["--ptxas-options=-v"] } else { &[] };
        let o = nv.compile(&name, &f.source, headers, &format!("sm_{sm}"), extra)?;
        let p = out.join(format!("{}.sm_{sm}.cubin", f.stem));
        std::fs::write(&p, &o.data).map_err(|e| e.to_string())?;
        cubins.push((sm, p));
        if sm == REPORT_ARCH {
            report = o.log;
        }
    }
    Ok(Built { ptx: ptx_path, cubins, report })
}

pub fn compile_and_embed(root: &Path, out: &Path, files: &[KernelFile]) {
    println!("cargo::rustc-check-cfg=cfg(nvrtc_ptx)");
    let headers: Vec<(String, String)> = super::build_contract::header_names(&root.join("kernels"))
        .into_iter()
        .map(|h| {
            let text = std::fs::read_to_string(root.join("kernels").join(&h)).expect("kernel header");
            (h, text)
        })
        .collect();
    let mut built: Vec<Option<Built>> = files.iter().map(|_| None).collect();
    let status;
    match load() {
        Err(e) => {
            if require() {
                panic!("RAN_REQUIRE_NVRTC=1 but libnvrtc could not be loaded ({e}); install the PyPI wheel nvidia-cuda-nvrtc-cu12 and set RAN_NVRTC_LIB");
            }
            println!("cargo:warning=NVRTC not found: kernels are embedded as sources and compiled on the GPU host at first use");
            status = format!("NVRTC not found at build time ({e}); kernels embedded as CUDA sources");
        }
        Ok(nv) => {
            let results: Vec<Result<Built, String>> = std::thread::scope(|s| {
                let hs = &headers;
                let nvr = &nv;
                let handles: Vec<_> = files.iter().map(|f| s.spawn(move || build_file(nvr, f, hs, out))).collect();
                handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("NVRTC thread panicked".into()))).collect()
            });
            let mut errors = Vec::new();
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(b) => built[i] = Some(b),
                    Err(e) => errors.push(e),
                }
            }
            if !errors.is_empty() {
                if require() {
                    panic!("NVRTC failed to compile kernels (RAN_REQUIRE_NVRTC=1):\n{}", errors.join("\n"));
                }
                for e in &errors {
                    println!("cargo:warning=NVRTC: {}", e.lines().next().unwrap_or(""));
                }
            }
            status = format!("NVRTC {} from {}: PTX {PTX_ARCH}, CUBIN sm_{}", nv.version(), nv.path, CUBIN_ARCHS.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", sm_"));
            if built.iter().all(Option::is_some) {
                // every file has PTX: tests that read it (tests/tensor_core_ptx.rs) can run
                println!("cargo:rustc-cfg=nvrtc_ptx");
            }
        }
    }

    let mut s = String::from("// generated by build.rs\n");
    writeln!(s, "pub static NVRTC_STATUS: &str = {status:?};").unwrap();
    writeln!(s, "pub static KERNEL_FILES: &[KernelSource] = &[").unwrap();
    let mut report = String::new();
    for (f, b) in files.iter().zip(&built) {
        let (ptx, cubins) = match b {
            Some(b) => (
                format!("Some(include_str!({:?}))", b.ptx.display().to_string()),
                format!("&[{}]", b.cubins.iter().map(|(sm, p)| format!("({sm}, include_bytes!({:?}))", p.display().to_string())).collect::<Vec<_>>().join(", ")),
            ),
            None => ("None".into(), "&[]".into()),
        };
        writeln!(s, "    KernelSource {{ file: {:?}, kernels: &{:?}, source: include_str!({:?}), ptx: {ptx}, cubins: {cubins} }},", f.stem, f.kernels, f.path.display().to_string()).unwrap();
        if let Some(b) = b {
            writeln!(report, "== {}.cu (sm_{REPORT_ARCH})", f.stem).unwrap();
            report.push_str(b.report.trim_end());
            report.push('\n');
        }
    }
    writeln!(s, "];").unwrap();
    // what the driver checks at launch and the emulator must check too (kernels/emu): each
    // kernel's static __shared__ bytes and registers per thread, from ptxas's sm_90 report
    writeln!(s, "pub static KERNEL_RESOURCES: &[KernelResources] = &[").unwrap();
    for b in built.iter().flatten() {
        let ptx = std::fs::read_to_string(&b.ptx).unwrap_or_default();
        let bounds = parse_launch_bounds(&ptx);
        for (name, regs, smem) in parse_resources(&b.report) {
            let max = bounds.iter().find(|(k, _)| *k == name).map_or(0, |(_, t)| *t);
            writeln!(s, "    KernelResources {{ kernel: {name:?}, registers: {regs}, static_smem: {smem}, max_threads: {max} }},").unwrap();
        }
    }
    writeln!(s, "];").unwrap();
    std::fs::write(out.join("ptxas_report.txt"), &report).unwrap();
    writeln!(s, "pub static PTXAS_REPORT: &str = include_str!({:?});", out.join("ptxas_report.txt").display().to_string()).unwrap();
    std::fs::write(out.join("kernels_embedded.rs"), s).unwrap();
}

/// (kernel, registers per thread, static shared-memory bytes) from a `--ptxas-options=-v` log:
/// "Compiling entry function 'k' for 'sm_90'" then "Used R registers, ..., S bytes smem" (the smem
/// part absent when it is 0).
fn parse_resources(report: &str) -> Vec<(String, u32, u32)> {
    let mut v = Vec::new();
    let mut entry: Option<String> = None;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            entry = rest.split('\'').next().map(str::to_string);
        } else if let (Some(_), Some(used)) = (&entry, line.split("Used ").nth(1)) {
            let num_before = |tag: &str| -> u32 { used.split(',').find_map(|part| part.trim().strip_suffix(tag).and_then(|n| n.trim().split(' ').next_back()?.parse().ok())).unwrap_or(0) };
            let regs = used.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
            v.push((entry.take().unwrap(), regs, num_before("bytes smem")));
        }
    }
    v
}

/// (kernel, threads) of every entry with `__launch_bounds__`: PTX's `.maxntid x, y, z` between
/// the `.entry name(` line and the body's `{`. A launch of more threads fails on the device.
fn parse_launch_bounds(ptx: &str) -> Vec<(String, u32)> {
    let mut v = Vec::new();
    let mut entry: Option<String> = None;
    for line in ptx.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix(".visible .entry ").or_else(|| l.strip_prefix(".entry ")) {
            entry = rest.split('(').next().map(|n| n.trim().to_string());
        } else if let (Some(_), Some(dims)) = (&entry, l.strip_prefix(".maxntid ")) {
            let t: u32 = dims.split(',').filter_map(|d| d.trim().parse::<u32>().ok()).product();
            v.push((entry.take().unwrap(), t));
        } else if l.starts_with('{') {
            entry = None;
        }
    }
    v
}
