//! The CUDA backend's host side on the emulator: fresh buffers hold NaN (a kernel relying on
//! zero-fill fails), the caching allocator reuses without aliasing a live buffer, releases above
//! its threshold and trims on out-of-memory, RAN_CUDA_SYNC's per-launch sync, the out-of-memory
//! message, and exact driver-call counts for a short known sequence of ops.

use ran::backend::cuda::cached::{CacheOptions, CachedDevice};
use ran::backend::cuda::device::{Device, LaunchCfg};
use ran::backend::cuda::emu::{EmuDevice, FRESH_WORD};
use ran::backend::cuda::{launch, CudaBackend, EmulatedCuda};
use ran::backend::driver_counts::DriverCounts;
use ran::backend::{Activation, Backend};

fn opts() -> CacheOptions {
    CacheOptions { release_threshold: 1 << 30, mem_limit: None, sync_each_launch: false }
}

fn floats<D: Device>(d: &D, b: &D::Buf, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    d.download(b, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}

fn ew(n: usize) -> LaunchCfg {
    LaunchCfg { grid: (n.div_ceil(256) as u32, 1, 1), block: (256, 1, 1), smem_bytes: 0 }
}

/// embedding_w_backward accumulates with atomics, so it needs a zeroed table: into a buffer from
/// `alloc` (uninitialised) every element comes out NaN — what would happen to any kernel that
/// leaned on the old zero-fill — and into `alloc_zeros` the sums are right.
#[test]
fn nan_fill_catches_a_kernel_relying_on_zeros() {
    let d = EmuDevice;
    let fresh = d.alloc(12).unwrap();
    let mut words = [0u32; 3];
    d.download(&fresh, bytemuck::cast_slice_mut(&mut words)).unwrap();
    assert_eq!(words, [FRESH_WORD; 3], "a fresh buffer holds quiet NaNs");
    assert!(f32::from_bits(FRESH_WORD).is_nan());

    let (rows, dim) = (3usize, 4usize);
    let gy: Vec<f32> = (0..rows * dim).map(|i| i as f32).collect();
    let ids = [1i32, 1, 0]; // row 1 twice, row 2 never
    let gyb = d.upload(bytemuck::cast_slice(&gy)).unwrap();
    let idb = d.upload(bytemuck::cast_slice(&ids)).unwrap();
    let run = |gt: &<EmuDevice as Device>::Buf| {
        launch::embedding_w_backward_f32(&d, &ew(rows * dim), &gyb, &idb, gt, rows as i32, dim as i32).unwrap();
        floats(&d, gt, rows * dim)
    };
    let relying = run(&d.alloc(rows * dim * 4).unwrap());
    assert!(relying.iter().all(|v| v.is_nan()), "atomics into an uninitialised table must show NaN: {relying:?}");
    let zeroed = run(&d.alloc_zeros(rows * dim * 4).unwrap());
    // by hand: table row 0 = gy row 2, row 1 = gy rows 0 + 1, row 2 untouched
    let want = [8., 9., 10., 11., 4., 6., 8., 10., 0., 0., 0., 0.];
    assert_eq!(zeroed, want);
}

/// A buffer handed out again by the cache is NaN again, not the previous owner's values (stale
/// data could hide a missing write just as zeros did).
#[test]
fn a_reused_buffer_is_poisoned_again() {
    let c = CachedDevice::new(EmuDevice, opts());
    let a = c.upload(bytemuck::cast_slice(&[1f32, 2., 3., 4.])).unwrap();
    let addr = a.raw().addr();
    drop(a);
    let b = c.alloc(16).unwrap();
    assert_eq!(b.raw().addr(), addr, "same size class: the cached buffer is reused");
    assert!(floats(&c, &b, 4).iter().all(|v| v.is_nan()));
}

/// alloc/free/alloc reuses the buffer (one device allocation, one cache hit); a buffer that is
/// still alive is never handed out, and writing the new one leaves the live one intact.
#[test]
fn the_cache_reuses_but_never_aliases_a_live_buffer() {
    let c = CachedDevice::new(EmuDevice, opts());
    let live = c.upload(bytemuck::cast_slice(&[7f32; 64])).unwrap();
    let other = c.alloc(256).unwrap();
    assert_ne!(other.raw().addr(), live.raw().addr(), "a live buffer must not be handed out");
    c.write(&other, bytemuck::cast_slice(&[-1f32; 64])).unwrap();
    assert_eq!(floats(&c, &live, 64), vec![7f32; 64]);
    let addr = other.raw().addr();
    drop(other);
    let again = c.alloc(256).unwrap();
    assert_eq!(again.raw().addr(), addr);
    assert_eq!(c.counts().allocs, 2, "two device allocations: `live` and `other`; `again` is a hit");
    assert_eq!(c.cache_hits(), 1);
    let smaller = c.alloc(252).unwrap(); // another class (the emulator's are exact sizes)
    assert_ne!(smaller.raw().addr(), addr);
    assert_eq!(c.counts().allocs, 3);
}

/// Through the backend: a tensor whose storage is shared (a reshape) keeps its buffer while any
/// handle lives; ops run after dropping the other handle get other buffers and leave it intact.
#[test]
fn a_tensor_kept_by_a_second_handle_is_not_reused() {
    let b = CudaBackend::with_options(EmuDevice, opts());
    let x = b.from_host(&[2, 8], &[3.0; 16]).unwrap();
    let view = b.reshape(&x, &[16]).unwrap();
    drop(x);
    let ys: Vec<_> = (0..4).map(|_| b.activation(&view, Activation::Relu).unwrap()).collect();
    for y in &ys {
        assert_ne!(y.storage().raw().addr(), view.storage().raw().addr());
    }
    assert_eq!(b.to_host(&view).unwrap(), vec![3.0; 16]);
}

/// Cached bytes above the release threshold go back to the device at once.
#[test]
fn cached_bytes_above_the_threshold_are_released() {
    let c = CachedDevice::new(EmuDevice, CacheOptions { release_threshold: 1000, ..opts() });
    drop(c.alloc(600).unwrap());
    assert_eq!(c.cached_and_held_bytes(), (600, 600));
    drop(c.alloc(700).unwrap());
    // 1300 cached > 1000: the largest class goes first
    assert_eq!(c.cached_and_held_bytes(), (600, 600));
    assert_eq!(c.counts().frees, 1);
    c.trim();
    assert_eq!(c.cached_and_held_bytes(), (0, 0));
    assert_eq!(c.counts().frees, 2);
}

/// Under a memory limit, an allocation that does not fit beside the cache first trims it and
/// succeeds; one larger than the device is a clear error naming the bytes, the free and total
/// memory and what to reduce.
#[test]
fn out_of_memory_trims_then_fails_clearly() {
    let c = CachedDevice::new(EmuDevice, CacheOptions { mem_limit: Some(1 << 20), ..opts() });
    drop(c.alloc(600_000).unwrap());
    let b = c.alloc(700_000).expect("the cached 600 kB is freed and the allocation retried");
    assert_eq!(c.counts().frees, 1);
    let e = c.alloc(500_000).err().expect("700 kB live + 500 kB > 1 MiB").to_string();
    for want in ["cuda-emulator", "out of device memory allocating 500000 bytes", "0.3 MiB free of 1.0 MiB", "reduce the batch (--batch)", "precision"] {
        assert!(e.contains(want), "`{want}` missing from: {e}");
    }
    drop(b);
    c.alloc(500_000).expect("fits once the 700 kB is dropped");
}

/// RAN_CUDA_SYNC=1: one synchronisation after every launch, results unchanged.
#[test]
fn sync_after_every_launch_runs() {
    let on = CudaBackend::with_options(EmuDevice, CacheOptions { sync_each_launch: true, ..opts() });
    let off = CudaBackend::with_options(EmuDevice, opts());
    let v: Vec<f32> = (0..40).map(|i| i as f32 - 20.0).collect();
    let run = |b: &EmulatedCuda| {
        let x = b.from_host(&[40], &v).unwrap();
        let y = b.activation(&x, Activation::Silu).unwrap();
        let z = b.add(&y, &x).unwrap();
        b.to_host(&z).unwrap()
    };
    let (a, z) = (run(&on), run(&off));
    assert_eq!(a, z);
    let (n_on, n_off) = (on.driver().counts(), off.driver().counts());
    assert_eq!(n_on.launches, 2);
    assert_eq!(n_on.syncs, n_off.syncs + 2, "one sync per launch on top of the download's");
    assert!(on.driver().options().sync_each_launch);
}

/// The env switches parse, and bad values are refused with the variable named.
#[test]
fn cache_options_from_env_values() {
    // only this test in the binary touches these variables; the others set their options directly
    std::env::set_var("RAN_CUDA_SYNC", "1");
    std::env::set_var("RAN_EMU_MEM_LIMIT", "4096");
    let o = CacheOptions::from_env(7, true).unwrap();
    assert_eq!(o, CacheOptions { release_threshold: 7, mem_limit: Some(4096), sync_each_launch: true });
    assert_eq!(CacheOptions::from_env(7, false).unwrap().mem_limit, None, "the limit is the emulator's only");
    std::env::set_var("RAN_CUDA_SYNC", "yes");
    assert!(CacheOptions::from_env(7, true).unwrap_err().contains("RAN_CUDA_SYNC"));
    std::env::set_var("RAN_CUDA_SYNC", "0");
    std::env::set_var("RAN_EMU_MEM_LIMIT", "4k");
    assert!(CacheOptions::from_env(7, true).unwrap_err().contains("RAN_EMU_MEM_LIMIT"));
    std::env::remove_var("RAN_CUDA_SYNC");
    std::env::remove_var("RAN_EMU_MEM_LIMIT");
}

/// Exact driver calls of a known sequence, counted by hand from what each op does.
#[test]
fn driver_calls_are_counted_exactly() {
    let b = CudaBackend::with_options(EmuDevice, opts());
    let c0 = b.driver().counts();
    assert_eq!(c0, DriverCounts::default());
    let step = || {
        let x = b.from_host(&[4, 8], &[0.5; 32]).unwrap(); // alloc + copy
        let y = b.activation(&x, Activation::Relu).unwrap(); // alloc + launch
        let z = b.add(&x, &y).unwrap(); // alloc + launch
        b.to_host(&z).unwrap() // copy + sync
    };
    assert_eq!(step(), vec![1.0; 32]);
    let first = b.driver().counts();
    assert_eq!(first, DriverCounts { launches: 2, allocs: 3, copies: 2, syncs: 1, ..DriverCounts::default() });
    step();
    // the same sizes again: every buffer comes from the cache
    assert_eq!(b.driver().counts() - first, DriverCounts { launches: 2, copies: 2, syncs: 1, ..DriverCounts::default() });
    assert_eq!(b.driver().cache_hits(), 3);

    // an op that needs zeros: one memset, plus the ids' upload (a fresh 12-byte buffer) and a launch
    let before = b.driver().counts();
    let gy = b.from_host(&[3, 4], &[1.0; 12]).unwrap(); // a new size (48 bytes): alloc + copy
    let gt = b.embedding_w_backward(&gy, &[2, 0, 2], 3).unwrap();
    let d = b.driver().counts() - before;
    assert_eq!(d, DriverCounts { launches: 1, allocs: 3, memsets: 1, copies: 2, ..DriverCounts::default() }, "{d}");
    assert_eq!(b.to_host(&gt).unwrap(), [1., 1., 1., 1., 0., 0., 0., 0., 2., 2., 2., 2.]);
}
