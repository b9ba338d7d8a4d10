//! The 16-byte paths of elementwise.cu and layout.cu and their scalar tails, launched directly on
//! the emulator (which, like a GPU, measures alignment from a buffer's start). The buffers are
//! padded to a multiple of 4 floats and the kernels run on the first n: a float4 that strays past
//! n writes the padding, which must stay zero. Small grids make every thread iterate many times,
//! so the index walks (index_walk.cuh) take their carries. The expected values are computed here
//! element by element, b's index by plain division.

use ran::backend::cuda::device::{Device, LaunchCfg};
use ran::backend::cuda::emu::{EmuBuf, EmuDevice};
use ran::backend::cuda::launch;
use ran::optable::sizes::uniform;

fn cfg(blocks: u32, threads: u32) -> LaunchCfg {
    LaunchCfg { grid: (blocks, 1, 1), block: (threads, 1, 1), smem_bytes: 0 }
}

/// A buffer of `n` values plus padding to a multiple of 4 (so it is 16-byte aligned), and the values.
fn padded(d: &EmuDevice, n: usize, seed: u64) -> (EmuBuf, Vec<f32>) {
    let mut v = uniform(n.next_multiple_of(4).max(4), seed);
    v.iter_mut().skip(n).for_each(|x| *x = 0.0);
    (d.upload(bytemuck::cast_slice(&v)).unwrap(), v[..n].to_vec())
}

fn out(d: &EmuDevice, n: usize) -> EmuBuf {
    d.alloc_zeros(n.next_multiple_of(4).max(4) * 4).unwrap()
}

/// The first n values are `want` (to f32 rounding of one operation: both sides compute the same
/// f32 expression), and the padding after them is untouched (a float4 past n would write it).
fn check(d: &EmuDevice, what: &str, y: &EmuBuf, want: &[f32]) {
    let n = want.len();
    let mut got = vec![0.0f32; n.next_multiple_of(4).max(4)];
    d.download(y, bytemuck::cast_slice_mut(&mut got)).unwrap();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{what}: element {i} of {n}: got {g}, want {w}");
    }
    assert!(got[n..].iter().all(|&v| v == 0.0), "{what}: wrote past element {n}: {:?}", &got[n..]);
}

const GRIDS: [(u32, u32); 3] = [(1, 32), (3, 64), (2, 256)];

#[test]
fn maps_take_the_float4_path_and_the_tail() {
    let d = EmuDevice;
    for n in [1usize, 3, 7, 70, 1001] {
        for (blocks, threads) in GRIDS {
            let c = cfg(blocks, threads);
            let tag = format!("n {n}, {blocks}x{threads}");
            let (x, xv) = padded(&d, n, 3);
            let (g, gv) = padded(&d, n, 4);
            let y = out(&d, n);
            launch::activation_f32(&d, &c, &x, &y, n as i32, 1).unwrap();
            check(&d, &format!("relu, {tag}"), &y, &xv.iter().map(|&v| v.max(0.0)).collect::<Vec<_>>());
            let y = out(&d, n);
            launch::activation_x_backward_f32(&d, &c, &g, &x, &y, n as i32, 1).unwrap();
            check(&d, &format!("relu backward, {tag}"), &y, &xv.iter().zip(&gv).map(|(&v, &g)| if v > 0.0 { g } else { 0.0 }).collect::<Vec<_>>());
            let y = out(&d, n);
            launch::scale_add_scalar_f32(&d, &c, &x, &y, n as i32, 0.5, -2.0).unwrap();
            check(&d, &format!("scale_add_scalar, {tag}"), &y, &xv.iter().map(|&v| 0.5 * v - 2.0).collect::<Vec<_>>());
        }
    }
}

/// add_rows / mul_rows over every path: b shared by a float4 (inner mod 4 = 0, or one value),
/// four consecutive b values (inner 1: the same shape, or a block of mid mod 4 = 0 values), and
/// the scalar walk (inner 3 with a wrap of 5, inner 1 with mid 6).
#[test]
fn row_broadcasts_take_every_path() {
    let d = EmuDevice;
    // (rows of b repeated, inner, mid): n = reps · mid · inner, or an explicit n for the tails
    let cases: &[(usize, usize, usize)] = &[(5, 40, 3), (2, 16, 7), (1, 1003, 1), (1, 1, 1001), (7, 1, 12), (6, 3, 5), (9, 1, 6), (3, 1, 1)];
    for &(reps, inner, mid) in cases {
        let n = reps * inner * mid;
        let (a, av) = padded(&d, n, 11);
        let (b, bv) = padded(&d, mid, 12);
        for (blocks, threads) in GRIDS {
            let c = cfg(blocks, threads);
            let tag = format!("n {n} inner {inner} mid {mid}, {blocks}x{threads}");
            let bi = |e: usize| bv[(e / inner) % mid];
            let y = out(&d, n);
            launch::add_rows_f32(&d, &c, &a, &b, &y, n as i32, inner as i32, mid as i32).unwrap();
            check(&d, &format!("add_rows, {tag}"), &y, &av.iter().enumerate().map(|(e, &v)| v + bi(e)).collect::<Vec<_>>());
            let y = out(&d, n);
            launch::mul_rows_f32(&d, &c, &a, &b, &y, n as i32, inner as i32, mid as i32).unwrap();
            check(&d, &format!("mul_rows, {tag}"), &y, &av.iter().enumerate().map(|(e, &v)| v * bi(e)).collect::<Vec<_>>());
        }
    }
}

/// The channel affine and the channel copy walk (image, channel) without division: S a multiple
/// of 4 (float4s) and not (floats), with many iterations per thread.
#[test]
fn channel_walks_match_plain_indexing() {
    let d = EmuDevice;
    for (n, c, s) in [(3usize, 5usize, 8usize), (2, 7, 5), (1, 3, 36)] {
        let total = n * c * s;
        let (x, xv) = padded(&d, total, 21);
        let (sc, scv) = padded(&d, c, 22);
        let (sh, shv) = padded(&d, c, 23);
        for (blocks, threads) in GRIDS {
            let cf = cfg(blocks, threads);
            let tag = format!("[{n},{c},{s}], {blocks}x{threads}");
            let ch = |e: usize| (e / s) % c;
            let y = out(&d, total);
            launch::channel_affine_f32(&d, &cf, &x, &sc, &sh, &y, total as i32, c as i32, s as i32).unwrap();
            check(&d, &format!("channel_affine, {tag}"), &y, &xv.iter().enumerate().map(|(e, &v)| v * scv[ch(e)] + shv[ch(e)]).collect::<Vec<_>>());
            let y = out(&d, total);
            launch::channel_affine_x_backward_f32(&d, &cf, &x, &sc, &y, total as i32, c as i32, s as i32).unwrap();
            check(&d, &format!("channel_affine backward, {tag}"), &y, &xv.iter().enumerate().map(|(e, &v)| v * scv[ch(e)]).collect::<Vec<_>>());
            // channels 1..c-1 of x into channels 2.. of a [n, c + 1, s] destination
            let (k, dst_c) = (c - 1, c + 1);
            let y = out(&d, n * dst_c * s);
            launch::copy_channels_f32(&d, &cf, &x, c as i32, 1, &y, dst_c as i32, 2, n as i32, k as i32, s as i32).unwrap();
            let mut want = vec![0.0f32; n * dst_c * s];
            for b in 0..n {
                for j in 0..k {
                    for p in 0..s {
                        want[(b * dst_c + 2 + j) * s + p] = xv[(b * c + 1 + j) * s + p];
                    }
                }
            }
            check(&d, &format!("copy_channels, {tag}"), &y, &want);
        }
    }
}
