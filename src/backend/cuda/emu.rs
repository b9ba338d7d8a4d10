//! The CPU emulator of CUDA as a `Device`: buffers are host allocations whose addresses serve as
//! device pointers, and launches go to `emu_launch` (kernels/emu/emu_runtime.cpp), which runs the
//! same .cu kernels compiled by the host C++ compiler, one fiber per CUDA thread.
//! Buffers come from the runtime's `emu_alloc`: each ends at a guard page, so an access past the
//! end (or far before the start) is a launch error naming the kernel, argument, element and size.

use super::device::{Arg, Device, LaunchCfg, Node};
use crate::{Error, Result};
use std::ffi::{c_char, c_void, CStr, CString};

extern "C" {
    fn emu_launch(name: *const c_char, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, smem: u32, args: *mut *mut c_void) -> i32;
    fn emu_last_error() -> *const c_char;
    fn emu_set_schedule(mode: i32, seed: u64);
    fn emu_set_race_check(on: i32) -> i32;
    fn emu_hook_calls() -> u64;
    fn emu_instrumented() -> i32;
    fn emu_func_set_max_dynamic_smem(name: *const c_char, bytes: u32) -> i32;
    fn emu_set_kernel_resources(name: *const c_char, static_smem: u32, regs: u32, max_threads: u32) -> i32;
    fn emu_static_smem(name: *const c_char) -> u32;
    fn emu_set_traffic(on: i32, max_blocks: u32);
    fn emu_traffic_take(out: *mut c_void, cap: u32) -> u32;
    fn emu_alloc(bytes: usize) -> *mut c_void;
    fn emu_free(p: *mut c_void);
}

/// Order in which a block's threads run between barriers. Forward order hides races in which a
/// later thread reads an earlier one's write; reverse and random orders expose them. `Preempt`
/// is a random order that also switches threads at shared-memory accesses (one in four), so
/// orders inside a barrier interval vary as well (needs instrumented kernels, see
/// `instrumented`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Forward,
    Reverse,
    Random(u64),
    Preempt(u64),
}

impl Schedule {
    /// The schedules the suite runs under: forward, reverse, random(seed).
    pub fn all(seed: u64) -> [Schedule; 3] {
        [Schedule::Forward, Schedule::Reverse, Schedule::Random(seed)]
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;
    /// `forward`, `reverse`, `random:SEED`, `preempt:SEED`
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let seed = |v: &str| v.parse::<u64>().map_err(|_| format!("schedule `{s}`: the seed must be an unsigned integer"));
        match s.split_once(':') {
            None if s == "forward" => Ok(Schedule::Forward),
            None if s == "reverse" => Ok(Schedule::Reverse),
            Some(("random", v)) => Ok(Schedule::Random(seed(v)?)),
            Some(("preempt", v)) => Ok(Schedule::Preempt(seed(v)?)),
            _ => Err(format!("schedule `{s}`: expected forward, reverse, random:SEED or preempt:SEED")),
        }
    }
}

/// The schedule named by RAN_EMU_SCHEDULE, if set: .ci/run reruns the model-level emulator tests
/// under reverse and random orders with it (tests that set a schedule themselves keep theirs).
pub fn schedule_from_env() -> std::result::Result<Option<Schedule>, String> {
    match std::env::var("RAN_EMU_SCHEDULE") {
        Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|e| format!("RAN_EMU_SCHEDULE: {e}")),
        _ => Ok(None),
    }
}

/// Sets the schedule of every later emulator launch in this process.
pub fn set_schedule(s: Schedule) {
    let (mode, seed) = match s {
        Schedule::Forward => (0, 1),
        Schedule::Reverse => (1, 1),
        Schedule::Random(seed) => (2, seed),
        Schedule::Preempt(seed) => (3, seed),
    };
    // SAFETY: plain FFI call; the runtime guards its configuration with a mutex.
    unsafe { emu_set_schedule(mode, seed) }
}

/// Turns the race detector (shared memory per barrier interval, global write-write across
/// blocks) on or off for later launches; returns the previous setting. Default: off unless
/// EMU_RACE=1 (it slows kernels 2–10×, see kernels/README.md). Works only where `instrumented()`.
pub fn set_race_check(on: bool) -> bool {
    // SAFETY: plain FFI call; the runtime guards its configuration with a mutex.
    unsafe { emu_set_race_check(on as i32) > 0 }
}

/// Whether build.rs built the instrumented copy of the kernels (race detector, preemption points).
pub fn instrumented() -> bool {
    // SAFETY: plain FFI call.
    unsafe { emu_instrumented() != 0 }
}

/// Kernel memory accesses seen by the instrumentation hooks so far (a probe that they run).
pub fn hook_calls() -> u64 {
    // SAFETY: plain FFI call reading an atomic counter.
    unsafe { emu_hook_calls() }
}

/// Most pointer arguments a traffic record tracks (kTrafficArgs in emu_runtime.cpp).
const TRAFFIC_ARGS: usize = 24;

#[repr(C)]
#[derive(Clone, Copy)]
struct RawTrafficArg {
    index: u32,
    elem: u32,
    buf_bytes: u64,
    read: u64,
    written: u64,
}

/// The runtime's record of one counted launch (TrafficRecord in kernels/emu/emu_traffic.inc).
#[repr(C)]
#[derive(Clone, Copy)]
struct RawTrafficRecord {
    name: *const c_char,
    grid: [u32; 3],
    block: [u32; 3],
    nblocks: u32,
    sampled: u32,
    flops: u64,
    mma_flops: u64,
    nargs: u32,
    pad: u32,
    args: [RawTrafficArg; TRAFFIC_ARGS],
}

/// Global-memory bytes one pointer argument's buffer saw in the sampled blocks of a launch.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgTraffic {
    /// parameter position in the kernel's signature
    pub index: u32,
    /// bytes from the pointer to the end of its buffer (the tensor's size for a whole buffer)
    pub buf_bytes: u64,
    pub read: u64,
    pub written: u64,
}

/// One launch as the traffic accounting saw it: exact counts of the blocks that ran (`sampled` of
/// `nblocks`); `scale()` turns them into the whole grid's estimate.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTraffic {
    pub kernel: String,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub nblocks: u32,
    pub sampled: u32,
    /// fmaf × 2 in the sampled blocks (f32 FMA units)
    pub fma_flops: u64,
    /// mma.sync × 2·m·n·k in the sampled blocks (tensor cores)
    pub mma_flops: u64,
    pub args: Vec<ArgTraffic>,
}

impl LaunchTraffic {
    /// Blocks in the grid per block that ran.
    pub fn scale(&self) -> f64 {
        self.nblocks as f64 / self.sampled.max(1) as f64
    }
    pub fn read(&self) -> u64 {
        self.args.iter().map(|a| a.read).sum()
    }
    pub fn written(&self) -> u64 {
        self.args.iter().map(|a| a.written).sum()
    }
    /// The argument at parameter position `index`, if it is a pointer.
    pub fn arg(&self, index: u32) -> Option<&ArgTraffic> {
        self.args.iter().find(|a| a.index == index)
    }
}

/// Traffic accounting for later launches: on, each launch runs the instrumented kernels (every
/// load and store seen), at most `max_blocks` sampled blocks of its grid (0: all; the outputs of a
/// sampled launch are incomplete), and leaves a record for `take_traffic`. Works only where
/// `instrumented()`.
pub fn set_traffic(on: bool, max_blocks: u32) {
    // SAFETY: plain FFI call; the runtime guards its configuration with a mutex.
    unsafe { emu_set_traffic(on as i32, max_blocks) }
}

/// The records of the launches counted since the last call, oldest first.
pub fn take_traffic() -> Vec<LaunchTraffic> {
    // SAFETY: cap 0 only reads the log's length.
    let n = unsafe { emu_traffic_take(std::ptr::null_mut(), 0) } as usize;
    let zero = RawTrafficArg { index: 0, elem: 0, buf_bytes: 0, read: 0, written: 0 };
    let mut raw = vec![RawTrafficRecord { name: std::ptr::null(), grid: [0; 3], block: [0; 3], nblocks: 0, sampled: 0, flops: 0, mma_flops: 0, nargs: 0, pad: 0, args: [zero; TRAFFIC_ARGS] }; n];
    // SAFETY: `raw` holds `n` records of the runtime's layout; the runtime copies at most `n`.
    let got = unsafe { emu_traffic_take(raw.as_mut_ptr() as *mut c_void, n as u32) } as usize;
    raw.truncate(got);
    raw.iter()
        .map(|r| LaunchTraffic {
            // SAFETY: the name is the registry's static, NUL-terminated kernel name.
            kernel: unsafe { CStr::from_ptr(r.name) }.to_string_lossy().trim_start_matches("emu_kernel_checked_").trim_start_matches("emu_kernel_").to_string(),
            grid: (r.grid[0], r.grid[1], r.grid[2]),
            block: (r.block[0], r.block[1], r.block[2]),
            nblocks: r.nblocks,
            sampled: r.sampled,
            fma_flops: r.flops,
            mma_flops: r.mma_flops,
            args: r.args[..(r.nargs as usize).min(TRAFFIC_ARGS)].iter().map(|a| ArgTraffic { index: a.index, buf_bytes: a.buf_bytes, read: a.read, written: a.written }).collect(),
        })
        .collect()
}

/// A host allocation standing in for device memory, between guard pages (its start is only as
/// aligned as its size: the end must touch the guard page). Kernels write through its address
/// while Rust holds only shared references, like device memory behind a CUdeviceptr.
pub struct EmuBuf {
    ptr: *mut u8,
    bytes: usize,
}

// SAFETY: the buffer is plain memory; concurrent access is ordered by the (synchronous,
// serialised) launches exactly as on a device with one stream.
unsafe impl Send for EmuBuf {}
unsafe impl Sync for EmuBuf {}

/// What a fresh or reused buffer holds: f32 quiet NaN (0x7FC00000) in every whole word and 0xFF
/// in a trailing partial one, so any value a kernel reads without having written it is NaN.
pub const FRESH_WORD: u32 = 0x7FC0_0000;

impl EmuBuf {
    /// The buffer's address, its "device pointer" (tests tell buffers apart by it).
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }

    fn fill_nan(&self) {
        let words = self.bytes / 4;
        let nan = FRESH_WORD.to_le_bytes();
        // SAFETY: the allocation holds `bytes` bytes and no launch is running (launches are
        // synchronous); the start is 4-aligned when bytes is a multiple of 4 (the buffer ends at a
        // page boundary), else the fill goes byte by byte.
        unsafe {
            if self.bytes % 4 == 0 && (self.ptr as usize) % 4 == 0 {
                std::slice::from_raw_parts_mut(self.ptr as *mut u32, words).fill(FRESH_WORD);
            } else {
                let all = std::slice::from_raw_parts_mut(self.ptr, self.bytes);
                for (i, b) in all.iter_mut().enumerate() {
                    *b = if i < words * 4 { nan[i % 4] } else { 0xFF };
                }
            }
        }
    }
}

impl Drop for EmuBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by emu_alloc in try_alloc and freed once.
        unsafe { emu_free(self.ptr as *mut c_void) }
    }
}

/// Gives the emulator, once, every kernel's static shared memory, registers (ptxas's report) and
/// launch bounds (the PTX's .maxntid; build.rs), so its launches meet the driver's limits: the host-compiled kernels cannot
/// show them (a `__shared__` variable there is a plain thread-local).
fn tell_kernel_resources() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for r in super::kernels::KERNEL_RESOURCES {
            let name = CString::new(r.kernel).expect("kernel names have no NUL");
            // SAFETY: plain FFI call with a NUL-terminated name; the runtime copies what it keeps.
            // A kernel the emulator lacks is reported by its first launch instead.
            unsafe { emu_set_kernel_resources(name.as_ptr(), r.static_smem, r.registers, r.max_threads) };
        }
    });
}

#[derive(Clone, Copy, Debug, Default)]
pub struct EmuDevice;

impl Device for EmuDevice {
    type Buf = EmuBuf;
    /// The emulator's graph is its node list: a replay launches the nodes in order, as the GPU
    /// runs a captured stream's nodes in their dependency order (a chain, for one stream).
    type Graph = ();

    fn kind(&self) -> &'static str {
        "cuda-emulator"
    }

    fn describe(&self) -> String {
        "CUDA emulator on the CPU (kernels/*.cu built by the host compiler, one fiber per thread)".into()
    }

    fn try_alloc(&self, bytes: usize) -> Result<Option<EmuBuf>> {
        // SAFETY: plain FFI call; the runtime returns fresh memory or null.
        let ptr = unsafe { emu_alloc(bytes) } as *mut u8;
        if ptr.is_null() {
            return Ok(None);
        }
        let b = EmuBuf { ptr, bytes };
        b.fill_nan();
        Ok(Some(b))
    }

    fn buf_bytes(&self, buf: &EmuBuf) -> usize {
        buf.bytes
    }

    fn memset_zeros(&self, buf: &EmuBuf, bytes: usize) -> Result<()> {
        if bytes > buf.bytes {
            return Err(Error::Backend { backend: "cuda-emulator", msg: format!("memset of {bytes} bytes on a {}-byte buffer", buf.bytes) });
        }
        // SAFETY: bounds checked above; launches are synchronous, so no kernel is writing.
        unsafe { std::ptr::write_bytes(buf.ptr, 0, bytes) };
        Ok(())
    }

    fn write(&self, buf: &EmuBuf, bytes: &[u8]) -> Result<()> {
        if bytes.len() > buf.bytes {
            return Err(Error::Backend { backend: "cuda-emulator", msg: format!("upload of {} bytes into a {}-byte buffer", bytes.len(), buf.bytes) });
        }
        // SAFETY: bounds checked above; the source is host memory distinct from the buffer.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.ptr, bytes.len()) };
        Ok(())
    }

    fn download(&self, buf: &EmuBuf, out: &mut [u8]) -> Result<()> {
        if out.len() > buf.bytes {
            return Err(Error::Backend { backend: "cuda-emulator", msg: format!("download of {} bytes from a {}-byte buffer", out.len(), buf.bytes) });
        }
        // SAFETY: bounds checked above; launches are synchronous, so no kernel is writing.
        unsafe { std::ptr::copy_nonoverlapping(buf.ptr, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    fn launch(&self, kernel: &'static str, cfg: &LaunchCfg, args: &[Arg<'_, EmuBuf>]) -> Result<()> {
        tell_kernel_resources();
        // Each parameter's value lives in its own 8-byte slot (pointers, i64) or in the caller's
        // struct (Pod); `ptrs[i]` points at parameter i, as cuLaunchKernel expects.
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match a {
                Arg::Buf(b) => b.ptr as u64,
                Arg::I32(v) => *v as u32 as u64,
                Arg::I64(v) => *v as u64,
                Arg::F32(v) => v.to_bits() as u64,
                Arg::Pod(_) => 0,
            })
            .collect();
        let mut ptrs: Vec<*mut c_void> = args
            .iter()
            .zip(slots.iter_mut())
            .map(|(a, s)| match a {
                Arg::Pod(bytes) => bytes.as_ptr() as *mut c_void,
                _ => s as *mut u64 as *mut c_void,
            })
            .collect();
        let name = CString::new(kernel).expect("kernel names have no NUL");
        let (g, b) = (cfg.grid, cfg.block);
        // SAFETY: `ptrs` holds one valid pointer per kernel parameter, alive for the call; the
        // runtime copies the values before running any thread and the launch is synchronous.
        let rc = unsafe { emu_launch(name.as_ptr(), g.0, g.1, g.2, b.0, b.1, b.2, cfg.smem_bytes, ptrs.as_mut_ptr()) };
        check(rc)
    }

    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> Result<()> {
        tell_kernel_resources();
        let name = CString::new(kernel).expect("kernel names have no NUL");
        // SAFETY: plain FFI call with a NUL-terminated name; the runtime guards its table with a mutex.
        check(unsafe { emu_func_set_max_dynamic_smem(name.as_ptr(), bytes) })
    }

    fn static_smem(&self, kernel: &'static str) -> Result<u32> {
        tell_kernel_resources();
        let name = CString::new(kernel).expect("kernel names have no NUL");
        // SAFETY: plain FFI call with a NUL-terminated name; the runtime guards its table with a mutex.
        Ok(unsafe { emu_static_smem(name.as_ptr()) })
    }

    fn copy(&self, src: &EmuBuf, dst: &EmuBuf, bytes: usize) -> Result<()> {
        if bytes > src.bytes || bytes > dst.bytes {
            return Err(Error::Backend { backend: "cuda-emulator", msg: format!("copy of {bytes} bytes from a {}-byte into a {}-byte buffer", src.bytes, dst.bytes) });
        }
        // SAFETY: bounds checked above; `copy` (memmove) allows the same buffer on both sides.
        unsafe { std::ptr::copy(src.ptr, dst.ptr, bytes) };
        Ok(())
    }

    fn build_graph(&self, _nodes: &[Node<'_, EmuBuf>]) -> Result<()> {
        Ok(())
    }

    fn launch_graph(&self, _graph: &(), nodes: &[Node<'_, EmuBuf>]) -> Result<()> {
        for n in nodes {
            match n {
                Node::Launch { kernel, cfg, args } => self.launch(kernel, cfg, args)?,
                Node::Memset { buf, bytes } => self.memset_zeros(buf, *bytes)?,
            }
        }
        Ok(())
    }

    /// Launches run to completion before `emu_launch` returns: nothing is ever in flight.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// Host memory has no device size; a limit is the caching layer's (`CacheOptions::mem_limit`).
    fn mem_info(&self) -> Option<(usize, usize)> {
        None
    }

    fn poison(&self, buf: &EmuBuf) {
        buf.fill_nan();
    }
}

/// A runtime return code as a Result, with the runtime's message for the calling thread.
fn check(rc: i32) -> Result<()> {
    if rc != 0 {
        // SAFETY: the runtime returns a NUL-terminated string owned by this thread.
        let msg = unsafe { CStr::from_ptr(emu_last_error()) }.to_string_lossy().into_owned();
        return Err(Error::Backend { backend: "cuda-emulator", msg });
    }
    Ok(())
}
