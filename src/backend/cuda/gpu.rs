//! The real GPU as a `Device`, through cudarc's driver API (loaded at run time). Modules are loaded
//! lazily per kernel file: the CUBIN built for this device's compute capability if build.rs made
//! one, else the compute_80 PTX (JIT by the driver), else the CUDA source compiled here by NVRTC
//! (when the build machine had no NVRTC). One owned (non-blocking) stream carries every launch,
//! copy, memset, allocation and free, in order; cudarc's per-buffer event tracking is off, since
//! one stream orders everything (see backend/cuda/cached.rs on reuse). Every failure is an
//! `Error`, never a panic.

use super::device::{Arg, Device, LaunchCfg, Node};
use super::kernels::{file_of, KernelSource, HEADERS};
use crate::{Error, Result};
use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn err(msg: impl std::fmt::Display) -> Error {
    Error::Backend { backend: "cuda", msg: msg.to_string() }
}

/// Which image a kernel file was loaded from (for `ran info` and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Cubin(u32),
    Ptx,
    RuntimeNvrtc,
}

/// The oldest driver API cudarc's bindings (feature cuda-12090) are safe on: 12.0, as
/// cuDriverGetVersion reports it.
const MIN_DRIVER_API: i32 = 12000;

pub struct GpuDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    sm: u32,
    name: String,
    total_mem: usize,
    modules: Mutex<HashMap<&'static str, (Arc<CudaModule>, ImageKind)>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl GpuDevice {
    /// Opens device `ordinal`, or says plainly why there is no GPU to use.
    pub fn open(ordinal: usize) -> Result<Self> {
        // SAFETY: only tries to dlopen libcuda; CudaContext::new would panic without it.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(err("no CUDA driver library (libcuda.so) on this machine"));
        }
        // cudarc resolves each driver symbol at its first call and panics on one the library
        // lacks: refuse a driver older than the CUDA 12.0 API it is built against, by name.
        let probe = crate::sysinfo::probe_cuda();
        if let Some(v) = probe.driver_version.filter(|&v| v < MIN_DRIVER_API) {
            return Err(err(format!("the CUDA driver supports CUDA {}.{}; ran needs 12.0 or newer (update the NVIDIA driver)", v / 1000, (v % 1000) / 10)));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| err(format!("cannot open GPU {ordinal}: {e}")))?;
        let (major, minor) = ctx.compute_capability().map_err(err)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let total_mem = ctx.total_mem().unwrap_or(0);
        // SAFETY: nothing has been allocated yet, and every buffer of this device lives on the one
        // stream below, so no cross-stream synchronisation (what the events are for) is needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| err(format!("cannot create a stream on GPU {ordinal}: {e}")))?;
        Ok(GpuDevice { ctx, stream, sm: (major * 10 + minor) as u32, name, total_mem, modules: Mutex::new(HashMap::new()), functions: Mutex::new(HashMap::new()) })
    }

    pub fn compute_capability(&self) -> u32 {
        self.sm
    }

    /// The image `file` loads from on this device.
    pub fn image_for(&self, f: &KernelSource) -> ImageKind {
        if f.cubins.iter().any(|(sm, _)| *sm == self.sm) {
            ImageKind::Cubin(self.sm)
        } else if f.ptx.is_some() && self.sm >= 80 {
            ImageKind::Ptx
        } else {
            ImageKind::RuntimeNvrtc
        }
    }

    fn module(&self, f: &'static KernelSource) -> Result<Arc<CudaModule>> {
        let mut mods = self.modules.lock().map_err(|_| err("module cache poisoned"))?;
        if let Some((m, _)) = mods.get(f.file) {
            return Ok(m.clone());
        }
        let kind = self.image_for(f);
        let image = match kind {
            ImageKind::Cubin(sm) => Ptx::from_binary(f.cubins.iter().find(|(s, _)| *s == sm).map(|(_, b)| b.to_vec()).unwrap_or_default()),
            ImageKind::Ptx => Ptx::from_src(f.ptx.unwrap_or_default()),
            ImageKind::RuntimeNvrtc => {
                // SAFETY: only tries to dlopen libnvrtc; cudarc's NVRTC calls would panic without it.
                if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                    return Err(err(format!(
                        "{}.cu has no CUBIN for sm_{} nor PTX this device can run, and there is no NVRTC library (libnvrtc.so) here to compile it: build ran with NVRTC (RAN_REQUIRE_NVRTC=1) or install libnvrtc",
                        f.file, self.sm
                    )));
                }
                let arch = format!("--gpu-architecture=compute_{}", self.sm);
                let opts = cudarc::nvrtc::CompileOptions { options: vec![arch, "-std=c++17".into()], ..Default::default() };
                cudarc::nvrtc::compile_ptx_with_opts(inline_headers(f.source), opts).map_err(|e| err(format!("NVRTC on {}.cu: {e}", f.file)))?
            }
        };
        let m = self.ctx.load_module(image).map_err(|e| err(format!("loading {}.cu ({kind:?}): {e}", f.file)))?;
        mods.insert(f.file, (m.clone(), kind));
        Ok(m)
    }

    fn function(&self, kernel: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().map_err(|_| err("function cache poisoned"))?.get(kernel) {
            return Ok(f.clone());
        }
        let src = file_of(kernel).ok_or_else(|| err(format!("no kernel named {kernel} in kernels/*.cu")))?;
        let f = self.module(src)?.load_function(kernel).map_err(|e| err(format!("{kernel}: {e}")))?;
        self.functions.lock().map_err(|_| err("function cache poisoned"))?.insert(kernel, f.clone());
        Ok(f)
    }

    /// Theoretical fp32 FMA throughput and DRAM bandwidth, from the device's attributes, for
    /// benchmark reports (fp32 lanes per SM: 64 on sm_80, 128 on sm_86+ and sm_90).
    pub fn peaks(&self) -> Option<(f64, f64)> {
        use cudarc::driver::sys::CUdevice_attribute as A;
        let at = |a| self.ctx.attribute(a).ok().map(|v| v as f64);
        let sms = at(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let clock_khz = at(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?;
        let mem_khz = at(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?;
        let bus_bits = at(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?;
        let lanes = if self.sm == 80 { 64.0 } else { 128.0 };
        let tflops = sms * lanes * 2.0 * clock_khz * 1e3 / 1e12;
        let gbs = 2.0 * mem_khz * 1e3 * bus_bits / 8.0 / 1e9;
        Some((tflops, gbs))
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(err)
    }
}

/// Replaces `#include "common.cuh"` and friends by their text, for NVRTC at run time (cudarc's
/// safe API takes include paths, not in-memory headers). Each header is inlined once.
pub fn inline_headers(src: &str) -> String {
    fn go(src: &str, seen: &mut Vec<&'static str>, out: &mut String) {
        for line in src.lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("#include \"").and_then(|r| r.strip_suffix('"')) {
                if let Some((n, text)) = HEADERS.iter().find(|(n, _)| *n == name) {
                    if !seen.contains(n) {
                        seen.push(n);
                        go(text, seen, out);
                    }
                    continue;
                }
            }
            if t == "#pragma once" {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    let mut out = String::new();
    go(src, &mut Vec::new(), &mut out);
    out
}

/// An instantiated CUDA graph (cudaGraphExec) of this device's stream.
pub struct GpuGraph(CudaGraph);

// SAFETY: CUDA graph objects are not internally synchronised; the backend keeps each graph
// behind a mutex (backend/cuda/graph.rs), so calls on one graph never overlap.
unsafe impl Send for GpuGraph {}
unsafe impl Sync for GpuGraph {}

impl Device for GpuDevice {
    type Buf = CudaSlice<u8>;
    type Graph = GpuGraph;

    fn kind(&self) -> &'static str {
        "cuda"
    }

    fn describe(&self) -> String {
        format!("{} (sm_{}, {:.1} GiB)", self.name, self.sm, self.total_mem as f64 / (1u64 << 30) as f64)
    }

    fn try_alloc(&self, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
        // SAFETY: the contents are undefined until written; callers write before they read
        // (or ask for memset_zeros).
        match unsafe { self.stream.alloc::<u8>(bytes.max(1)) } {
            Ok(b) => Ok(Some(b)),
            Err(DriverError(sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY)) => Ok(None),
            Err(e) => Err(err(format!("allocating {bytes} bytes: {e}"))),
        }
    }

    fn buf_bytes(&self, buf: &CudaSlice<u8>) -> usize {
        buf.len()
    }

    fn memset_zeros(&self, buf: &CudaSlice<u8>, bytes: usize) -> Result<()> {
        if bytes > buf.len() {
            return Err(err(format!("memset of {bytes} bytes on a {}-byte buffer", buf.len())));
        }
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(err)?;
        let (ptr, _guard) = buf.device_ptr(&self.stream);
        // SAFETY: `ptr` addresses at least `bytes` bytes of this context's memory; the memset is
        // ordered on the device's one stream with every other use of the buffer.
        unsafe { result::memset_d8_async(ptr, 0, bytes, self.stream.cu_stream()) }.map_err(|e| err(format!("memset of {bytes} bytes: {e}")))
    }

    fn write(&self, buf: &CudaSlice<u8>, bytes: &[u8]) -> Result<()> {
        if bytes.len() > buf.len() {
            return Err(err(format!("upload of {} bytes into a {}-byte buffer", bytes.len(), buf.len())));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(err)?;
        let (ptr, _guard) = buf.device_ptr(&self.stream);
        // SAFETY: the destination holds bytes.len() bytes; from pageable host memory the call
        // returns once the source has been staged, so the caller may drop it afterwards.
        unsafe { result::memcpy_htod_async(ptr, bytes, self.stream.cu_stream()) }.map_err(|e| err(format!("upload of {} bytes: {e}", bytes.len())))
    }

    fn download(&self, buf: &CudaSlice<u8>, out: &mut [u8]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let view = buf.try_slice(0..out.len()).ok_or_else(|| err(format!("download of {} bytes from a {}-byte buffer", out.len(), buf.len())))?;
        self.stream.memcpy_dtoh(&view, out).map_err(err)?;
        GpuDevice::synchronize(self)
    }

    fn synchronize(&self) -> Result<()> {
        GpuDevice::synchronize(self)
    }

    fn copy(&self, src: &CudaSlice<u8>, dst: &CudaSlice<u8>, bytes: usize) -> Result<()> {
        if bytes > src.len() || bytes > dst.len() {
            return Err(err(format!("copy of {bytes} bytes from a {}-byte into a {}-byte buffer", src.len(), dst.len())));
        }
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(err)?;
        let (s, _gs) = src.device_ptr(&self.stream);
        let (d, _gd) = dst.device_ptr(&self.stream);
        // SAFETY: both pointers address at least `bytes` bytes of this context's memory; the copy
        // is ordered on the device's one stream with every other use of either buffer.
        unsafe { result::memcpy_dtod_async(d, s, bytes, self.stream.cu_stream()) }.map_err(|e| err(format!("device copy of {bytes} bytes: {e}")))
    }

    /// Captures the nodes on the device's stream (thread-local capture mode) and instantiates the
    /// graph. Every module is loaded first (loading is not a stream operation), and the capture is
    /// ended whatever happens, so a failed node leaves the stream usable.
    fn build_graph(&self, nodes: &[Node<'_, CudaSlice<u8>>]) -> Result<GpuGraph> {
        for n in nodes {
            if let Node::Launch { kernel, .. } = n {
                self.function(kernel)?;
            }
        }
        self.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(|e| err(format!("beginning a graph capture: {e}")))?;
        let issued = nodes.iter().try_for_each(|n| match n {
            Node::Launch { kernel, cfg, args } => self.launch(kernel, cfg, args),
            Node::Memset { buf, bytes } => self.memset_zeros(buf, *bytes),
        });
        let ended = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        issued.map_err(|e| err(format!("capturing a graph: {e}")))?;
        match ended {
            Ok(Some(g)) => Ok(GpuGraph(g)),
            Ok(None) => Err(err("the graph capture produced no graph")),
            Err(e) => Err(err(format!("instantiating a graph: {e}"))),
        }
    }

    fn launch_graph(&self, graph: &GpuGraph, _nodes: &[Node<'_, CudaSlice<u8>>]) -> Result<()> {
        graph.0.launch().map_err(|e| err(format!("launching a graph: {e}")))
    }

    fn mem_info(&self) -> Option<(usize, usize)> {
        self.ctx.mem_get_info().ok()
    }

    fn size_class(&self, bytes: usize) -> usize {
        super::cached::gpu_size_class(bytes)
    }

    fn launch(&self, kernel: &'static str, cfg: &LaunchCfg, args: &[Arg<'_, CudaSlice<u8>>]) -> Result<()> {
        let f = self.function(kernel)?;
        // Scalars must outlive the builder, which keeps pointers to them.
        let i32s: Vec<i32> = args.iter().filter_map(|a| if let Arg::I32(v) = a { Some(*v) } else { None }).collect();
        let i64s: Vec<i64> = args.iter().filter_map(|a| if let Arg::I64(v) = a { Some(*v) } else { None }).collect();
        let f32s: Vec<f32> = args.iter().filter_map(|a| if let Arg::F32(v) = a { Some(*v) } else { None }).collect();
        let (mut ii, mut il, mut ff) = (i32s.iter(), i64s.iter(), f32s.iter());
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::Buf(s) => b.arg(*s),
                Arg::I32(_) => b.arg(ii.next().expect("counted above")),
                Arg::I64(_) => b.arg(il.next().expect("counted above")),
                Arg::F32(_) => b.arg(ff.next().expect("counted above")),
                // A struct by value: cuLaunchKernel copies the parameter's size from this address.
                Arg::Pod(bytes) => b.arg(bytes.first().ok_or_else(|| err("empty struct argument"))?),
            };
        }
        let lc = LaunchConfig { grid_dim: cfg.grid, block_dim: cfg.block, shared_mem_bytes: cfg.smem_bytes };
        // SAFETY: argument order and types follow the kernel's signature: every launch goes through
        // the typed functions build.rs generates from that signature (backend/cuda/launch.rs).
        unsafe { b.launch(lc) }.map_err(|e| {
            let stat = f.shared_size_bytes().unwrap_or(-1);
            let regs = f.num_regs().unwrap_or(-1);
            err(format!("launching {kernel} (grid {:?}, block {:?}, {} B dynamic + {stat} B static shared memory, {regs} registers): {e}", cfg.grid, cfg.block, cfg.smem_bytes))
        })?;
        Ok(())
    }

    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> Result<()> {
        use cudarc::driver::sys::CUfunction_attribute_enum as A;
        let f = self.function(kernel)?;
        f.set_attribute(A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .map_err(|e| err(format!("{kernel}: cannot allow {bytes} bytes of dynamic shared memory (cuFuncSetAttribute): {e}")))
    }

    fn static_smem(&self, kernel: &'static str) -> Result<u32> {
        let f = self.function(kernel)?;
        let b = f.shared_size_bytes().map_err(|e| err(format!("{kernel}: static shared memory (cuFuncGetAttribute): {e}")))?;
        Ok(b.max(0) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::inline_headers;
    use crate::backend::cuda::kernels::{HEADERS, KERNEL_FILES};

    /// Runtime NVRTC gets self-contained sources: every project header inlined exactly once.
    #[test]
    fn inline_headers_leaves_no_project_include() {
        for f in KERNEL_FILES {
            let s = inline_headers(f.source);
            for (h, _) in HEADERS {
                assert!(!s.contains(&format!("#include \"{h}\"")), "{}: {h} left as an include", f.file);
            }
            assert_eq!(s.matches("float warp_sum(").count(), 1, "{}: common.cuh inlined once", f.file);
            for k in f.kernels {
                assert!(s.contains(k), "{}: kernel {k} lost", f.file);
            }
        }
    }
}
