//! The CPU emulator of CUDA itself: warp intrinsics and barrier counts give the hardware's answers
//! under every schedule, a missing __syncthreads is exposed, and a barrier that can never complete
//! comes back as an error instead of a hang. Bad launches are errors too. Device buffers are
//! bounds-checked, and (in the instrumented build, cfg `emu_instrumented`) shared-memory and
//! cross-block global-memory races are reported by the race detector.
#![allow(unexpected_cfgs)] // `emu_instrumented` is set by build.rs when kernels are instrumented

use ran::backend::cuda::device::{Arg, Device, LaunchCfg};
use ran::backend::cuda::emu::{hook_calls, set_race_check, set_schedule, EmuBuf, EmuDevice, Schedule};
use ran::backend::cuda::launch;
use std::sync::Mutex;

/// The schedule is process-wide: tests that change it take turns.
static SCHED: Mutex<()> = Mutex::new(());

fn cfg(blocks: u32, threads: u32, smem: u32) -> LaunchCfg {
    LaunchCfg { grid: (blocks, 1, 1), block: (threads, 1, 1), smem_bytes: smem }
}

fn ints(d: &EmuDevice, b: &EmuBuf, n: usize) -> Vec<i32> {
    let mut v = vec![0i32; n];
    d.download(b, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}

#[test]
fn warp_intrinsics_and_barrier_counts_match_cuda_semantics() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let d = EmuDevice;
    let n = 64usize;
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(3)] {
        set_schedule(sched);
        let out = d.alloc_zeros(4 * n * 4).unwrap();
        launch::selftest_warp_ops_i32(&d, &cfg(1, n as u32, 0), &out).unwrap();
        let v = ints(&d, &out, 4 * n);
        for t in 0..n {
            let warp = t / 32 * 32;
            let ballot = (0..32).filter(|l| (warp + l) % 3 == 0).fold(0u32, |m, l| m | 1 << l);
            // shfl_down past the end of the warp returns the caller's own value
            let down = if t % 32 + 1 < 32 { t + 1 } else { t };
            let x5 = warp + ((t % 32) ^ 5);
            assert_eq!(v[4 * t] as u32, ballot, "{sched:?} ballot t={t}");
            assert_eq!(v[4 * t + 1] as usize, down, "{sched:?} shfl_down t={t}");
            assert_eq!(v[4 * t + 2] as usize, x5, "{sched:?} shfl_xor t={t}");
            assert_eq!(v[4 * t + 3] as usize, n / 2, "{sched:?} syncthreads_count t={t}");
        }
    }
    set_schedule(Schedule::Forward);
}

#[test]
fn missing_barrier_is_exposed_and_the_correct_kernel_passes() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let d = EmuDevice;
    let (blocks, n) = (3usize, 64usize);
    let input: Vec<i32> = (0..(blocks * n) as i32).collect();
    let want: Vec<i32> = input.chunks(n).flat_map(|c| c.iter().rev().copied().collect::<Vec<_>>()).collect();
    let inb = d.upload(bytemuck::cast_slice(&input)).unwrap();
    let was = set_race_check(true);
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(11)] {
        set_schedule(sched);
        for with_barrier in [1, 0] {
            let out = d.alloc_zeros(blocks * n * 4).unwrap();
            let r = launch::selftest_reverse_i32(&d, &cfg(blocks as u32, n as u32, (n * 4) as u32), &inb, &out, with_barrier);
            let got = ints(&d, &out, blocks * n);
            if with_barrier == 1 {
                r.unwrap();
                assert_eq!(got, want, "{sched:?}: correct kernel");
            } else if cfg!(emu_instrumented) {
                // the race detector names it, whatever the order
                let e = r.expect_err("the race detector missed a missing __syncthreads").to_string();
                assert!(e.contains("selftest_reverse_i32: shared-memory race (") && e.contains("dynamic shared memory"), "{sched:?}: {e}");
            } else {
                r.unwrap();
                assert_ne!(got, want, "{sched:?}: a missing __syncthreads went unnoticed");
            }
        }
    }
    set_race_check(was);
    set_schedule(Schedule::Forward);
}

#[test]
fn deadlock_is_an_error_not_a_hang() {
    let d = EmuDevice;
    let out = d.alloc_zeros(32 * 4).unwrap();
    let e = launch::selftest_deadlock_i32(&d, &cfg(2, 32, 0), &out).unwrap_err().to_string();
    assert!(e.contains("deadlock") && e.contains("1 threads at __syncthreads") && e.contains("31 at a warp barrier"), "{e}");
    // the emulator is still usable afterwards
    let out = d.alloc_zeros(4 * 32 * 4).unwrap();
    launch::selftest_warp_ops_i32(&d, &cfg(1, 32, 0), &out).unwrap();
}

#[test]
fn bad_launches_are_errors() {
    let d = EmuDevice;
    let out = d.alloc_zeros(64).unwrap();
    let e = d.launch("no_such_kernel_f32", &cfg(1, 32, 0), &[Arg::Buf(&out)]).unwrap_err().to_string();
    assert!(e.contains("no_such_kernel_f32"), "{e}");
    let e = launch::selftest_warp_ops_i32(&d, &cfg(1, 2048, 0), &out).unwrap_err().to_string();
    assert!(e.contains("bad launch configuration"), "{e}");
    let e = launch::selftest_reverse_i32(&d, &cfg(1, 32, 300 * 1024), &out, &out, 1).unwrap_err().to_string();
    assert!(e.contains("shared memory"), "{e}");
}

/// Device buffers are bounds-checked: the element just past the end sits on a guard page, so an
/// off-by-one store (e.g. `n <= N` in igemm.cuh) is an error naming the kernel, the argument, the
/// element and the buffer's size, under every schedule; the emulator stays usable afterwards.
#[test]
fn write_past_the_end_of_a_buffer_is_an_error_naming_kernel_argument_element_and_size() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let d = EmuDevice;
    let (blocks, n) = (3usize, 64usize);
    let input: Vec<i32> = (0..(blocks * n) as i32).collect();
    let inb = d.upload(bytemuck::cast_slice(&input)).unwrap();
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(5)] {
        set_schedule(sched);
        let short = d.alloc_zeros((blocks * n - 1) * 4).unwrap(); // one element too short
        let e = launch::selftest_reverse_i32(&d, &cfg(blocks as u32, n as u32, (n * 4) as u32), &inb, &short, 1);
        let e = e.expect_err("a store one past the end went unnoticed").to_string();
        let want = ["selftest_reverse_i32", "out-of-bounds write of argument 1", "at element 191 ", "a buffer of 191 elements of 4 bytes"];
        assert!(want.iter().all(|w| e.contains(w)), "{sched:?}: {e}");
        assert!(e.contains("block (2,0,0)"), "{sched:?}: the last block writes element 191: {e}");
    }
    set_schedule(Schedule::Forward);
    let out = d.alloc_zeros(blocks * n * 4).unwrap();
    launch::selftest_reverse_i32(&d, &cfg(blocks as u32, n as u32, (n * 4) as u32), &inb, &out, 1).unwrap();
    assert_eq!(ints(&d, &out, n)[0], n as i32 - 1);
}

/// A read past the end is caught too: index_select with a channel id out of range (the backend
/// rejects such ids; here the kernel is launched directly, as a buggy caller would).
#[test]
fn read_past_the_end_of_a_buffer_is_an_error() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner()); // forward order: thread 0 reads element 15 first
    let d = EmuDevice;
    let (c, s) = (3usize, 5usize);
    let x = d.upload(bytemuck::cast_slice(&vec![1.0f32; c * s])).unwrap();
    let ids = d.upload(bytemuck::cast_slice(&[c as i32])).unwrap();
    let y = d.alloc_zeros(s * 4).unwrap();
    let a = |v: usize| Arg::I32(v as i32);
    let e = d.launch("gather_channels_f32", &cfg(1, 256, 0), &[Arg::Buf(&x), Arg::Buf(&ids), Arg::Buf(&y), a(1), a(c), a(1), a(s)]).unwrap_err().to_string();
    assert!(e.contains("gather_channels_f32: out-of-bounds read of argument 0 at element 15 ") && e.contains("buffer of 15 elements"), "{e}");
}

/// Writes just before a buffer's start land in canary-filled slack checked after each launch
/// (the second line behind the guard pages); the canary is re-armed, so the next launch is clean.
#[test]
fn write_before_the_start_of_a_buffer_is_caught_by_the_canary() {
    let d = EmuDevice;
    let s = 4usize;
    let src = d.upload(bytemuck::cast_slice(&vec![2.0f32; s])).unwrap();
    let dst = d.alloc_zeros(s * 4).unwrap();
    let a = |v: i32| Arg::I32(v);
    // channel offset -1: writes dst[-4..-1]
    let e = d.launch("copy_channels_f32", &cfg(1, 256, 0), &[Arg::Buf(&src), a(1), a(0), Arg::Buf(&dst), a(1), a(-1), a(1), a(1), a(s as i32)]);
    let e = e.expect_err("a store before the start went unnoticed").to_string();
    assert!(e.contains("copy_channels_f32: out-of-bounds write of argument 3") && e.contains("before the start") && e.contains("canary"), "{e}");
    launch::copy_channels_f32(&d, &cfg(1, 256, 0), &src, 1, 0, &dst, 1, 0, 1, 1, s as i32).unwrap();
}

/// A pointer argument that is not inside any emulator buffer is refused before any thread runs.
#[test]
fn pointer_outside_every_buffer_is_refused() {
    let d = EmuDevice;
    let e = d.launch("selftest_warp_ops_i32", &cfg(1, 32, 0), &[Arg::I64(0x1000)]).unwrap_err().to_string();
    assert!(e.contains("selftest_warp_ops_i32: argument 0 is a pointer outside every emulator buffer"), "{e}");
}

/// Race detector, shared memory: GroupNorm's input gradient (group_norm_grad_sums_f32) calls
/// block_sum twice on one `scratch`; the barrier at the top of block_sum (kernels/common.cuh) keeps
/// the first call's readers from seeing the second call's writes. Without it the result is right in
/// every order the emulator runs (each interval finishes its reads before any thread runs ahead),
/// so only the detector can catch it. The forward is checked too (its statistics pass merges
/// moments through static shared memory, one barrier).
#[test]
#[cfg_attr(not(emu_instrumented), ignore = "needs the instrumented emulator build (build.rs: kernels/README.md)")]
fn race_detector_guards_block_sum_scratch_reuse() {
    use ran::backend::cuda::EmulatedCuda;
    use ran::backend::{Backend, GroupNormParams};
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    set_race_check(true);
    let (n, c, hw, groups) = (2usize, 8usize, 37usize, 2usize);
    let x: Vec<f32> = (0..n * c * hw).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03).collect();
    let p = GroupNormParams { groups, eps: 1e-5, silu: false };
    // float64 reference, gamma = 1, beta = 0
    let len = c / groups * hw;
    let gy: Vec<f32> = (0..n * c * hw).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.02).collect();
    let (mut want, mut want_gx) = (Vec::new(), Vec::new());
    for (g, gyg) in x.chunks(len).zip(gy.chunks(len)) {
        let m = g.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = g.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / len as f64;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        let xh: Vec<f64> = g.iter().map(|&v| (v as f64 - m) * rstd).collect();
        // gx = rstd·(gy − mean(gy) − x̂·mean(gy·x̂))
        let m1 = gyg.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let m2 = gyg.iter().zip(&xh).map(|(&v, h)| v as f64 * h).sum::<f64>() / len as f64;
        want.extend(xh.iter().map(|&h| h as f32));
        want_gx.extend(gyg.iter().zip(&xh).map(|(&v, h)| (rstd * (v as f64 - m1 - h * m2)) as f32));
    }
    let emu = EmulatedCuda::emulated();
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(7), Schedule::Preempt(7)] {
        set_schedule(sched);
        let t = |v: Vec<f32>, d: &[usize]| emu.from_host(d, &v).unwrap();
        let (ga, be) = (t(vec![1.0; c], &[c]), t(vec![0.0; c], &[c]));
        let xt = t(x.clone(), &[n, c, hw]);
        let y = emu.group_norm(&xt, &ga, &be, &p, None).unwrap_or_else(|e| panic!("{sched:?}: {e}"));
        let got = emu.to_host(&y).unwrap();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "{sched:?}: group norm differs from the float64 reference by {worst}");
        let gx = emu.group_norm_x_backward(&t(gy.clone(), &[n, c, hw]), &xt, &ga, &be, &p, None).unwrap_or_else(|e| panic!("{sched:?}: {e}"));
        let got = emu.to_host(&gx).unwrap();
        // gx carries rstd (≈ 1.2 here) times gy's scale (≈ 1)
        let worst = got.iter().zip(&want_gx).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 2e-5, "{sched:?}: group norm's input gradient differs from the float64 reference by {worst}");
    }
    set_schedule(Schedule::Forward);
    assert!(hook_calls() > 0, "kernels were built without instrumentation: the race detector saw nothing");
}

/// Race detector, global memory: two blocks of one launch writing one element (here copy_channels
/// with a destination of 0 channels, so both images land on the same elements) is an error.
#[test]
#[cfg_attr(not(emu_instrumented), ignore = "needs the instrumented emulator build (build.rs: kernels/README.md)")]
fn race_detector_reports_two_blocks_writing_one_element() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    set_race_check(true);
    let d = EmuDevice;
    let s = 256usize;
    let src = d.upload(bytemuck::cast_slice(&vec![1.0f32; 2 * s])).unwrap();
    let dst = d.alloc_zeros(s * 4).unwrap();
    let a = |v: i32| Arg::I32(v);
    let args = |dst_c: i32| [Arg::Buf(&src), a(1), a(0), Arg::Buf(&dst), a(dst_c), a(0), a(2), a(1), a(s as i32)];
    // 64 threads a block: the kernel copies float4s (s = 256 is 64 of them per image), so block 0
    // copies image 0 and block 1 image 1, onto the same elements
    let e = d.launch("copy_channels_f32", &cfg(2, 64, 0), &args(0)).expect_err("two blocks wrote one element unnoticed").to_string();
    assert!(e.contains("copy_channels_f32: global-memory race: blocks (") && e.contains("of argument 3 in one launch"), "{e}");
    // one image: no race
    let one = [Arg::Buf(&src), a(1), a(0), Arg::Buf(&dst), a(1), a(0), a(1), a(1), a(s as i32)];
    d.launch("copy_channels_f32", &cfg(2, 64, 0), &one).unwrap();
}

/// Preemption points: with switches at shared-memory accesses, the racy reversal (no barrier,
/// detector off) reads other threads' writes inside one interval, so its output differs from the
/// same random order without them; a correct kernel is unaffected.
#[test]
#[cfg_attr(not(emu_instrumented), ignore = "needs the instrumented emulator build (build.rs: kernels/README.md)")]
fn preemption_points_vary_the_order_inside_a_barrier_interval() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let was = set_race_check(false);
    let d = EmuDevice;
    let n = 256usize;
    let input: Vec<i32> = (0..n as i32).collect();
    let inb = d.upload(bytemuck::cast_slice(&input)).unwrap();
    let run = |sched: Schedule, barrier: i32| {
        set_schedule(sched);
        let out = d.alloc_zeros(n * 4).unwrap();
        launch::selftest_reverse_i32(&d, &cfg(1, n as u32, (n * 4) as u32), &inb, &out, barrier).unwrap();
        ints(&d, &out, n)
    };
    let plain = run(Schedule::Random(9), 0);
    let preempted = run(Schedule::Preempt(9), 0);
    let want: Vec<i32> = input.iter().rev().copied().collect();
    assert_eq!(run(Schedule::Preempt(9), 1), want, "a correct kernel under preemption");
    set_schedule(Schedule::Forward);
    set_race_check(was);
    let seen = |v: &[i32]| v.iter().enumerate().filter(|&(t, &x)| x == (n - 1 - t) as i32).count();
    assert_ne!(plain, preempted, "preemption points changed nothing");
    assert!(seen(&preempted) != seen(&plain), "as many threads saw their partner's write with and without preemption");
}
