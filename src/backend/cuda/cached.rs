//! The layer between the CUDA backend and a `Device`: a caching allocator and the count of every
//! driver call. Buffers are kept by size class (`Device::size_class`) when dropped and handed out
//! again to the next request of that class, within a forward and across forwards; cached bytes
//! above `release_threshold` go back to the device, and an allocation the device refuses first
//! frees every cached buffer and tries once more. The same code runs over the GPU and over the
//! emulator (whose classes are exact sizes, so its guard pages stay exact).
//!
//! Stream order makes reuse safe without events: each device has one owned stream and every
//! launch, copy and memset is enqueued on it. A buffer dropped on the host may still be read by a
//! kernel the GPU has not run yet, but whoever gets it next can only enqueue work behind that
//! kernel on the same stream, so it never overwrites data still in use. (With a second stream this
//! would need an event per buffer.) A buffer reaches the cache only when its last handle is
//! dropped, so a live tensor's memory is never handed out twice.
//!
//! Graph recording (backend/cuda/graph.rs): between `begin_recording` and `end_recording`, the
//! launches and memsets of the recording thread are recorded instead of issued, each holding a
//! handle on every buffer it names. A recorded graph therefore keeps its buffers — the ones
//! allocated during the recording and dropped by the host before it ended too — out of the cache
//! for as long as it lives, so no later allocation (inside the recording or after it) gets memory
//! a replay writes or reads.

use super::device::{Arg, Device, LaunchCfg, Node};
use crate::backend::driver_counts::DriverCounts;
use crate::ops::contract::SMEM_DEFAULT_LIMIT;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheOptions {
    /// Cached (free) bytes above this are released to the device at once.
    pub release_threshold: usize,
    /// The device's memory size as this layer enforces it (the emulator's RAN_EMU_MEM_LIMIT):
    /// allocations that would hold more fail as out of memory. None: the device decides.
    pub mem_limit: Option<usize>,
    /// Synchronise after every launch, so an asynchronous fault is reported against its kernel
    /// (RAN_CUDA_SYNC=1).
    pub sync_each_launch: bool,
}

impl CacheOptions {
    /// Keep up to `release_threshold` cached bytes; RAN_CUDA_SYNC=1 turns on per-launch sync and,
    /// when `emulated`, RAN_EMU_MEM_LIMIT (bytes) sets the device's memory size.
    pub fn from_env(release_threshold: usize, emulated: bool) -> std::result::Result<Self, String> {
        let sync_each_launch = match std::env::var("RAN_CUDA_SYNC").as_deref() {
            Err(_) | Ok("") | Ok("0") => false,
            Ok("1") => true,
            Ok(v) => return Err(format!("RAN_CUDA_SYNC=`{v}`: expected 0 or 1")),
        };
        let mem_limit = match std::env::var("RAN_EMU_MEM_LIMIT") {
            Ok(v) if emulated && !v.is_empty() => Some(v.parse::<usize>().map_err(|_| format!("RAN_EMU_MEM_LIMIT=`{v}`: expected a number of bytes"))?),
            _ => None,
        };
        Ok(CacheOptions { release_threshold, mem_limit, sync_each_launch })
    }
}

#[derive(Default)]
struct Counters {
    launches: AtomicU64,
    allocs: AtomicU64,
    frees: AtomicU64,
    memsets: AtomicU64,
    copies: AtomicU64,
    syncs: AtomicU64,
    other: AtomicU64,
    graph_launches: AtomicU64,
    hits: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Free buffers by size class.
struct FreeList<B> {
    by_class: BTreeMap<usize, Vec<B>>,
    bytes: usize,
}

struct Shared<D: Device> {
    dev: D,
    opts: CacheOptions,
    free: Mutex<FreeList<D::Buf>>,
    /// Device bytes this layer holds: live buffers and cached ones.
    held: AtomicUsize,
    n: Counters,
    /// set while a recording is open (checked before taking the lock on every launch)
    recording: AtomicBool,
    rec: Mutex<Option<Recording<D>>>,
    /// the dynamic shared memory each kernel may use now: 48 KiB less its static shared memory
    /// until an opt-in raises it (the attribute stays set, so a launch within it makes no call)
    smem_allowed: Mutex<std::collections::HashMap<&'static str, u32>>,
}

/// RAN_CUDA_TRACE=1: every launch (recorded or run) printed to stderr with its configuration, for
/// counting a forward's launches by kernel (`... 2>&1 | grep ^launch | cut -d' ' -f2 | sort | uniq -c`).
fn trace_launches() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("RAN_CUDA_TRACE").is_ok_and(|v| v == "1"))
}

/// A kernel argument as a recorded graph keeps it: buffers by handle, scalars and structs by value.
pub enum RecArg<D: Device> {
    Buf(Arc<Held<D>>),
    I32(i32),
    I64(i64),
    F32(f32),
    Pod(Vec<u8>),
}

/// One recorded node: a launch or a memset, in stream order.
pub enum RecNode<D: Device> {
    Launch { kernel: &'static str, cfg: LaunchCfg, args: Vec<RecArg<D>> },
    Memset { buf: Arc<Held<D>>, bytes: usize },
}

impl<D: Device> RecNode<D> {
    /// The node over the device's own buffers.
    fn as_node(&self) -> Node<'_, D::Buf> {
        match self {
            RecNode::Launch { kernel, cfg, args } => Node::Launch {
                kernel,
                cfg: *cfg,
                args: args
                    .iter()
                    .map(|a| match a {
                        RecArg::Buf(h) => Arg::Buf(h.raw()),
                        RecArg::I32(v) => Arg::I32(*v),
                        RecArg::I64(v) => Arg::I64(*v),
                        RecArg::F32(v) => Arg::F32(*v),
                        RecArg::Pod(p) => Arg::Pod(p),
                    })
                    .collect(),
            },
            RecNode::Memset { buf, bytes } => Node::Memset { buf: buf.raw(), bytes: *bytes },
        }
    }
}

struct Recording<D: Device> {
    thread: std::thread::ThreadId,
    nodes: Vec<RecNode<D>>,
    /// inside `eager`: the recording thread issues its work as if no recording were open
    paused: bool,
}

/// An instantiated graph and the nodes it was built from (their handles keep its buffers alive).
pub struct CachedGraph<D: Device> {
    nodes: Vec<RecNode<D>>,
    exec: D::Graph,
}

impl<D: Device> CachedGraph<D> {
    /// Kernel launches in the graph.
    pub fn launches(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n, RecNode::Launch { .. })).count()
    }
    /// Distinct buffers the graph holds (its arena, the weights and inputs it reads included).
    pub fn buffers(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        for n in &self.nodes {
            match n {
                RecNode::Launch { args, .. } => args.iter().for_each(|a| {
                    if let RecArg::Buf(h) = a {
                        seen.insert(Arc::as_ptr(h) as usize);
                    }
                }),
                RecNode::Memset { buf, .. } => {
                    seen.insert(Arc::as_ptr(buf) as usize);
                }
            }
        }
        seen.len()
    }
}

impl<D: Device> Shared<D> {
    fn release(&self, bufs: Vec<(usize, D::Buf)>) {
        for (class, b) in bufs {
            drop(b);
            bump(&self.n.frees);
            self.held.fetch_sub(class, Relaxed);
        }
    }

    /// Takes cached buffers out, largest classes first, until at most `keep` bytes stay cached.
    fn take_above(&self, keep: usize) -> Vec<(usize, D::Buf)> {
        let mut out = Vec::new();
        let Ok(mut fl) = self.free.lock() else { return out };
        let fl = &mut *fl;
        while fl.bytes > keep {
            let Some(mut e) = fl.by_class.last_entry() else { break };
            let class = *e.key();
            if let Some(b) = e.get_mut().pop() {
                fl.bytes -= class;
                out.push((class, b));
            }
            if e.get().is_empty() {
                e.remove();
            }
        }
        out
    }

    fn give_back(&self, class: usize, buf: D::Buf) {
        let over = match self.free.lock() {
            Ok(mut fl) => {
                fl.by_class.entry(class).or_default().push(buf);
                fl.bytes += class;
                fl.bytes > self.opts.release_threshold
            }
            Err(_) => {
                // a poisoned cache frees instead of caching
                self.release(vec![(class, buf)]);
                return;
            }
        };
        if over {
            let freed = self.take_above(self.opts.release_threshold);
            self.release(freed);
        }
    }

    fn raw_alloc(&self, class: usize) -> Result<Option<D::Buf>> {
        if let Some(limit) = self.opts.mem_limit {
            if self.held.load(Relaxed) + class > limit {
                return Ok(None);
            }
        }
        bump(&self.n.allocs);
        let b = self.dev.try_alloc(class)?;
        if b.is_some() {
            self.held.fetch_add(class, Relaxed);
        }
        Ok(b)
    }
}

/// A device buffer that returns to its cache when its last handle — a tensor's or a recorded
/// graph's — is dropped.
pub struct Held<D: Device> {
    raw: Option<D::Buf>,
    class: usize,
    home: Arc<Shared<D>>,
}

impl<D: Device> Held<D> {
    fn raw(&self) -> &D::Buf {
        self.raw.as_ref().expect("a buffer is held until dropped")
    }
}

impl<D: Device> Drop for Held<D> {
    fn drop(&mut self) {
        if let Some(b) = self.raw.take() {
            self.home.give_back(self.class, b);
        }
    }
}

/// A tensor's device buffer, from the cache.
pub struct CachedBuf<D: Device> {
    held: Arc<Held<D>>,
    bytes: usize,
}

impl<D: Device> CachedBuf<D> {
    /// The device's own buffer (for device-specific calls; do not keep it past this handle).
    pub fn raw(&self) -> &D::Buf {
        self.held.raw()
    }
    /// The bytes asked for (the buffer may hold more: its size class).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A `Device` whose buffers come from the cache and whose calls are counted.
pub struct CachedDevice<D: Device> {
    home: Arc<Shared<D>>,
}

impl<D: Device> CachedDevice<D> {
    pub fn new(dev: D, opts: CacheOptions) -> Self {
        let free = Mutex::new(FreeList { by_class: BTreeMap::new(), bytes: 0 });
        let home =
            Shared { dev, opts, free, held: AtomicUsize::new(0), n: Counters::default(), recording: AtomicBool::new(false), rec: Mutex::new(None), smem_allowed: Mutex::new(Default::default()) };
        CachedDevice { home: Arc::new(home) }
    }

    /// The device underneath.
    pub fn raw(&self) -> &D {
        &self.home.dev
    }

    pub fn options(&self) -> CacheOptions {
        self.home.opts
    }

    /// Every driver call made through this layer so far; subtract two snapshots for a scope.
    pub fn counts(&self) -> DriverCounts {
        let n = &self.home.n;
        DriverCounts {
            launches: n.launches.load(Relaxed),
            allocs: n.allocs.load(Relaxed),
            frees: n.frees.load(Relaxed),
            memsets: n.memsets.load(Relaxed),
            copies: n.copies.load(Relaxed),
            syncs: n.syncs.load(Relaxed),
            other: n.other.load(Relaxed),
            graph_launches: n.graph_launches.load(Relaxed),
        }
    }

    /// Allocations served from the cache so far (no driver call).
    pub fn cache_hits(&self) -> u64 {
        self.home.n.hits.load(Relaxed)
    }

    /// Bytes cached (free, kept for reuse) and bytes held on the device (live + cached).
    pub fn cached_and_held_bytes(&self) -> (usize, usize) {
        let cached = self.home.free.lock().map(|f| f.bytes).unwrap_or(0);
        (cached, self.home.held.load(Relaxed))
    }

    /// Gives every cached buffer back to the device.
    pub fn trim(&self) {
        let all = self.home.take_above(0);
        self.home.release(all);
    }
    /// Starts recording this thread's launches and memsets instead of issuing them; transfers
    /// are refused until `end_recording` (their data would be baked into the graph, or read
    /// before anything ran).
    pub fn begin_recording(&self) -> Result<()> {
        let mut r = self.home.rec.lock().map_err(|_| self.err("the graph recorder is poisoned"))?;
        if r.is_some() {
            return Err(self.err("a graph is already being recorded on this device (captures do not nest)"));
        }
        *r = Some(Recording { thread: std::thread::current().id(), nodes: Vec::new(), paused: false });
        self.home.recording.store(true, Relaxed);
        Ok(())
    }

    /// Ends the recording and returns its nodes (None if none was open); dropping them lets their
    /// buffers go back to the cache, which is how an aborted capture is discarded.
    pub fn end_recording(&self) -> Option<Vec<RecNode<D>>> {
        let mut r = self.home.rec.lock().unwrap_or_else(|p| p.into_inner());
        self.home.recording.store(false, Relaxed);
        r.take().map(|r| r.nodes)
    }

    /// Instantiates recorded nodes as a graph. Counted as the driver calls a capture makes: one per
    /// captured launch or memset, and one (`other`) for the instantiation.
    pub fn instantiate(&self, nodes: Vec<RecNode<D>>) -> Result<CachedGraph<D>> {
        let raw: Vec<Node<'_, D::Buf>> = nodes.iter().map(|n| n.as_node()).collect();
        let exec = self.home.dev.build_graph(&raw)?;
        drop(raw);
        let n = &self.home.n;
        for node in &nodes {
            bump(if matches!(node, RecNode::Launch { .. }) { &n.launches } else { &n.memsets });
        }
        bump(&n.other);
        Ok(CachedGraph { nodes, exec })
    }

    /// Runs a graph: one driver call (cuGraphLaunch).
    pub fn launch_graph(&self, g: &CachedGraph<D>) -> Result<()> {
        bump(&self.home.n.graph_launches);
        let raw: Vec<Node<'_, D::Buf>> = g.nodes.iter().map(|n| n.as_node()).collect();
        self.home.dev.launch_graph(&g.exec, &raw)
    }

    /// Runs `f` with this thread's recording (if any) paused: its launches are issued now, not
    /// put in the graph. For work whose result outlives the graph and depends only on data that
    /// exists before it — a weight's narrow copy, made once and cached (weight_cache.rs): recorded,
    /// it would be redone at every replay, and a capture that fails would leave the cache holding
    /// a copy that was never written.
    pub fn eager<R>(&self, f: impl FnOnce() -> R) -> R {
        let paused_here = self.set_paused(true);
        let out = f();
        if paused_here {
            self.set_paused(false);
        }
        out
    }

    /// Pauses or resumes this thread's recording; whether this thread is the recording one and
    /// its state changed.
    fn set_paused(&self, on: bool) -> bool {
        if !self.home.recording.load(Relaxed) {
            return false;
        }
        let mut r = self.home.rec.lock().unwrap_or_else(|p| p.into_inner());
        match r.as_mut() {
            Some(r) if r.thread == std::thread::current().id() && r.paused != on => {
                r.paused = on;
                true
            }
            _ => false,
        }
    }

    /// Whether this thread is recording (its launches are being recorded, not issued).
    fn recording_here(&self) -> bool {
        if !self.home.recording.load(Relaxed) {
            return false;
        }
        let r = self.home.rec.lock().unwrap_or_else(|p| p.into_inner());
        r.as_ref().is_some_and(|r| r.thread == std::thread::current().id() && !r.paused)
    }

    /// Appends a node to this thread's recording; false when it is not recording.
    fn record(&self, node: impl FnOnce() -> RecNode<D>) -> bool {
        if !self.home.recording.load(Relaxed) {
            return false;
        }
        let mut r = self.home.rec.lock().unwrap_or_else(|p| p.into_inner());
        match r.as_mut() {
            Some(r) if r.thread == std::thread::current().id() && !r.paused => {
                r.nodes.push(node());
                true
            }
            _ => false,
        }
    }

    /// A transfer inside a recording: refused, naming it.
    fn refuse_in_recording(&self, what: &str) -> Result<()> {
        if self.recording_here() {
            return Err(self.err(&format!("{what} inside a graph capture: nothing recorded has run yet, and host data would be baked into the graph (pass it as a graph input)")));
        }
        Ok(())
    }

    fn err(&self, msg: &str) -> Error {
        Error::Backend { backend: self.kind(), msg: msg.to_string() }
    }
}

impl<D: Device> Device for CachedDevice<D> {
    type Buf = CachedBuf<D>;
    type Graph = D::Graph;

    fn kind(&self) -> &'static str {
        self.home.dev.kind()
    }

    fn describe(&self) -> String {
        self.home.dev.describe()
    }

    fn try_alloc(&self, bytes: usize) -> Result<Option<CachedBuf<D>>> {
        let h = &self.home;
        let class = h.dev.size_class(bytes);
        let hit = h.free.lock().ok().and_then(|mut fl| {
            let v = fl.by_class.get_mut(&class)?;
            let b = v.pop();
            if v.is_empty() {
                fl.by_class.remove(&class);
            }
            fl.bytes -= class;
            b
        });
        let raw = match hit {
            Some(b) => {
                bump(&h.n.hits);
                h.dev.poison(&b);
                b
            }
            None => match h.raw_alloc(class)? {
                Some(b) => b,
                None => {
                    // out of memory: give the cache back and try once more
                    self.trim();
                    match h.raw_alloc(class)? {
                        Some(b) => b,
                        None => return Ok(None),
                    }
                }
            },
        };
        Ok(Some(CachedBuf { held: Arc::new(Held { raw: Some(raw), class, home: h.clone() }), bytes }))
    }

    fn buf_bytes(&self, buf: &CachedBuf<D>) -> usize {
        buf.bytes
    }

    fn memset_zeros(&self, buf: &CachedBuf<D>, bytes: usize) -> Result<()> {
        if bytes > buf.bytes {
            return Err(self.err(&format!("memset of {bytes} bytes on a {}-byte buffer", buf.bytes)));
        }
        if self.record(|| RecNode::Memset { buf: buf.held.clone(), bytes }) {
            return Ok(());
        }
        bump(&self.home.n.memsets);
        self.home.dev.memset_zeros(buf.raw(), bytes)
    }

    fn write(&self, buf: &CachedBuf<D>, bytes: &[u8]) -> Result<()> {
        if bytes.len() > buf.bytes {
            return Err(Error::Backend { backend: self.kind(), msg: format!("upload of {} bytes into a {}-byte buffer", bytes.len(), buf.bytes) });
        }
        self.refuse_in_recording("a host-to-device copy")?;
        bump(&self.home.n.copies);
        self.home.dev.write(buf.raw(), bytes)
    }

    /// One copy and the wait for it (a download returns finished data).
    fn download(&self, buf: &CachedBuf<D>, out: &mut [u8]) -> Result<()> {
        if out.len() > buf.bytes {
            return Err(Error::Backend { backend: self.kind(), msg: format!("download of {} bytes from a {}-byte buffer", out.len(), buf.bytes) });
        }
        self.refuse_in_recording("a device-to-host copy")?;
        bump(&self.home.n.copies);
        bump(&self.home.n.syncs);
        self.home.dev.download(buf.raw(), out)
    }

    fn launch(&self, kernel: &'static str, cfg: &LaunchCfg, args: &[Arg<'_, CachedBuf<D>>]) -> Result<()> {
        // before a recording too: a graph's replay launches with the attribute set now
        self.set_max_dynamic_smem(kernel, cfg.smem_bytes)?;
        if trace_launches() {
            eprintln!("launch {kernel} grid {:?} block {:?} smem {}", cfg.grid, cfg.block, cfg.smem_bytes);
        }
        let recorded = self.record(|| {
            let args = args
                .iter()
                .map(|a| match a {
                    Arg::Buf(b) => RecArg::Buf(b.held.clone()),
                    Arg::I32(v) => RecArg::I32(*v),
                    Arg::I64(v) => RecArg::I64(*v),
                    Arg::F32(v) => RecArg::F32(*v),
                    Arg::Pod(p) => RecArg::Pod(p.to_vec()),
                })
                .collect();
            RecNode::Launch { kernel, cfg: *cfg, args }
        });
        if recorded {
            return Ok(());
        }
        let raw: Vec<Arg<'_, D::Buf>> = args
            .iter()
            .map(|a| match a {
                Arg::Buf(b) => Arg::Buf(b.raw()),
                Arg::I32(v) => Arg::I32(*v),
                Arg::I64(v) => Arg::I64(*v),
                Arg::F32(v) => Arg::F32(*v),
                Arg::Pod(p) => Arg::Pod(p),
            })
            .collect();
        bump(&self.home.n.launches);
        self.home.dev.launch(kernel, cfg, &raw)?;
        if self.home.opts.sync_each_launch {
            bump(&self.home.n.syncs);
            self.home.dev.synchronize().map_err(|e| Error::Backend { backend: self.kind(), msg: format!("kernel {kernel} failed (RAN_CUDA_SYNC=1 synchronises after each launch): {e}") })?;
        }
        Ok(())
    }

    /// Every launch comes here first: the opt-in (cuFuncSetAttribute) when the kernel's static
    /// plus `bytes` of dynamic shared memory pass 48 KiB, once per kernel and size. The dynamic
    /// part alone is not the test: the tensor-core GEMMs' 48 KiB of stages beside 16 static bytes
    /// failed every bf16 launch on the H200 (2026-12-04) while the emulator, blind to static
    /// shared memory then, ran them.
    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let mut allowed = self.home.smem_allowed.lock().unwrap_or_else(|p| p.into_inner());
        let may = match allowed.get(kernel) {
            Some(&b) => b,
            None => {
                let b = SMEM_DEFAULT_LIMIT.saturating_sub(self.home.dev.static_smem(kernel)?);
                allowed.insert(kernel, b);
                b
            }
        };
        if bytes > may {
            bump(&self.home.n.other);
            self.home.dev.set_max_dynamic_smem(kernel, bytes)?;
            allowed.insert(kernel, bytes);
        }
        Ok(())
    }

    fn static_smem(&self, kernel: &'static str) -> Result<u32> {
        self.home.dev.static_smem(kernel)
    }

    fn synchronize(&self) -> Result<()> {
        bump(&self.home.n.syncs);
        self.home.dev.synchronize()
    }

    fn copy(&self, src: &CachedBuf<D>, dst: &CachedBuf<D>, bytes: usize) -> Result<()> {
        if bytes > src.bytes || bytes > dst.bytes {
            return Err(self.err(&format!("copy of {bytes} bytes from a {}-byte into a {}-byte buffer", src.bytes, dst.bytes)));
        }
        self.refuse_in_recording("a device-to-device copy")?;
        bump(&self.home.n.copies);
        self.home.dev.copy(src.raw(), dst.raw(), bytes)
    }

    /// Graphs of this layer are built from recordings (`instantiate`), which hold their buffers.
    fn build_graph(&self, _nodes: &[Node<'_, CachedBuf<D>>]) -> Result<D::Graph> {
        Err(self.err("graphs of the caching layer are built by begin_recording / instantiate"))
    }

    fn launch_graph(&self, _graph: &D::Graph, _nodes: &[Node<'_, CachedBuf<D>>]) -> Result<()> {
        Err(self.err("graphs of the caching layer run through launch_graph on a CachedGraph"))
    }

    /// Under a memory limit, free = limit − held; else the device's own figures.
    fn mem_info(&self) -> Option<(usize, usize)> {
        match self.home.opts.mem_limit {
            Some(limit) => Some((limit.saturating_sub(self.home.held.load(Relaxed)), limit)),
            None => self.home.dev.mem_info(),
        }
    }

    fn poison(&self, buf: &CachedBuf<D>) {
        self.home.dev.poison(buf.raw())
    }
}

/// GPU size classes: multiples of 512 bytes up to 2 KiB, then four classes per power of two
/// (a buffer wastes under a quarter of its size), so tensors of nearby sizes share buffers.
pub fn gpu_size_class(bytes: usize) -> usize {
    if bytes <= 2048 {
        return bytes.max(1).div_ceil(512) * 512;
    }
    let step = 1usize << (usize::BITS - 1 - bytes.leading_zeros() - 2);
    bytes.div_ceil(step) * step
}

#[cfg(test)]
mod tests {
    use super::gpu_size_class;

    /// Classes cover the request, waste under a quarter, and nearby sizes share a class.
    #[test]
    fn gpu_classes_cover_and_waste_little() {
        assert_eq!(gpu_size_class(0), 512);
        assert_eq!(gpu_size_class(1), 512);
        assert_eq!(gpu_size_class(513), 1024);
        assert_eq!(gpu_size_class(2048), 2048);
        assert_eq!(gpu_size_class(2049), 2560); // step 512 in [2 KiB, 4 KiB)
        assert_eq!(gpu_size_class(1 << 20), 1 << 20);
        assert_eq!(gpu_size_class((1 << 20) + 1), (1 << 20) + (1 << 18));
        for b in (1..5_000_000usize).step_by(997) {
            let c = gpu_size_class(b);
            assert!(c >= b, "{b} → {c}");
            assert!(b <= 2048 || (c - b) * 4 < b, "{b} → {c} wastes a quarter or more");
            assert_eq!(gpu_size_class(c), c, "a class is its own class");
        }
    }
}
