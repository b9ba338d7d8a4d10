//! CUDA graphs of whole forwards (issue #20, items 4 and 5): `Backend::graph_forward(model,
//! inputs, f)` runs `f` once as a recording and replays it on every later call with the same model
//! id, input shapes and precision.
//!
//! - **Recording** (the first call of a key): each input is copied into a buffer the graph owns;
//!   `f` then runs with the caching layer recording (cached.rs): its launches and memsets are
//!   recorded instead of issued, host↔device transfers are refused (their data would be baked in),
//!   and every buffer a recorded node names is held by the graph for its whole life — the ones `f`
//!   dropped before it returned too — so no later allocation gets memory a replay writes. The
//!   recording is then instantiated (the GPU: a stream capture of the nodes, cuGraphInstantiate;
//!   the emulator: the node list itself) and launched.
//! - **Replay**: each input is copied in place into the graph's input buffer, the graph is
//!   launched (one driver call), and each output is copied out into a fresh buffer. Outputs are
//!   copies, so a caller may keep them across replays.
//! - Every value a kernel of `f` depends on must come through `inputs` (tensors), never through a
//!   host value captured by `f`: scalars in kernel arguments are recorded as they were at the first
//!   call. The UNet's timesteps enter as a tensor and its class embedding as rows gathered before
//!   the graph (models/unet.rs `forward_graphed`).
//! - An error inside `f` (or in the instantiation) ends the recording, drops its nodes (their
//!   buffers go back to the cache) and caches nothing; the next call records again.
//! - Memory: a graph keeps every intermediate of its forward (the eager path reuses them within a
//!   forward), until `clear_graphs` or the backend is dropped.
//! - `RAN_CUDA_GRAPH=0` turns graphs off (`graph_forward` runs `f` eagerly); they are off under
//!   `RAN_CUDA_SYNC=1` too, which wants each launch synchronised on its own.

use super::cached::CachedGraph;
use super::device::Device;
use super::CudaBackend;
use crate::ops::precision::Precision;
use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

type T<D> = Tensor<CudaBackend<D>>;

/// A fresh id for a function `graph_forward` records (one per loaded model).
pub fn new_graph_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// What a graph is recorded for: the function's id, the input shapes and the operand precision.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GraphKey {
    pub model: u64,
    pub shapes: Vec<Shape>,
    pub precision: Precision,
}

struct Entry<D: Device> {
    inputs: Vec<T<D>>,
    outputs: Vec<T<D>>,
    graph: CachedGraph<D>,
}

/// The recorded graphs of one backend.
pub struct GraphCache<D: Device> {
    enabled: bool,
    map: Mutex<HashMap<GraphKey, Arc<Mutex<Entry<D>>>>>,
}

impl<D: Device> GraphCache<D> {
    pub fn new(enabled: bool) -> Self {
        GraphCache { enabled, map: Mutex::new(HashMap::new()) }
    }
}

/// RAN_CUDA_GRAPH: unset, empty or 1 on, 0 off.
pub fn enabled_from_env() -> std::result::Result<bool, String> {
    match std::env::var("RAN_CUDA_GRAPH").as_deref() {
        Err(_) | Ok("") | Ok("1") => Ok(true),
        Ok("0") => Ok(false),
        Ok(v) => Err(format!("RAN_CUDA_GRAPH=`{v}`: expected 0 or 1")),
    }
}

/// Ends a recording however `f` leaves (error or panic), so the device never stays recording.
struct RecordingGuard<'a, D: Device>(&'a CudaBackend<D>);

impl<D: Device> Drop for RecordingGuard<'_, D> {
    fn drop(&mut self) {
        drop(self.0.driver().end_recording());
    }
}

impl<D: Device> CudaBackend<D> {
    /// Whether `graph_forward` records and replays (else it runs `f` eagerly).
    pub fn graphs_enabled(&self) -> bool {
        self.graphs.enabled && !self.driver().options().sync_each_launch
    }

    /// Graphs recorded so far (and kept).
    pub fn graph_count(&self) -> usize {
        self.graphs.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// (launches, buffers held) of the graph recorded for `key`.
    pub fn graph_stats(&self, key: &GraphKey) -> Option<(usize, usize)> {
        let m = self.graphs.map.lock().ok()?;
        let e = m.get(key)?.lock().ok()?;
        Some((e.graph.launches(), e.graph.buffers()))
    }

    /// Drops every recorded graph; their buffers go back to the cache.
    pub fn clear_graphs(&self) {
        let all: Vec<_> = self.graphs.map.lock().map(|mut m| m.drain().collect()).unwrap_or_default();
        drop(all);
        // the group-norm counters stay while a recorded graph may read them (norm_conv.rs)
        self.release_gn_counters();
    }

    /// A copy of `x` in a fresh buffer.
    fn copy_of(&self, x: &T<D>) -> Result<T<D>> {
        let y = self.alloc(x.dims())?;
        self.dev.copy(super::b(x), super::b(&y), x.numel() * 4)?;
        Ok(y)
    }

    /// See the module's comment. `f` gets the graph's own input tensors.
    pub fn graph_forward_impl(&self, model: u64, inputs: &[&T<D>], f: &dyn Fn(&[T<D>]) -> Result<Vec<T<D>>>) -> Result<Vec<T<D>>> {
        if !self.graphs_enabled() {
            let ins: Vec<T<D>> = inputs.iter().map(|&x| x.clone()).collect();
            return f(&ins);
        }
        let key = GraphKey { model, shapes: inputs.iter().map(|x| x.shape().clone()).collect(), precision: self.precision };
        let found = self.graphs.map.lock().map_err(|_| poisoned())?.get(&key).cloned();
        let entry = match found {
            Some(e) => e,
            None => {
                let e = Arc::new(Mutex::new(self.record(inputs, f)?));
                self.graphs.map.lock().map_err(|_| poisoned())?.insert(key, e.clone());
                e
            }
        };
        let e = entry.lock().map_err(|_| poisoned())?;
        for (src, dst) in inputs.iter().zip(&e.inputs) {
            self.dev.copy(super::b(src), super::b(dst), src.numel() * 4)?;
        }
        self.dev.launch_graph(&e.graph)?;
        e.outputs.iter().map(|o| self.copy_of(o)).collect()
    }

    /// Records `f` on graph-owned copies of `inputs` and instantiates it (nothing runs yet).
    fn record(&self, inputs: &[&T<D>], f: &dyn Fn(&[T<D>]) -> Result<Vec<T<D>>>) -> Result<Entry<D>> {
        let ins: Vec<T<D>> = inputs.iter().map(|&x| self.copy_of(x)).collect::<Result<_>>()?;
        self.dev.begin_recording()?;
        let guard = RecordingGuard(self);
        let outs = f(&ins);
        let nodes = self.driver().end_recording().unwrap_or_default();
        drop(guard);
        let outputs = outs?;
        let graph = self.dev.instantiate(nodes)?;
        Ok(Entry { inputs: ins, outputs, graph })
    }
}

fn poisoned() -> Error {
    Error::Backend { backend: "cuda", msg: "the graph cache is poisoned (a thread panicked while replaying)".into() }
}
