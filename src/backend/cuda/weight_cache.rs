//! The narrow copies of conv2d / linear weights, made once (issue #14: weights converted once at
//! load). The tensor-core paths read their weight operand cast to bf16 / f16 / tf32 and permuted
//! to the engine's layout (tensor_core.rs); a model's weights are the same tensors call after
//! call, so the copy is kept, keyed by the weight's storage (the address of its `Arc`) and the
//! layout and precision asked for.
//!
//! An entry holds a `Weak` of the weight's storage: while it exists the `Arc`'s allocation cannot
//! be reused, so a live tensor at that address is that weight and no other (no aliasing after a
//! weight drops and another buffer is made); once the weight drops, `upgrade` fails and the entry
//! is stale, swept at the next insert. Bounded in bytes, least recently used first out; a copy
//! larger than the bound is made for the call and not kept. Storage is never written in place
//! by an op (each returns a new tensor), so a live weight's copy never goes out of date.

use super::cached::CachedBuf;
use super::device::Device;
use crate::ops::precision::Precision;
use crate::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Bytes of narrow copies kept: the paper's 553M UNet in tf32 (4-byte words) is 2.2 GB.
pub const WEIGHT_CACHE_BYTES: usize = 3 << 30;

/// The copy's layout: `permute_cast`'s dims and source strides, and the precision.
pub type Layout = ([usize; 4], [usize; 4], Precision);

struct Entry<D: Device> {
    weight: Weak<CachedBuf<D>>,
    narrow: Arc<CachedBuf<D>>,
    last_use: u64,
}

struct Inner<D: Device> {
    entries: HashMap<(usize, Layout), Entry<D>>,
    bytes: usize,
    clock: u64,
    hits: u64,
    misses: u64,
}

pub struct WeightCache<D: Device> {
    inner: Mutex<Inner<D>>,
    limit: usize,
}

/// What the cache holds, and its hits and misses since the backend started: a test's view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightCacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
}

impl<D: Device> WeightCache<D> {
    pub fn new(limit: usize) -> Self {
        WeightCache { inner: Mutex::new(Inner { entries: HashMap::new(), bytes: 0, clock: 0, hits: 0, misses: 0 }), limit }
    }

    /// The narrow copy of `weight` in `layout`: the kept one, or `make()`'s, kept if it fits.
    pub fn get_or_make(&self, weight: &Arc<CachedBuf<D>>, layout: Layout, make: impl FnOnce() -> Result<CachedBuf<D>>) -> Result<Arc<CachedBuf<D>>> {
        let key = (Arc::as_ptr(weight) as usize, layout);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.clock += 1;
        let now = g.clock;
        // the Weak pins the address: a live Arc there is this weight
        let hit = g.entries.get_mut(&key).filter(|e| e.weight.upgrade().is_some_and(|w| Arc::ptr_eq(&w, weight))).map(|e| {
            e.last_use = now;
            e.narrow.clone()
        });
        if let Some(narrow) = hit {
            g.hits += 1;
            return Ok(narrow);
        }
        g.misses += 1;
        let narrow = Arc::new(make()?);
        let size = narrow.bytes();
        if size > self.limit {
            return Ok(narrow);
        }
        // stale entries (their weight dropped) first, then the least recently used
        g.entries.retain(|_, e| e.weight.strong_count() > 0);
        g.entries.remove(&key);
        g.bytes = g.entries.values().map(|e| e.narrow.bytes()).sum();
        while g.bytes + size > self.limit {
            let Some(oldest) = g.entries.iter().min_by_key(|(_, e)| e.last_use).map(|(k, _)| *k) else { break };
            if let Some(e) = g.entries.remove(&oldest) {
                g.bytes -= e.narrow.bytes();
            }
        }
        g.bytes += size;
        g.entries.insert(key, Entry { weight: Arc::downgrade(weight), narrow: narrow.clone(), last_use: now });
        Ok(narrow)
    }

    pub fn stats(&self) -> WeightCacheStats {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        WeightCacheStats { entries: g.entries.len(), bytes: g.bytes, hits: g.hits, misses: g.misses }
    }

    /// Drops every copy (their buffers go back to the device cache); the counts go on.
    pub fn clear(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.entries.clear();
        g.bytes = 0;
    }
}
