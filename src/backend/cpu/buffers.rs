//! Reuse of the CPU backend's large buffers, so a forward pass does not pay the kernel for fresh
//! zeroed pages on every op's output (perf put that at ~7% of the 553M UNet's forward): a freed
//! tensor's buffer goes back to a pool by its exact length (a model's forward repeats the same
//! sizes, layer after layer and call after call) and the next op wanting that length takes it.
//!
//! Ops whose body writes every element of the output take it with `for_overwrite` (stale values,
//! never read); ops that accumulate into it take `zeroed`. The contract is checked by the tests
//! with `set_poison(true)`, which fills every `for_overwrite` buffer with NaN first, so an op that
//! leaves an element unwritten returns NaN instead of a plausible stale number.
//!
//! Bounded: buffers under `MIN_LEN` values stay with the allocator (its own free lists are fast
//! there), and the pool holds at most `RAN_CPU_POOL_MB` MiB (default 512, 128 in the `ran` command whose heap keeps freed buffers (src/heap.rs); 512: at the 553M UNet's 256² forward it kept 3/4 of what 1024 saved in system time for half the extra RSS, benches/RESULTS.md; 0 turns reuse off);
//! a buffer freed into a full pool is released.
//!
//! No extra peak memory from large buffers: a request of at least `EVICT_MIN_LEN` values that the
//! pool cannot serve first releases pooled buffers of other lengths of that size class (the
//! longest-held first) worth at least what it allocates, so large pooled plus live memory grows
//! only when the live tensors themselves exceed everything held so far — idle large buffers
//! never add to the peak (issue #17: the 553M detect in ≤ 2.5 GB; before, up to the cap).
//! Smaller ones (under 1 MiB each) are left alone: they cannot add much, and tests rely on them.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// 64 KiB of f32: below this, malloc's free lists serve without touching the kernel.
const MIN_LEN: usize = 16 * 1024;
const DEFAULT_POOL_MB: usize = 512;
/// The default cap when the process's heap keeps freed buffers itself (src/heap.rs): the heap
/// then does the pool's job for large buffers, and a 512 MiB pool on top of it only adds to the
/// peak (553M detect, f16 weights: 2565 MiB with 512, 2437 MiB with 128, the same system time).
pub const POOL_MB_WITH_KEEPING_HEAP: usize = 128;
static DEFAULT_MB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(DEFAULT_POOL_MB);

/// Sets the cap used when `RAN_CPU_POOL_MB` is not given; effective only before the first buffer.
pub fn set_default_cap_mb(mb: usize) {
    DEFAULT_MB.store(mb, Ordering::Relaxed);
}
/// 1 MiB of f32: requests from here on make room for themselves among buffers from here on.
const EVICT_MIN_LEN: usize = 256 * 1024;

static POISON: AtomicBool = AtomicBool::new(false);

/// Tests: fill every `for_overwrite` buffer with NaN before handing it out.
pub fn set_poison(on: bool) {
    POISON.store(on, Ordering::Relaxed);
}

struct Pool {
    /// by length: (when put, buffer), oldest first
    free: BTreeMap<usize, Vec<(u64, Vec<f32>)>>,
    bytes: usize,
    cap_bytes: usize,
    /// puts so far (the age of a pooled buffer)
    clock: u64,
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mb = std::env::var("RAN_CPU_POOL_MB").ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(DEFAULT_MB.load(Ordering::Relaxed));
        Mutex::new(Pool { free: BTreeMap::new(), bytes: 0, cap_bytes: mb.saturating_mul(1 << 20), clock: 0 })
    })
}

fn lock() -> std::sync::MutexGuard<'static, Pool> {
    // a panic elsewhere while holding the lock leaves the map consistent (every update is one step)
    pool().lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A pooled buffer of exactly `n` values (the most recently put: its pages are the warmest).
    fn take(&mut self, n: usize) -> Option<Vec<f32>> {
        let list = self.free.get_mut(&n)?;
        let (_, v) = list.pop()?;
        if list.is_empty() {
            self.free.remove(&n);
        }
        self.bytes -= n * 4;
        Some(v)
    }
    /// Keeps `v` unless that would exceed the cap; gives it back otherwise (to be released).
    fn put(&mut self, v: Vec<f32>) -> Option<Vec<f32>> {
        let bytes = v.len() * 4;
        if self.bytes + bytes > self.cap_bytes {
            return Some(v);
        }
        self.bytes += bytes;
        self.clock += 1;
        self.free.entry(v.len()).or_default().push((self.clock, v));
        None
    }
    /// Removes pooled buffers of at least `min_len` values, the longest-held first, until `bytes`
    /// are out or none is left; returns them (to be released outside the lock).
    fn evict(&mut self, bytes: usize, min_len: usize) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        let mut freed = 0;
        while freed < bytes {
            // the oldest buffer is at the front of its length's list
            let Some((&n, _)) = self.free.range(min_len..).min_by_key(|(_, l)| l[0].0) else { break };
            let list = self.free.get_mut(&n).expect("just found");
            let (_, v) = list.remove(0);
            if list.is_empty() {
                self.free.remove(&n);
            }
            self.bytes -= n * 4;
            freed += n * 4;
            out.push(v);
        }
        out
    }
}

fn take(n: usize) -> Option<Vec<f32>> {
    if n < MIN_LEN {
        return None;
    }
    let mut p = lock();
    if let Some(v) = p.take(n) {
        return Some(v);
    }
    if n >= EVICT_MIN_LEN {
        // a fresh allocation follows: make room for it from what the pool holds
        let released = p.evict(n * 4, EVICT_MIN_LEN);
        drop(p);
        drop(released);
    }
    None
}

fn give_back(v: Vec<f32>) {
    if v.len() >= MIN_LEN {
        // a refused buffer is freed at the end of this block, after the lock is released
        let _refused = lock().put(v);
    }
}

/// How the op bodies (generic over f32, which the engine runs, and f64, which the
/// finite-difference checks run) get their output buffers; only f32 is pooled.
pub trait Alloc: Copy + Send + Sync + 'static {
    /// `n` values that the caller writes, every one, before anything reads them.
    fn for_overwrite(n: usize) -> Vec<Self>;
    /// `n` zeros, for outputs that are accumulated into.
    fn zeroed(n: usize) -> Vec<Self>;
    /// Hands a buffer back for reuse.
    fn recycle(v: Vec<Self>);
}

/// `n` f32 the caller writes before reading (the `for_overwrite` contract), not zeroed: the heap
/// keeps freed memory (src/heap.rs), so a zeroed request is a memset of reused memory (4% of the
/// 553M forward), not free zero pages from the kernel. The tests run with `set_poison(true)`, which
/// fills these buffers with NaN instead, so an op that leaves a value unwritten shows there.
fn unwritten(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: the capacity is n; every value is written by the caller before it is read (the
    // contract above, checked under poison by tests/ops_vs_torch.rs and tests/effnet_fused.rs).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

impl Alloc for f32 {
    fn for_overwrite(n: usize) -> Vec<f32> {
        match take(n) {
            Some(mut v) => {
                if POISON.load(Ordering::Relaxed) {
                    v.fill(f32::NAN);
                }
                v
            }
            None if POISON.load(Ordering::Relaxed) => vec![f32::NAN; n],
            None => unwritten(n),
        }
    }
    fn zeroed(n: usize) -> Vec<f32> {
        match take(n) {
            Some(mut v) => {
                v.fill(0.0);
                v
            }
            None => vec![0.0; n],
        }
    }
    fn recycle(v: Vec<f32>) {
        give_back(v)
    }
}

impl Alloc for f64 {
    fn for_overwrite(n: usize) -> Vec<f64> {
        if POISON.load(Ordering::Relaxed) {
            vec![f64::NAN; n]
        } else {
            vec![0.0; n]
        }
    }
    fn zeroed(n: usize) -> Vec<f64> {
        vec![0.0; n]
    }
    fn recycle(_: Vec<f64>) {}
}

/// A buffer that goes back to the pool when dropped: a CPU tensor's storage, or an op's scratch.
pub struct Pooled<T: Alloc>(Vec<T>);

impl<T: Alloc> Pooled<T> {
    pub fn new(v: Vec<T>) -> Self {
        Pooled(v)
    }
    pub fn for_overwrite(n: usize) -> Self {
        Pooled(T::for_overwrite(n))
    }
}

impl<T: Alloc> Deref for Pooled<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T: Alloc> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

impl<T: Alloc> Drop for Pooled<T> {
    fn drop(&mut self) {
        T::recycle(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // one test touches the global pool, so the counts below are not disturbed by a sibling
    #[test]
    fn buffers_come_back_by_exact_length_poisoned_or_zeroed() {
        let n = MIN_LEN + 12_345;
        let a = f32::for_overwrite(n);
        let ptr = a.as_ptr();
        f32::recycle(a);
        // another length does not get it; the same length does
        let b = f32::for_overwrite(n + 1);
        assert_ne!(b.as_ptr(), ptr);
        let mut c = f32::for_overwrite(n);
        assert_eq!((c.as_ptr(), c.len()), (ptr, n));
        c.fill(3.0);
        f32::recycle(c);
        let z = f32::zeroed(n);
        assert_eq!(z.as_ptr(), ptr);
        assert!(z.iter().all(|&v| v == 0.0));
        f32::recycle(z);
        set_poison(true);
        let p = f32::for_overwrite(n);
        set_poison(false);
        assert_eq!(p.as_ptr(), ptr);
        assert!(p.iter().all(|v| v.is_nan()));
        // small buffers are the allocator's
        let s = f32::for_overwrite(MIN_LEN - 1);
        let sp = s.as_ptr();
        f32::recycle(s);
        assert!(take(MIN_LEN - 1).is_none(), "{sp:?} was pooled");
        drop(b);
        // a Pooled storage returns its buffer on drop
        let q = Pooled::new(p);
        drop(q);
        assert_eq!(take(n).map(|v| v.as_ptr()), Some(ptr));
    }

    #[test]
    fn the_pool_refuses_buffers_beyond_its_cap() {
        let mut p = Pool { free: BTreeMap::new(), bytes: 0, cap_bytes: 8 * MIN_LEN, clock: 0 };
        assert!(p.put(vec![0.0; MIN_LEN]).is_none());
        assert!(p.put(vec![0.0; MIN_LEN]).is_none());
        assert_eq!(p.put(vec![0.0; MIN_LEN]).map(|v| v.len()), Some(MIN_LEN), "a third would exceed 8·MIN_LEN bytes");
        assert_eq!((p.bytes, p.free[&MIN_LEN].len()), (8 * MIN_LEN, 2));
        assert!(p.take(MIN_LEN).is_some() && p.take(MIN_LEN).is_some() && p.take(MIN_LEN).is_none());
        assert_eq!((p.bytes, p.free.len()), (0, 0));
    }

    #[test]
    fn a_miss_releases_the_longest_held_buffers_worth_its_size() {
        let mut p = Pool { free: BTreeMap::new(), bytes: 0, cap_bytes: usize::MAX, clock: 0 };
        let (small, a, b, c) = (MIN_LEN, 2 * MIN_LEN, 3 * MIN_LEN, 4 * MIN_LEN);
        for n in [small, a, b, a, c] {
            assert!(p.put(vec![0.0; n]).is_none());
        }
        // the oldest of ≥ 2·MIN_LEN first: a (put 2nd), then b (3rd): 5·MIN_LEN values cover a
        // request of 4.5·MIN_LEN; the older small one is not a candidate
        let out = p.evict(4 * (9 * MIN_LEN / 2), a);
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(p.bytes, 4 * (small + a + c));
        assert_eq!(p.free.keys().copied().collect::<Vec<_>>(), vec![small, a, c]);
        // more than held: every candidate goes, then none is left
        assert_eq!(p.evict(usize::MAX, a).len(), 2);
        assert_eq!((p.bytes, p.free.len(), p.evict(1, a).len()), (4 * small, 1, 0));
        assert_eq!(p.evict(1, 0).len(), 1);
    }
}
