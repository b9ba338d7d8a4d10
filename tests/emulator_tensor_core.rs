//! The emulator's tensor-core primitives (kernels/tc.cuh, kernels/emu/cuda_emu_tc.h), through the
//! probes of kernels/selftest_tc.cu: mma fragment layouts bit-exact against a plain matrix product
//! (integer-valued inputs, so every product and sum is exact and any misplaced element shows),
//! ldmatrix against the PTX ISA's definition and paired with mma, bf16/f16 rounding against a
//! table torch made (tools/reference/make_rounding_table.py), cp.async's late landing and its
//! poison, misaligned vector accesses, the 48 KiB shared-memory opt-in (static shared memory
//! and registers counted as the driver counts them) and partial-warp mma.
#![allow(unexpected_cfgs)] // `emu_instrumented` is set by build.rs when kernels are instrumented

#[path = "common/paths.rs"]
mod paths;

use ran::backend::cuda::device::{Device, LaunchCfg};
use ran::backend::cuda::emu::{set_race_check, set_schedule, EmuBuf, EmuDevice, Schedule};
use ran::backend::cuda::launch;
use std::sync::Mutex;

/// The schedule and the race detector are process-wide: tests that change them take turns.
static SCHED: Mutex<()> = Mutex::new(());

fn cfg(blocks: u32, threads: u32, smem: u32) -> LaunchCfg {
    LaunchCfg { grid: (blocks, 1, 1), block: (threads, 1, 1), smem_bytes: smem }
}

fn up<T: bytemuck::Pod>(d: &EmuDevice, v: &[T]) -> EmuBuf {
    d.upload(bytemuck::cast_slice(v)).unwrap()
}

fn down<T: bytemuck::Pod + Default + Clone>(d: &EmuDevice, b: &EmuBuf, n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    d.download(b, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}

/// Small integers, a different pattern per (seed, index): exact in bf16, f16 and tf32.
fn ints(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 17) as f32 - 8.0
        })
        .collect()
}

/// c + a·b in f64 (exact here), a m×k, b k×n, row-major.
fn matmul(a: &[f32], b: &[f32], c: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    (0..m * n).map(|i| (0..k).fold(c[i] as f64, |s, j| s + a[i / n * k + j] as f64 * b[j * n + i % n] as f64) as f32).collect()
}

fn bf16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect()
}
fn f16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| half::f16::from_f32(x).to_bits()).collect()
}

/// Catches: a misplaced register, half or row in the A/B/C fragment layouts of m16n8k16 (either in
/// the emulator or in how kernels are told to load them), and a bf16/f16 mix-up of the decoding.
#[test]
fn mma_m16n8k16_layouts_are_bit_exact_for_bf16_and_f16() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let d = EmuDevice;
    let (a, b, c) = (ints(1, 256), ints(2, 128), ints(3, 128));
    let want = matmul(&a, &b, &c, 16, 16, 8);
    for sched in Schedule::all(5) {
        set_schedule(sched);
        for (kind, enc) in [(0, bf16_bits as fn(&[f32]) -> Vec<u16>), (1, f16_bits)] {
            let out = d.alloc_zeros(128 * 4).unwrap();
            launch::selftest_mma_m16n8k16_f32(&d, &cfg(1, 32, 0), &up(&d, &enc(&a)), &up(&d, &enc(&b)), &up(&d, &c), &out, kind, 32).unwrap();
            assert_eq!(down::<f32>(&d, &out, 128), want, "{sched:?} kind {kind}");
        }
    }
    set_schedule(Schedule::Forward);
}

/// Catches: the tf32 layout differs from the 16-bit one (a0..a3 are (g,t), (g+8,t), (g,t+4),
/// (g+8,t+4)); reusing the m16n8k16 mapping for it would misplace half of A and B.
#[test]
fn mma_m16n8k8_tf32_layout_is_bit_exact() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let d = EmuDevice;
    let (a, b, c) = (ints(4, 128), ints(5, 64), ints(6, 128));
    let want = matmul(&a, &b, &c, 16, 8, 8);
    for sched in Schedule::all(6) {
        set_schedule(sched);
        let out = d.alloc_zeros(128 * 4).unwrap();
        launch::selftest_mma_m16n8k8_tf32_f32(&d, &cfg(1, 32, 0), &up(&d, &a), &up(&d, &b), &up(&d, &c), &out).unwrap();
        assert_eq!(down::<f32>(&d, &out, 128), want, "{sched:?}");
    }
    set_schedule(Schedule::Forward);
}

/// Catches: ldmatrix reading rows by lane index instead of by the lanes' addresses, the wrong
/// lanes' addresses for matrix i (8i..8i+7), a swapped element pair, and .trans not transposing.
#[test]
fn ldmatrix_x1_x2_x4_and_trans_follow_the_lanes_row_addresses() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let d = EmuDevice;
    let m: Vec<u16> = (0..256u16).map(|i| i * 3 + 1).collect(); // 32 rows of 8, all distinct
    let rows: Vec<i32> = (0..32).map(|l| (l * 13 + 5) % 32).collect(); // lane l gives row rows[l]
    let mb = up(&d, &m);
    let rb = up(&d, &rows);
    for sched in Schedule::all(7) {
        set_schedule(sched);
        for mode in 0..6 {
            let (nmat, trans) = ([1, 2, 4][mode % 3], mode >= 3);
            let out = d.alloc_zeros(128 * 4).unwrap();
            launch::selftest_ldmatrix_b16(&d, &cfg(1, 32, 512), &mb, &rb, &out, mode as i32, 0).unwrap();
            let got = down::<u32>(&d, &out, 128);
            for lane in 0..32usize {
                for i in 0..4usize {
                    // matrix i's row j is the stored row that lane 8i+j points at
                    let el = |j: usize, col: usize| m[rows[8 * i + j] as usize * 8 + col] as u32;
                    let (g, t) = (lane >> 2, lane & 3);
                    let want = if i >= nmat {
                        0
                    } else if !trans {
                        el(g, 2 * t) | el(g, 2 * t + 1) << 16
                    } else {
                        el(2 * t, g) | el(2 * t + 1, g) << 16
                    };
                    assert_eq!(got[4 * lane + i], want, "{sched:?} mode {mode} lane {lane} reg {i}");
                }
            }
        }
    }
    set_schedule(Schedule::Forward);
}

/// Catches: an ldmatrix convention that disagrees with mma's fragments (the pairing every
/// tensor-core GEMM relies on), for B both n-major (plain) and k-major (.trans).
#[test]
fn ldmatrix_feeds_mma_the_fragments_it_expects() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let d = EmuDevice;
    let (a, b) = (ints(7, 256), ints(8, 128));
    let bt: Vec<f32> = (0..128).map(|i| b[(i % 16) * 8 + i / 16]).collect(); // [n][k]
    let want = matmul(&a, &b, &[0.0; 128], 16, 16, 8);
    let (ab, bb, btb) = (up(&d, &bf16_bits(&a)), up(&d, &bf16_bits(&b)), up(&d, &bf16_bits(&bt)));
    for sched in Schedule::all(8) {
        set_schedule(sched);
        for trans in [0, 1] {
            let out = d.alloc_zeros(128 * 4).unwrap();
            launch::selftest_mma_ldmatrix_bf16_f32(&d, &cfg(1, 32, 768), &ab, &btb, &bb, &out, trans).unwrap();
            assert_eq!(down::<f32>(&d, &out, 128), want, "{sched:?} trans_b {trans}");
        }
    }
    set_schedule(Schedule::Forward);
}

/// tests/fixtures/rounding_bf16_f16.bin: (f32 bits, torch's bf16 bits, torch's f16 bits).
fn rounding_table() -> Vec<(u32, u16, u16)> {
    let p = paths::fixture_path("rounding_bf16_f16.bin");
    let raw = std::fs::read(&p).expect("tests/fixtures/rounding_bf16_f16.bin (run tools/reference/make_rounding_table.py)");
    assert_eq!(&raw[..8], b"RNDTBL01", "{}: not a rounding table", p.display());
    let n = u32::from_le_bytes(raw[8..12].try_into().unwrap()) as usize;
    assert_eq!(raw.len(), 12 + 8 * n, "{}: truncated", p.display());
    raw[12..].chunks_exact(8).map(|r| (u32::from_le_bytes(r[..4].try_into().unwrap()), u16::from_le_bytes([r[4], r[5]]), u16::from_le_bytes([r[6], r[7]]))).collect()
}

/// tf32 by its definition (cvt.rna): the nearer of the two neighbours with 10 mantissa bits,
/// ties away from zero; compared in f64, independent of the emulator's bit trick.
fn tf32_rna(x: f32) -> u32 {
    let u = x.to_bits();
    if x.is_nan() {
        return 0x7fff_ffff;
    }
    if x.is_infinite() {
        return u;
    }
    let lo = u & 0xffff_e000; // toward zero
    let hi = lo + 0x2000; // away from zero (may be inf)
                          // past the largest finite value the upper neighbour is 2^128, which rounds to inf
    let hv = if hi & 0x7fff_ffff == 0x7f80_0000 { 2f64.powi(128).copysign(x as f64) } else { f32::from_bits(hi) as f64 };
    let (dl, dh) = ((x as f64 - f32::from_bits(lo) as f64).abs(), (hv - x as f64).abs());
    if dh <= dl {
        hi
    } else {
        lo
    }
}

/// Catches: rounding to nearest even done as truncation or ties-away, subnormals flushed (f16
/// subnormals are a quarter of the table), overflow saturating instead of going to inf, NaN lost;
/// widening back not exact; packed pairs with their halves swapped.
#[test]
fn conversions_round_like_torch_and_cuda() {
    let d = EmuDevice;
    let table = rounding_table();
    let n = table.len();
    let x: Vec<f32> = table.iter().map(|r| f32::from_bits(r.0)).collect();
    let xb = up(&d, &x);
    let (bf, hf, tf, bfb, hfb) = (d.alloc_zeros(2 * n).unwrap(), d.alloc_zeros(2 * n).unwrap(), d.alloc_zeros(4 * n).unwrap(), d.alloc_zeros(4 * n).unwrap(), d.alloc_zeros(4 * n).unwrap());
    launch::selftest_convert_f32(&d, &cfg(64, 256, 0), &xb, &bf, &hf, &tf, &bfb, &hfb, n as i32).unwrap();
    let (bf, hf, tf) = (down::<u16>(&d, &bf, n), down::<u16>(&d, &hf, n), down::<u32>(&d, &tf, n));
    let (bfb, hfb) = (down::<f32>(&d, &bfb, n), down::<f32>(&d, &hfb, n));
    let mut subnormal_f16 = 0;
    for (i, &(xbits, tb, th)) in table.iter().enumerate() {
        let xv = f32::from_bits(xbits);
        if xv.is_nan() {
            // torch writes 0x7fc0/0xffff and 0x7e00; PTX's cvt gives the canonical NaN 0x7fff
            assert!(half::bf16::from_bits(tb).is_nan() && half::f16::from_bits(th).is_nan(), "table: torch kept NaN {xbits:#x}");
            assert_eq!((bf[i], hf[i]), (0x7fff, 0x7fff), "NaN {xbits:#x} → canonical NaN");
            assert!(bfb[i].is_nan() && hfb[i].is_nan(), "NaN {xbits:#x} widened");
            continue;
        }
        assert_eq!(bf[i], tb, "bf16 of {xv:e} ({xbits:#010x})");
        assert_eq!(hf[i], th, "f16 of {xv:e} ({xbits:#010x})");
        subnormal_f16 += (th & 0x7c00 == 0 && th & 0x3ff != 0) as usize;
        assert_eq!(bfb[i].to_bits(), half::bf16::from_bits(tb).to_f32().to_bits(), "bf16 {tb:#06x} widened");
        assert_eq!(hfb[i].to_bits(), half::f16::from_bits(th).to_f32().to_bits(), "f16 {th:#06x} widened");
        assert_eq!(tf[i], tf32_rna(xv), "tf32 of {xv:e} ({xbits:#010x})");
    }
    assert!(subnormal_f16 > 1000, "the table should exercise f16 subnormals ({subnormal_f16})");
    // packed pairs: element 2i in the low half
    let pairs = n / 2;
    let out = d.alloc_zeros(8 * pairs).unwrap();
    launch::selftest_pack_pairs_f32(&d, &cfg(64, 256, 0), &xb, &out, pairs as i32).unwrap();
    let got = down::<u32>(&d, &out, 2 * pairs);
    for i in 0..pairs {
        assert_eq!(got[2 * i], bf[2 * i] as u32 | (bf[2 * i + 1] as u32) << 16, "bf16x2 pair {i}");
        assert_eq!(got[2 * i + 1], hf[2 * i] as u32 | (hf[2 * i + 1] as u32) << 16, "f16x2 pair {i}");
    }
}

/// Catches: cp.async landing at issue (a kernel that reads before its wait would pass in the
/// emulator and fail on the GPU), wait_group N landing the wrong groups, the 4/8-byte forms or the
/// zero-fill mishandled, and a neighbour's copy read without a barrier (race detector).
#[test]
fn cp_async_lands_only_at_its_wait_and_poisons_before() {
    let _g = SCHED.lock().unwrap_or_else(|e| e.into_inner());
    let d = EmuDevice;
    let n = 64usize;
    let src: Vec<f32> = (0..8 * n).map(|i| i as f32 + 0.5).collect();
    let sb = up(&d, &src);
    let was = set_race_check(cfg!(emu_instrumented));
    let run = |mode: i32| {
        let out = d.alloc_zeros(12 * n * 4).unwrap();
        launch::selftest_cp_async_f32(&d, &cfg(1, n as u32, (8 * n * 4) as u32), &sb, &out, mode).map(|_| down::<f32>(&d, &out, 12 * n))
    };
    let poison = |v: &[f32]| v.iter().all(|x| x.to_bits() == 0xffff_ffff);
    for sched in Schedule::all(9) {
        set_schedule(sched);
        let o = run(0).unwrap();
        for t in 0..n {
            assert_eq!(&o[12 * t..12 * t + 4], &src[4 * ((t + 1) % n)..4 * ((t + 1) % n) + 4], "{sched:?} mode 0 t={t}");
        }
        let o = run(1).unwrap();
        assert!((0..n).all(|t| poison(&o[12 * t..12 * t + 4])), "{sched:?}: a read before the wait saw data");
        let o = run(2).unwrap();
        for t in 0..n {
            assert_eq!(&o[12 * t..12 * t + 4], &src[4 * t..4 * t + 4], "{sched:?}: wait_group 1 landed the older group");
            assert!(poison(&o[12 * t + 4..12 * t + 8]), "{sched:?}: wait_group 1 landed the newest group too");
            assert_eq!(&o[12 * t + 8..12 * t + 12], &src[4 * (n + t)..4 * (n + t) + 4], "{sched:?}: wait_group 0 landed all");
        }
        let o = run(3).unwrap();
        for t in 0..n {
            assert_eq!(&o[12 * t..12 * t + 4], &src[4 * t..4 * t + 4], "{sched:?}: 4- and 8-byte copies");
            let s = 4 * (n + t);
            assert_eq!(&o[12 * t + 4..12 * t + 8], &[src[s], src[s + 1], 0.0, 0.0], "{sched:?}: zero-fill of 8 source bytes");
        }
        let e = run(5).expect_err("a misaligned cp.async went unnoticed").to_string();
        assert!(e.contains("selftest_cp_async_f32: misaligned address: cp.async.cg of 16 bytes"), "{e}");
    }
    if cfg!(emu_instrumented) {
        set_schedule(Schedule::Random(9));
        let e = run(4).expect_err("a neighbour's cp.async read without __syncthreads went unnoticed").to_string();
        assert!(e.contains("selftest_cp_async_f32: shared-memory race ("), "{e}");
    }
    set_race_check(was);
    set_schedule(Schedule::Forward);
}

/// Catches: a misaligned float4 load or store passing (x86 does not mind; the GPU faults), and
/// alignment judged by host addresses: emulator buffers end at a guard page, so a buffer whose size
/// is not a multiple of 16 starts off a 16-byte boundary yet is aligned as a cudaMalloc'd one.
#[test]
fn misaligned_16_byte_accesses_are_errors() {
    let d = EmuDevice;
    let n = 32usize;
    let src: Vec<f32> = (0..4 * n + 5).map(|i| i as f32).collect(); // 532 bytes: not 16-aligned on the host
    let sb = up(&d, &src);
    let dst = d.alloc_zeros((4 * n + 4) * 4).unwrap();
    launch::selftest_vec16_f32(&d, &cfg(1, n as u32, 0), &sb, &dst, 0, 0).unwrap();
    assert_eq!(down::<f32>(&d, &dst, 4 * n), src[..4 * n].to_vec());
    let e = launch::selftest_vec16_f32(&d, &cfg(1, n as u32, 0), &sb, &dst, 1, 0).expect_err("misaligned float4 load").to_string();
    assert!(e.contains("selftest_vec16_f32: misaligned address: float4 load of 16 bytes") && e.contains("(4 bytes past a 16-byte boundary)"), "{e}");
    let e = launch::selftest_vec16_f32(&d, &cfg(1, n as u32, 0), &sb, &dst, 0, 2).expect_err("misaligned float4 store").to_string();
    assert!(e.contains("misaligned address: float4 store of 16 bytes"), "{e}");
    // ldmatrix rows must be 16-byte aligned too
    let m = up(&d, &vec![0u16; 256]);
    let rows = up(&d, &(0..32).collect::<Vec<i32>>());
    let out = d.alloc_zeros(128 * 4).unwrap();
    let e = launch::selftest_ldmatrix_b16(&d, &cfg(1, 32, 520), &m, &rows, &out, 2, 8).expect_err("misaligned ldmatrix row").to_string();
    assert!(e.contains("selftest_ldmatrix_b16: ldmatrix: lane ") && e.contains("'s row address") && e.contains("not 16-byte aligned"), "{e}");
}

/// Catches: a launch above 48 KiB of dynamic shared memory that never opted in (the GPU refuses
/// it; the emulator used to accept up to 227 KiB), an opt-in not limiting later launches, and an
/// opt-in beyond the hardware's 227 KiB.
#[test]
fn dynamic_shared_memory_above_48_kib_needs_the_opt_in() {
    let d = EmuDevice;
    let out = d.alloc_zeros(256 * 4).unwrap();
    let touch = |bytes: u32| launch::selftest_smem_touch_i32(&d, &cfg(1, 256, bytes), &out, (bytes / 4) as i32);
    touch(48 * 1024).unwrap();
    let e = touch(64 * 1024).expect_err("64 KiB without the opt-in").to_string();
    assert!(e.contains("selftest_smem_touch_i32: 65536 bytes of dynamic shared memory exceed the 49152") && e.contains("cuFuncSetAttribute"), "{e}");
    d.set_max_dynamic_smem("selftest_smem_touch_i32", 64 * 1024).unwrap();
    touch(64 * 1024).unwrap();
    assert_eq!(down::<i32>(&d, &out, 256)[0], 64 * 1024 / 4 - 1);
    let e = touch(80 * 1024).expect_err("80 KiB after an opt-in to 64 KiB").to_string();
    assert!(e.contains("exceed the 65536"), "{e}");
    let e = d.set_max_dynamic_smem("selftest_smem_touch_i32", 300 * 1024).expect_err("opt-in beyond 227 KiB").to_string();
    assert!(e.contains("at most 227 KiB"), "{e}");
}

/// Catches: the opt-in decided on the dynamic shared memory alone. The driver holds static plus
/// dynamic to 48 KiB without it (every bf16 tensor-core GEMM, 48 KiB of stages beside 16 static
/// bytes, failed on the H200 with CUDA_ERROR_INVALID_VALUE while the emulator ran it: a kernel's
/// `__shared__` variables were invisible to it). Also: the opt-in ignoring the static part of the
/// 227 KiB, and the engine's device layer (CachedDevice) not opting in by itself.
#[test]
#[cfg_attr(not(nvrtc_ptx), ignore = "built without NVRTC (RAN_NVRTC_LIB, RAN_REQUIRE_NVRTC=1): no ptxas figures for static shared memory")]
fn static_shared_memory_counts_toward_the_48_kib_without_opt_in() {
    use ran::backend::cuda::cached::{CacheOptions, CachedDevice};
    use ran::backend::cuda::kernels::resources_of;
    // ptxas's figure, the driver's CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES
    assert_eq!(resources_of("selftest_smem_static_touch_i32").map(|r| r.static_smem), Some(1024));
    assert_eq!(resources_of("conv2d_tc_nchw_bf16").map(|r| r.static_smem), Some(16), "the split-K `last` flag, 16-byte aligned");
    let d = EmuDevice;
    assert_eq!(d.static_smem("selftest_smem_static_touch_i32").unwrap(), 1024);
    let out = d.alloc_zeros(256 * 4).unwrap();
    let touch = |bytes: u32| launch::selftest_smem_static_touch_i32(&d, &cfg(1, 256, bytes), &out, (bytes / 4) as i32);
    touch(47 * 1024).unwrap();
    let e = touch(47 * 1024 + 16).expect_err("47 KiB + 16 dynamic beside 1 KiB static").to_string();
    assert!(e.contains("48144 bytes of dynamic shared memory exceed the 48128") && e.contains("1024 static") && e.contains("cuFuncSetAttribute"), "{e}");
    let e = d.set_max_dynamic_smem("selftest_smem_static_touch_i32", 227 * 1024).expect_err("227 KiB dynamic beside 1 KiB static").to_string();
    assert!(e.contains("beside 1024 static"), "{e}");
    d.set_max_dynamic_smem("selftest_smem_static_touch_i32", 226 * 1024).unwrap();
    touch(226 * 1024).unwrap();
    assert_eq!(down::<i32>(&d, &out, 256)[0], 226 * 1024 / 4 - 1 + 255);
    // the engine's layer opts in when static + dynamic pass 48 KiB, once per kernel and size
    let c = CachedDevice::new(EmuDevice, CacheOptions::from_env(0, true).unwrap());
    let cout = c.alloc_zeros(256 * 4).unwrap();
    let other = c.counts().other;
    launch::selftest_smem_touch_i32(&c, &cfg(1, 256, 48 * 1024), &cout, 48 * 1024 / 4).unwrap();
    assert_eq!(c.counts().other, other, "48 KiB with no static shared memory needs no opt-in");
    for _ in 0..2 {
        launch::selftest_smem_static_touch_i32(&c, &cfg(1, 256, 48 * 1024), &cout, 48 * 1024 / 4).unwrap();
    }
    assert_eq!(c.counts().other, other + 1, "one opt-in for two launches");
}

/// Catches: a launch whose registers (per thread, from ptxas, × threads) pass the 64 Ki of an SM
/// accepted by the emulator (the GPU refuses it: too many resources requested for launch).
#[test]
#[cfg_attr(not(nvrtc_ptx), ignore = "built without NVRTC (RAN_NVRTC_LIB, RAN_REQUIRE_NVRTC=1): no ptxas register counts")]
fn a_block_needing_more_registers_than_an_sm_has_is_refused() {
    use ran::backend::cuda::kernels::resources_of;
    // a kernel without __launch_bounds__ (ptxas budgets registers for a bound, so only an
    // unbounded kernel can ask for more than an SM has)
    let k = "conv2d_x_backward_f32";
    let r = resources_of(k).unwrap();
    assert_eq!(r.max_threads, 0, "{k} has no __launch_bounds__ (pick another probe)");
    assert!(r.registers > 64, "{k}: {} registers (the probe needs more than 64 per thread)", r.registers);
    // the configuration is checked before any argument is read (none is given)
    let e = EmuDevice.launch(k, &cfg(1, 1024, 0), &[]).expect_err("1024 threads").to_string();
    assert!(e.contains(&format!("1024 threads of {} registers", r.registers)) && e.contains("too many resources"), "{e}");
}

/// Catches: a block larger than the kernel's `__launch_bounds__` accepted (the compiler budgets
/// registers for the bound; the GPU refuses the launch).
#[test]
#[cfg_attr(not(nvrtc_ptx), ignore = "built without NVRTC (RAN_NVRTC_LIB, RAN_REQUIRE_NVRTC=1): no PTX for the launch bounds")]
fn a_block_past_the_launch_bounds_is_refused() {
    use ran::backend::cuda::kernels::resources_of;
    let k = "conv2d_tc_small_bf16";
    assert_eq!(resources_of(k).map(|r| r.max_threads), Some(128), "the small tile's __launch_bounds__(TCG_S_THREADS)");
    // the configuration is checked before any argument is read (none is given)
    let e = EmuDevice.launch(k, &cfg(1, 160, 0), &[]).expect_err("160 threads").to_string();
    assert!(e.contains("a block of 160 threads passes the kernel's __launch_bounds__ of 128"), "{e}");
}

/// Catches: mma run by fewer than 32 lanes (an exited lane, or a block whose last warp is partial)
/// computing something instead of failing, as `.aligned` forbids.
#[test]
fn mma_by_a_partial_warp_is_an_error() {
    let d = EmuDevice;
    let (a, b, c) = (up(&d, &bf16_bits(&ints(1, 256))), up(&d, &bf16_bits(&ints(2, 128))), up(&d, &ints(3, 128)));
    let out = d.alloc_zeros(128 * 4).unwrap();
    let e = launch::selftest_mma_m16n8k16_f32(&d, &cfg(1, 32, 0), &a, &b, &c, &out, 0, 31).expect_err("31 lanes").to_string();
    assert!(e.contains("selftest_mma_m16n8k16_f32: mma.sync.aligned.m16n8k16 (bf16) by a partial warp (lanes 0x7fffffff"), "{e}");
    let e = launch::selftest_mma_m16n8k16_f32(&d, &cfg(1, 48, 0), &a, &b, &c, &out, 1, 48).expect_err("a 16-lane last warp").to_string();
    assert!(e.contains("(f16) by a partial warp (lanes 0x0000ffff took part") && e.contains("warp 1"), "{e}");
    // the emulator is usable afterwards
    launch::selftest_mma_m16n8k16_f32(&d, &cfg(1, 32, 0), &a, &b, &c, &out, 0, 32).unwrap();
}
