//! Winograd-transformed weights computed once per weight tensor instead of once per call (the UNet
//! runs every conv 3× per image, over many images, with the same weights).
//!
//! Keyed by the tensor's storage: the address of its `Arc` and the orientation (forward or ∂x).
//! The entry holds a `Weak` to that `Arc`, so while the entry lives the allocation cannot be freed
//! and the address handed to a new tensor (a freed-and-reused address cannot alias), and an entry
//! whose tensor was dropped is recognised by its zero strong count and purged. CPU storage is never
//! written after it is built (no `&mut` access through the shared `Arc`), so a live tensor's entry
//! cannot go stale.
//!
//! Bounded: the transformed weights held take at most `RAN_WINOGRAD_CACHE_MB` MiB (default 256;
//! 4× the 3×3 weights they come from, so the default holds every transformed weight of a UNet with
//! up to 64 MiB of 3×3 weights). 256, not 512: since the transform runs 8 kernels at a time, the
//! 553M model's detect spends about as much CPU with no cache as with 512 MiB (60.0 / 58.2 s user,
//! index mode) while its peak RSS is 2239 / 2502 MiB (cap 256: 2250 MiB), and the 128-channel UNet
//! at 64² still gains its 12% (470–480 ms user per forward at 256 and at 512, 540 ms at 0;
//! benches/RESULTS.md). When full, a new weight is transformed for the call and not
//! kept: first come, first kept, because under the cyclic access of a forward pass bigger than the
//! cap, evicting the least recently used would miss on every call.

use super::buffers::Pooled;
use super::resident::Values;
use super::winograd::{transform_weights, Orient};
use crate::ops::contract::Conv2dGeom;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

const DEFAULT_CACHE_MB: usize = 256;

pub type Storage = Arc<Values>;

struct Entry {
    owner: Weak<Values>,
    u: Arc<Pooled<f32>>,
}

struct Cache {
    map: HashMap<(usize, Orient), Entry>,
    bytes: usize,
    cap_bytes: usize,
}

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let c = CACHE.get_or_init(|| {
        let mb = std::env::var("RAN_WINOGRAD_CACHE_MB").ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(DEFAULT_CACHE_MB);
        Mutex::new(Cache { map: HashMap::new(), bytes: 0, cap_bytes: mb.saturating_mul(1 << 20) })
    });
    // every update below is one step, so a panic elsewhere cannot leave the map inconsistent
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(w: &Storage, orient: Orient) -> (usize, Orient) {
    (Arc::as_ptr(w) as usize, orient)
}

impl Cache {
    fn get(&self, w: &Storage, orient: Orient) -> Option<Arc<Pooled<f32>>> {
        let e = self.map.get(&key(w, orient))?;
        // the Weak pins the address, so a live owner at this key is `w` itself; checked anyway
        e.owner.upgrade().filter(|o| Arc::ptr_eq(o, w)).map(|_| e.u.clone())
    }
    fn purge_dead(&mut self) {
        let mut freed = 0;
        self.map.retain(|_, e| {
            let live = e.owner.strong_count() > 0;
            if !live {
                freed += e.u.len() * 4;
            }
            live
        });
        self.bytes -= freed;
    }
}

/// The transformed weight of `w` for `orient`, from the cache or computed (and kept if it fits).
pub fn transformed(w: &Storage, g: &Conv2dGeom, orient: Orient) -> Arc<Pooled<f32>> {
    if let Some(u) = cache().get(w, orient) {
        return u;
    }
    // computed outside the lock; two threads missing at once both compute, one entry is kept
    let u = Arc::new(Pooled::new(transform_weights(&w.f32(), g, orient)));
    let mut c = cache();
    c.purge_dead();
    let bytes = u.len() * 4;
    if c.get(w, orient).is_none() && c.bytes + bytes <= c.cap_bytes {
        c.bytes += bytes;
        c.map.insert(key(w, orient), Entry { owner: Arc::downgrade(w), u: u.clone() });
    }
    u
}

/// Whether the transformed weight of `w` for `orient` is held (tests).
pub fn is_cached(w: &Storage, orient: Orient) -> bool {
    cache().get(w, orient).is_some()
}

/// (entries, bytes) held, after dropping the entries of freed weights (tests, reports).
pub fn held() -> (usize, usize) {
    let mut c = cache();
    c.purge_dead();
    (c.map.len(), c.bytes)
}
