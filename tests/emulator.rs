//! The CPU emulator of CUDA itself: warp intrinsics and barrier counts give the hardware's answers
//! under every schedule, a missing __syncthreads is exposed, and a barrier that can never complete
//! comes back as an error instead of a hang. Bad launches are errors too.

use ran::backend::cuda::device::{Arg, Device, LaunchCfg};
use ran::backend::cuda::emu::{set_schedule, EmuDevice, EmuBuf, Schedule};
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
    let _g = SCHED.lock().unwrap();
    let d = EmuDevice;
    let n = 64usize;
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(3)] {
        set_schedule(sched);
        let out = d.alloc_zeros(4 * n * 4).unwrap();
        d.launch("selftest_warp_ops_i32", &cfg(1, n as u32, 0), &[Arg::Buf(&out)]).unwrap();
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
    let _g = SCHED.lock().unwrap();
    let d = EmuDevice;
    let (blocks, n) = (3usize, 64usize);
    let input: Vec<i32> = (0..(blocks * n) as i32).collect();
    let want: Vec<i32> = input.chunks(n).flat_map(|c| c.iter().rev().copied().collect::<Vec<_>>()).collect();
    let inb = d.upload(bytemuck::cast_slice(&input)).unwrap();
    for sched in [Schedule::Forward, Schedule::Reverse, Schedule::Random(11)] {
        set_schedule(sched);
        for with_barrier in [1, 0] {
            let out = d.alloc_zeros(blocks * n * 4).unwrap();
            d.launch("selftest_reverse_i32", &cfg(blocks as u32, n as u32, (n * 4) as u32), &[Arg::Buf(&inb), Arg::Buf(&out), Arg::I32(with_barrier)]).unwrap();
            let got = ints(&d, &out, blocks * n);
            if with_barrier == 1 {
                assert_eq!(got, want, "{sched:?}: correct kernel");
            } else {
                assert_ne!(got, want, "{sched:?}: a missing __syncthreads went unnoticed");
            }
        }
    }
    set_schedule(Schedule::Forward);
}

#[test]
fn deadlock_is_an_error_not_a_hang() {
    let d = EmuDevice;
    let out = d.alloc_zeros(32 * 4).unwrap();
    let e = d.launch("selftest_deadlock_i32", &cfg(2, 32, 0), &[Arg::Buf(&out)]).unwrap_err().to_string();
    assert!(e.contains("deadlock") && e.contains("1 threads at __syncthreads") && e.contains("31 at a warp barrier"), "{e}");
    // the emulator is still usable afterwards
    let out = d.alloc_zeros(4 * 32 * 4).unwrap();
    d.launch("selftest_warp_ops_i32", &cfg(1, 32, 0), &[Arg::Buf(&out)]).unwrap();
}

#[test]
fn bad_launches_are_errors() {
    let d = EmuDevice;
    let out = d.alloc_zeros(64).unwrap();
    let e = d.launch("no_such_kernel_f32", &cfg(1, 32, 0), &[Arg::Buf(&out)]).unwrap_err().to_string();
    assert!(e.contains("no_such_kernel_f32"), "{e}");
    let e = d.launch("selftest_warp_ops_i32", &cfg(1, 2048, 0), &[Arg::Buf(&out)]).unwrap_err().to_string();
    assert!(e.contains("bad launch configuration"), "{e}");
    let e = d.launch("selftest_reverse_i32", &cfg(1, 32, 300 * 1024), &[Arg::Buf(&out), Arg::Buf(&out), Arg::I32(1)]).unwrap_err().to_string();
    assert!(e.contains("shared memory"), "{e}");
}
