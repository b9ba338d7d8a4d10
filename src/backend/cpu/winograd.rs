//! Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions (groups 1) on the CPU, forward and input
//! gradient: each 4×4 output tile comes from a 6×6 input tile; in the transformed domain the
//! convolution over channels is 36 independent matrix products U[ξ] (Cout×Cin) · V[ξ] (Cin×tiles),
//! so 2.25× fewer multiplies than direct 3×3 (36 per 16 outputs instead of 144) at the price of
//! transforms. The direct conv (conv2d.rs) stays the reference; conv_select.rs decides which runs.
//!
//! Tiles are processed in blocks sized for the cache (`BLOCK_BYTES` of transformed input and
//! product), one block per rayon task with single-threaded GEMMs, like conv2d.rs's bands. The
//! output transform adds the bias and writes the valid part of each tile (edge tiles are cut).

use super::buffers::Pooled;
use super::matmul::{matmul, MatRef, SendPtr};
use super::real::Real;
use super::winograd_transform::{self as tf, Lanes, LANES};
use crate::ops::contract::Conv2dGeom;
use rayon::prelude::*;

/// Bytes of transformed input + product per block: V and M of one block stay in L2/L3 while the
/// 36 GEMMs walk over them.
const BLOCK_BYTES: usize = 2 << 20;
/// More tiles per block than this gains nothing in GEMM efficiency.
const MAX_BLOCK_TILES: usize = 256;

/// A 3×3 stride-1 correlation x [n, cin, h, w] → y [n, cout, ho, wo]: y[oy][ox] reads the rows
/// oy − pt … oy − pt + 2 and columns ox − pl … ox − pl + 2 of x, zero outside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub ho: usize,
    pub wo: usize,
    pub pt: isize,
    pub pl: isize,
}

/// Which of the two convolutions of a conv2d the transformed weights serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Orient {
    Forward,
    /// ∂L/∂x: the 3×3 conv of ∂L/∂y with the weight flipped in space and Cin/Cout swapped.
    XBackward,
}

/// 3×3, stride 1, one group: the convs Winograd computes (any padding).
pub fn eligible(g: &Conv2dGeom) -> bool {
    g.kh() == 3 && g.kw() == 3 && g.sh() == 1 && g.sw() == 1 && g.groups() == 1
}

impl Plan {
    pub fn new(g: &Conv2dGeom, orient: Orient) -> Plan {
        match orient {
            Orient::Forward => Plan { n: g.n(), cin: g.c(), h: g.h(), w: g.w(), cout: g.o(), ho: g.ho(), wo: g.wo(), pt: g.pt() as isize, pl: g.pl() as isize },
            // ∂x[iy] = Σ ∂y[iy + pt − ky]·w[ky] = Σ ∂y[iy − (2 − pt) + ky']·w[2 − ky']
            Orient::XBackward => Plan { n: g.n(), cin: g.o(), h: g.ho(), w: g.wo(), cout: g.c(), ho: g.h(), wo: g.w(), pt: 2 - g.pt() as isize, pl: 2 - g.pl() as isize },
        }
    }
    fn tiles_x(&self) -> usize {
        self.wo.div_ceil(4)
    }
    fn tiles_per_image(&self) -> usize {
        self.ho.div_ceil(4) * self.tiles_x()
    }
    pub fn tiles(&self) -> usize {
        self.n * self.tiles_per_image()
    }
    /// (image, first output row, first output column) of tile t.
    fn tile(&self, t: usize) -> (usize, usize, usize) {
        let (ni, r) = (t / self.tiles_per_image(), t % self.tiles_per_image());
        (ni, 4 * (r / self.tiles_x()), 4 * (r % self.tiles_x()))
    }
    /// Tiles per block: the cache budget, but at least one block per thread when there are
    /// enough tiles; a multiple of `LANES`.
    fn block_tiles<T>(&self, threads: usize) -> usize {
        let per_tile = 36 * (self.cin + self.cout) * std::mem::size_of::<T>();
        let by_cache = (BLOCK_BYTES / per_tile.max(1)).clamp(LANES, MAX_BLOCK_TILES);
        let by_threads = self.tiles().div_ceil(threads.max(1));
        by_cache.min(by_threads).max(1).div_ceil(LANES) * LANES
    }
}

/// U[ξ][cout][cin] of the weight w [O, C, 3, 3] for `orient` (computed in f64, stored as T).
pub fn transform_weights<T: Real>(w: &[T], g: &Conv2dGeom, orient: Orient) -> Vec<T> {
    let (o, c) = (g.o(), g.c());
    assert_eq!(w.len(), o * c * 9, "winograd: weight is not [O, C, 3, 3]");
    let (rows, cols) = match orient {
        Orient::Forward => (o, c),
        Orient::XBackward => (c, o),
    };
    let mut u = T::for_overwrite(36 * rows * cols);
    let dst = SendPtr(u.as_mut_ptr());
    // tap i of the kernel at (row r, column col)
    let tap = |r: usize, col: usize, i: usize| -> f64 {
        match orient {
            Orient::Forward => w[(r * c + col) * 9 + i].f64(),
            // rows are input channels, columns output channels; taps reversed in both axes
            Orient::XBackward => w[(col * c + r) * 9 + 8 - i].f64(),
        }
    };
    (0..rows).into_par_iter().for_each(|r| {
        let full = cols - cols % tf::LANES;
        for col0 in (0..full).step_by(tf::LANES) {
            let k: [tf::Lanes<f64>; 9] = std::array::from_fn(|i| std::array::from_fn(|l| tap(r, col0 + l, i)));
            for (xi, v) in tf::kernels(&k).iter().enumerate() {
                for (l, &vl) in v.iter().enumerate() {
                    // SAFETY: task r writes only the elements of row r of each U[ξ], inside `u`.
                    unsafe { *dst.at((xi * rows + r) * cols + col0 + l) = T::of(vl) };
                }
            }
        }
        for col in full..cols {
            let k: [f64; 9] = std::array::from_fn(|i| tap(r, col, i));
            for (xi, v) in tf::kernel(&k).into_iter().enumerate() {
                // SAFETY: as above
                unsafe { *dst.at((xi * rows + r) * cols + col) = T::of(v) };
            }
        }
    });
    u
}

/// y = plan's convolution of x with transformed weights u (`transform_weights`) + bias.
pub fn run<T: Real>(x: &[T], u: &[T], bias: Option<&[T]>, p: &Plan) -> Vec<T> {
    assert_eq!(x.len(), p.n * p.cin * p.h * p.w, "winograd: input size");
    assert_eq!(u.len(), 36 * p.cout * p.cin, "winograd: transformed weight size");
    // every element is written by the output transform (each output pixel lies in one tile)
    let mut y = T::for_overwrite(p.n * p.cout * p.ho * p.wo);
    let tiles = p.tiles();
    if tiles == 0 {
        return y;
    }
    let threads = rayon::current_num_threads();
    let per_block = p.block_tiles::<T>(threads);
    let blocks = tiles.div_ceil(per_block);
    // too few blocks to occupy every thread: let the GEMMs split instead
    let gemm_par = blocks < threads;
    let dst = SendPtr(y.as_mut_ptr());
    let scratch = 36 * per_block * (p.cin + p.cout);
    (0..blocks).into_par_iter().for_each_init(
        || Pooled::<T>::for_overwrite(scratch),
        |buf, b| {
            let (t0, t1) = (b * per_block, ((b + 1) * per_block).min(tiles));
            let cols = (t1 - t0).div_ceil(LANES) * LANES;
            let (v, m) = buf.split_at_mut(36 * p.cin * per_block);
            let (v, m) = (&mut v[..36 * p.cin * cols], &mut m[..36 * p.cout * cols]);
            transform_inputs(x, p, t0, t1, cols, v);
            for xi in 0..36 {
                let ux = MatRef::row_major(&u[xi * p.cout * p.cin..][..p.cout * p.cin], p.cin);
                let vx = MatRef::row_major(&v[xi * p.cin * cols..][..p.cin * cols], cols);
                matmul(p.cout, cols, p.cin, &mut m[xi * p.cout * cols..][..p.cout * cols], cols, ux, vx, false, gemm_par);
            }
            // SAFETY: blocks own disjoint tiles, and tiles disjoint output pixels of `y`.
            unsafe { transform_outputs(m, bias, p, t0, t1, cols, &dst) };
        },
    );
    y
}

/// v[ξ][ci][j] = (Bᵀ·d·B)[ξ] of tile t0 + j, input channel ci; lanes past t1 are zero.
fn transform_inputs<T: Real>(x: &[T], p: &Plan, t0: usize, t1: usize, cols: usize, v: &mut [T]) {
    let plane = p.h * p.w;
    // per lane: offset of the tile's image in x, and the patch's top-left corner (may be < 0)
    let origins: Vec<Option<(usize, isize, isize)>> = (t0..t0 + cols)
        .map(|t| {
            (t < t1).then(|| {
                let (ni, oy, ox) = p.tile(t);
                (ni * p.cin * plane, oy as isize - p.pt, ox as isize - p.pl)
            })
        })
        .collect();
    let mut d = [[[T::zero(); LANES]; 6]; 6];
    let mut out = [[T::zero(); LANES]; 36];
    for ci in 0..p.cin {
        for j0 in (0..cols).step_by(LANES) {
            for (l, origin) in origins[j0..j0 + LANES].iter().enumerate() {
                match *origin {
                    Some((off, y0, x0)) => gather(&x[off + ci * plane..][..plane], p, y0, x0, &mut d, l),
                    None => d.iter_mut().flatten().for_each(|c| c[l] = T::zero()),
                }
            }
            tf::input_tile(&d, &mut out);
            for (xi, o) in out.iter().enumerate() {
                v[(xi * p.cin + ci) * cols + j0..][..LANES].copy_from_slice(o);
            }
        }
    }
}

/// Lane l of d = the 6×6 patch of `src` (one h×w plane) at (y0, x0), zero outside the plane.
#[inline]
fn gather<T: Real>(src: &[T], p: &Plan, y0: isize, x0: isize, d: &mut [[Lanes<T>; 6]; 6], l: usize) {
    let inside_x = x0 >= 0 && x0 + 6 <= p.w as isize;
    for (r, drow) in d.iter_mut().enumerate() {
        let iy = y0 + r as isize;
        if iy < 0 || iy >= p.h as isize {
            drow.iter_mut().for_each(|c| c[l] = T::zero());
            continue;
        }
        let row = &src[iy as usize * p.w..][..p.w];
        if inside_x {
            let s = &row[x0 as usize..][..6];
            for c in 0..6 {
                drow[c][l] = s[c];
            }
        } else {
            for (c, dc) in drow.iter_mut().enumerate() {
                let ix = x0 + c as isize;
                dc[l] = if ix >= 0 && ix < p.w as isize { row[ix as usize] } else { T::zero() };
            }
        }
    }
}

/// y (through `dst`) = Aᵀ·m·A + bias for tiles t0..t1, each cut to the output's edge.
///
/// # Safety
/// `dst` must point at the [n, cout, ho, wo] output, and no other thread may write tiles t0..t1.
unsafe fn transform_outputs<T: Real>(m: &[T], bias: Option<&[T]>, p: &Plan, t0: usize, t1: usize, cols: usize, dst: &SendPtr<T>) {
    let plane = p.ho * p.wo;
    for o in 0..p.cout {
        let b = bias.map_or(T::zero(), |b| b[o]);
        for j0 in (0..cols).step_by(LANES) {
            let mt: [Lanes<T>; 36] = std::array::from_fn(|xi| m[(xi * p.cout + o) * cols + j0..][..LANES].try_into().expect("LANES values"));
            let y = tf::output_tile(&mt);
            for l in 0..LANES.min(t1.saturating_sub(t0 + j0)) {
                let (ni, oy, ox) = p.tile(t0 + j0 + l);
                let base = (ni * p.cout + o) * plane;
                for (r, yrow) in y.iter().enumerate().take(p.ho - oy) {
                    for (c, yv) in yrow.iter().enumerate().take(p.wo - ox) {
                        // SAFETY: (oy + r, ox + c) is inside the plane, owned by this tile.
                        unsafe { *dst.at(base + (oy + r) * p.wo + ox + c) = yv[l] + b };
                    }
                }
            }
        }
    }
}

/// conv2d by Winograd, weights transformed on the spot (tests and callers without a cache).
pub fn conv2d<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Conv2dGeom) -> Vec<T> {
    run(x, &transform_weights(w, g, Orient::Forward), bias, &Plan::new(g, Orient::Forward))
}

/// ∂L/∂x of conv2d by Winograd, weights transformed on the spot.
pub fn conv2d_x_backward<T: Real>(gy: &[T], w: &[T], g: &Conv2dGeom) -> Vec<T> {
    run(gy, &transform_weights(w, g, Orient::XBackward), None, &Plan::new(g, Orient::XBackward))
}
