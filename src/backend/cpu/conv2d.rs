//! conv2d and its input gradient on the CPU: im2col over bands of output rows + GEMM, a direct
//! loop for depthwise (one input channel per group), and plain GEMM for 1×1 stride-1 convs.
//! Bands keep the column buffer small (≈ `BAND_COLS` output pixels) whatever the image size.

use super::buffers::Pooled;
use super::matmul::{matmul, matmul_raw, MatRef, SendPtr};
use super::real::Real;
use crate::ops::contract::Conv2dGeom;
use rayon::prelude::*;

/// Output pixels per im2col band: large enough for GEMM efficiency, small enough for L2/L3.
const BAND_COLS: usize = 2048;

/// CPU-side helpers on the shared conv geometry (kernels/contract.cuh `Conv2dGeom`).
impl Conv2dGeom {
    /// Input row/col hit by output (oy, ox) and kernel tap (ky, kx), if inside the image.
    #[inline]
    fn src(&self, oy: usize, ky: usize, ox: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.sh() + ky).checked_sub(self.pt())?;
        let ix = (ox * self.sw() + kx).checked_sub(self.pl())?;
        (iy < self.h() && ix < self.w()).then_some((iy, ix))
    }
    fn bands(&self) -> impl Iterator<Item = (usize, usize)> {
        let rows = (BAND_COLS / self.wo().max(1)).max(1);
        let ho = self.ho();
        (0..ho).step_by(rows).map(move |r0| (r0, (r0 + rows).min(ho)))
    }
    /// Output pixels of the largest band (the column buffers' width).
    fn max_band_cols(&self) -> usize {
        self.bands().map(|(r0, r1)| (r1 - r0) * self.wo()).max().unwrap_or(0)
    }
}

/// A pass over output rows after the bias: `pass(plane, p0, seg)`, seg = y[plane][p0 .. p0 + seg.len()].
pub type Epilogue<'a, T> = &'a (dyn Fn(usize, usize, &mut [T]) + Sync);

/// y = conv2d(x, w) + bias. Shapes were validated by `Conv2dParams::out_shape`.
pub fn conv2d<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Conv2dGeom) -> Vec<T> {
    conv2d_with(x, w, bias, g, None)
}

/// `conv2d`, then `epi` over every output (after its bias): where the bands run in parallel,
/// on each band's rows right after its GEMM, while they are in cache (the bias added there, the
/// same operation as the bias pass); otherwise over the planes after the conv.
pub fn conv2d_with<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Conv2dGeom, epi: Option<Epilogue<T>>) -> Vec<T> {
    let plane = g.ho() * g.wo();
    // every element is written: by the GEMM (not accumulating) or the depthwise loop
    let mut y = T::for_overwrite(g.n() * g.o() * plane);
    // whether the bias and `epi` were applied inside the band loop
    let mut inline = false;
    if g.cg() == 1 && !g.pointwise() {
        // the bias is added in the same pass
        super::depthwise::conv2d_depthwise(x, w, bias, &mut y, g);
        if let Some(epi) = epi {
            y.par_chunks_mut(plane).enumerate().for_each(|(i, p)| epi(i, 0, p));
        }
        return y;
    } else {
        let (cg, og, kk, hw) = (g.cg(), g.og(), g.kk(), g.h() * g.w());
        let col_len = kk * g.max_band_cols();
        let mut col: Option<Pooled<T>> = None;
        for ni in 0..g.n() {
            for gi in 0..g.groups() {
                let xg = &x[(ni * g.c() + gi * cg) * hw..][..cg * hw];
                let yg = &mut y[(ni * g.o() + gi * og) * plane..][..og * plane];
                let wg = MatRef::row_major(&w[gi * og * kk..][..og * kk], kk);
                if g.pointwise() {
                    matmul(og, plane, kk, yg, plane, wg, MatRef::row_major(xg, hw), false, true);
                    continue;
                }
                let bands: Vec<(usize, usize)> = g.bands().collect();
                if bands.len() >= rayon::current_num_threads() && bands.len() > 1 {
                    // Enough bands to keep every thread busy: one band per task, single-threaded GEMM.
                    inline = epi.is_some();
                    let plane0 = ni * g.o() + gi * og;
                    let dst = SendPtr(yg.as_mut_ptr());
                    // column buffers from the pool: im2col writes every element of the band's part
                    bands.par_iter().for_each_init(
                        || Pooled::for_overwrite(col_len),
                        |col: &mut Pooled<T>, &(r0, r1)| {
                            let cols = (r1 - r0) * g.wo();
                            let col = &mut col[..kk * cols];
                            im2col_band(xg, g, r0, r1, col);
                            // SAFETY: bands cover disjoint output rows, so tasks write disjoint columns
                            // of the [og, plane] block, all inside `yg`.
                            unsafe { matmul_raw(og, cols, kk, dst.at(r0 * g.wo()), (plane, 1), wg, MatRef::row_major(col, cols), false, false) };
                            let Some(epi) = epi else { return };
                            for o in 0..og {
                                // SAFETY: this band's part of row o, written above by this task only
                                let seg = unsafe { std::slice::from_raw_parts_mut(dst.at(o * plane + r0 * g.wo()), cols) };
                                if let Some(b) = bias {
                                    let bv = b[gi * og + o];
                                    seg.iter_mut().for_each(|v| *v += bv);
                                }
                                epi(plane0 + o, r0 * g.wo(), seg);
                            }
                        },
                    );
                } else {
                    let col = col.get_or_insert_with(|| Pooled::for_overwrite(col_len));
                    for (r0, r1) in bands {
                        let cols = (r1 - r0) * g.wo();
                        im2col(xg, g, r0, r1, &mut col[..kk * cols]);
                        matmul(og, cols, kk, &mut yg[r0 * g.wo()..], plane, wg, MatRef::row_major(&col[..kk * cols], cols), false, true);
                    }
                }
            }
        }
    }
    if inline {
        return y;
    }
    if let Some(b) = bias {
        y.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
            let bv = b[i % g.o()];
            p.iter_mut().for_each(|v| *v += bv);
        });
    }
    if let Some(epi) = epi {
        y.par_chunks_mut(plane).enumerate().for_each(|(i, p)| epi(i, 0, p));
    }
    y
}

/// Columns for output rows r0..r1 of one group: col[(ci·KH+ky)·KW+kx][(oy−r0)·Wo+ox].
fn im2col<T: Real>(xg: &[T], g: &Conv2dGeom, r0: usize, r1: usize, col: &mut [T]) {
    let cols = (r1 - r0) * g.wo();
    col.par_chunks_mut(cols).enumerate().for_each(|(row, dst)| im2col_row(xg, g, r0, r1, row, dst));
}

/// `im2col` on the calling thread only.
fn im2col_band<T: Real>(xg: &[T], g: &Conv2dGeom, r0: usize, r1: usize, col: &mut [T]) {
    let cols = (r1 - r0) * g.wo();
    col.chunks_mut(cols).enumerate().for_each(|(row, dst)| im2col_row(xg, g, r0, r1, row, dst));
}

fn im2col_row<T: Real>(xg: &[T], g: &Conv2dGeom, r0: usize, r1: usize, row: usize, dst: &mut [T]) {
    let ci = row / (g.kh() * g.kw());
    let ky = (row / g.kw()) % g.kh();
    let kx = row % g.kw();
    let src = &xg[ci * g.h() * g.w()..][..g.h() * g.w()];
    // Output columns whose input column lies inside the image: ox·sw + kx − pl ∈ [0, w).
    let ox_lo = g.pl().saturating_sub(kx).div_ceil(g.sw()).min(g.wo());
    let ox_hi = if g.w() + g.pl() > kx { ((g.w() + g.pl() - kx - 1) / g.sw() + 1).min(g.wo()) } else { 0 }.max(ox_lo);
    for oy in r0..r1 {
        let d = &mut dst[(oy - r0) * g.wo()..][..g.wo()];
        let iy = (oy * g.sh() + ky).checked_sub(g.pt()).filter(|&iy| iy < g.h());
        let Some(iy) = iy else {
            d.fill(T::zero());
            continue;
        };
        d[..ox_lo].fill(T::zero());
        d[ox_hi..].fill(T::zero());
        let srow = &src[iy * g.w()..][..g.w()];
        if g.sw() == 1 {
            let ix0 = ox_lo + kx - g.pl();
            d[ox_lo..ox_hi].copy_from_slice(&srow[ix0..ix0 + (ox_hi - ox_lo)]);
        } else if g.sw() == 2 && ox_hi > ox_lo {
            // every other value, read as pairs (a known stride, unlike the general walk below),
            // the last one alone: its pair may run past the row
            let (ix0, n) = (ox_lo * 2 + kx - g.pl(), ox_hi - ox_lo);
            let (body, last) = d[ox_lo..ox_hi].split_at_mut(n - 1);
            for (v, pair) in body.iter_mut().zip(srow[ix0..].chunks_exact(2)) {
                *v = pair[0];
            }
            last[0] = srow[ix0 + 2 * (n - 1)];
        } else {
            for (ox, v) in d[ox_lo..ox_hi].iter_mut().enumerate() {
                *v = srow[(ox + ox_lo) * g.sw() + kx - g.pl()];
            }
        }
    }
}

/// ∂L/∂x = col2im(wᵀ · ∂L/∂y), band by band; each task owns one input plane, so no races.
pub fn conv2d_x_backward<T: Real>(gy: &[T], w: &[T], g: &Conv2dGeom) -> Vec<T> {
    let hw = g.h() * g.w();
    let mut gx = T::zeroed(g.n() * g.c() * hw);
    if g.cg() == 1 && !g.pointwise() {
        conv2d_depthwise_x_backward(gy, w, &mut gx, g);
        return gx;
    }
    let (cg, og, kk, plane) = (g.cg(), g.og(), g.kk(), g.ho() * g.wo());
    // the GEMM (not accumulating) writes every element of the band's part
    let mut colg: Pooled<T> = Pooled::for_overwrite(if g.pointwise() { 0 } else { kk * g.max_band_cols() });
    for ni in 0..g.n() {
        for gi in 0..g.groups() {
            let gyg = &gy[(ni * g.o() + gi * og) * plane..][..og * plane];
            let gxg = &mut gx[(ni * g.c() + gi * cg) * hw..][..cg * hw];
            let wt = MatRef::transposed(&w[gi * og * kk..][..og * kk], kk);
            if g.pointwise() {
                matmul(kk, hw, og, gxg, hw, wt, MatRef::row_major(gyg, plane), false, true);
                continue;
            }
            for (r0, r1) in g.bands() {
                let cols = (r1 - r0) * g.wo();
                let gyb = MatRef { data: &gyg[r0 * g.wo()..], rs: plane, cs: 1 };
                matmul(kk, cols, og, &mut colg[..kk * cols], cols, wt, gyb, false, true);
                col2im_add(&colg[..kk * cols], g, r0, r1, gxg);
            }
        }
    }
    gx
}

fn col2im_add<T: Real>(colg: &[T], g: &Conv2dGeom, r0: usize, r1: usize, gxg: &mut [T]) {
    let (cols, khw) = ((r1 - r0) * g.wo(), g.kh() * g.kw());
    gxg.par_chunks_mut(g.h() * g.w()).enumerate().for_each(|(ci, gp)| {
        for ky in 0..g.kh() {
            for kx in 0..g.kw() {
                let src = &colg[(ci * khw + ky * g.kw() + kx) * cols..][..cols];
                // outputs ox whose input column ix = ox·sw + kx − pl lies in 0..w: one range per tap,
                // so the inner loop has no bounds tests (and vectorises at stride 1)
                let ox0 = g.pl().saturating_sub(kx).div_ceil(g.sw());
                let ox1 = ((g.w() + g.pl()).saturating_sub(kx)).div_ceil(g.sw()).min(g.wo());
                if ox0 >= ox1 {
                    continue;
                }
                for oy in r0..r1 {
                    let Some(iy) = (oy * g.sh() + ky).checked_sub(g.pt()).filter(|&iy| iy < g.h()) else { continue };
                    let srow = &src[(oy - r0) * g.wo()..][ox0..ox1];
                    let ix0 = ox0 * g.sw() + kx - g.pl();
                    let drow = &mut gp[iy * g.w()..(iy + 1) * g.w()];
                    if g.sw() == 1 {
                        for (d, &v) in drow[ix0..ix0 + srow.len()].iter_mut().zip(srow) {
                            *d += v;
                        }
                    } else {
                        for (j, &v) in srow.iter().enumerate() {
                            drow[ix0 + j * g.sw()] += v;
                        }
                    }
                }
            }
        }
    });
}

fn conv2d_depthwise_x_backward<T: Real>(gy: &[T], w: &[T], gx: &mut [T], g: &Conv2dGeom) {
    let (plane, og, khw) = (g.ho() * g.wo(), g.og(), g.kh() * g.kw());
    gx.par_chunks_mut(g.h() * g.w()).enumerate().for_each(|(idx, gp)| {
        let (ni, ci) = (idx / g.c(), idx % g.c());
        for oc in ci * og..(ci + 1) * og {
            let gyp = &gy[(ni * g.o() + oc) * plane..][..plane];
            let wk = &w[oc * khw..][..khw];
            for oy in 0..g.ho() {
                for ox in 0..g.wo() {
                    let gv = gyp[oy * g.wo() + ox];
                    for ky in 0..g.kh() {
                        for kx in 0..g.kw() {
                            if let Some((iy, ix)) = g.src(oy, ky, ox, kx) {
                                gp[iy * g.w() + ix] += gv * wk[ky * g.kw() + kx];
                            }
                        }
                    }
                }
            }
        }
    });
}

/// ∂L/∂w = Σ over images of ∂L/∂y · im2col(x)ᵀ per group, band by band (the same column buffer
/// as the forward), accumulated in place; depthwise and pointwise convs take their direct paths.
pub fn conv2d_w_backward<T: Real>(gy: &[T], x: &[T], g: &Conv2dGeom) -> Vec<T> {
    let (cg, og, kk, plane, hw) = (g.cg(), g.og(), g.kk(), g.ho() * g.wo(), g.h() * g.w());
    let mut gw = vec![T::zero(); g.o() * kk];
    if g.depthwise() {
        conv2d_depthwise_w_backward(gy, x, &mut gw, g);
        return gw;
    }
    let mut col: Pooled<T> = Pooled::for_overwrite(if g.pointwise() { 0 } else { kk * g.max_band_cols() });
    for ni in 0..g.n() {
        for gi in 0..g.groups() {
            let xg = &x[(ni * g.c() + gi * cg) * hw..][..cg * hw];
            let gyg = &gy[(ni * g.o() + gi * og) * plane..][..og * plane];
            let gwg = &mut gw[gi * og * kk..][..og * kk];
            if g.pointwise() {
                matmul(og, kk, plane, gwg, kk, MatRef::row_major(gyg, plane), MatRef::transposed(xg, hw), true, true);
                continue;
            }
            for (r0, r1) in g.bands() {
                let cols = (r1 - r0) * g.wo();
                im2col(xg, g, r0, r1, &mut col[..kk * cols]);
                let gyb = MatRef { data: &gyg[r0 * g.wo()..], rs: plane, cs: 1 };
                matmul(og, kk, cols, gwg, kk, gyb, MatRef::transposed(&col[..kk * cols], cols), true, true);
            }
        }
    }
    gw
}

/// One task per output channel's KH×KW taps, summed over images and output pixels.
fn conv2d_depthwise_w_backward<T: Real>(gy: &[T], x: &[T], gw: &mut [T], g: &Conv2dGeom) {
    let (plane, og, khw) = (g.ho() * g.wo(), g.og(), g.kh() * g.kw());
    gw.par_chunks_mut(khw).enumerate().for_each(|(oc, wk)| {
        for ni in 0..g.n() {
            let xp = &x[(ni * g.c() + oc / og) * g.h() * g.w()..][..g.h() * g.w()];
            let gyp = &gy[(ni * g.o() + oc) * plane..][..plane];
            for oy in 0..g.ho() {
                for ox in 0..g.wo() {
                    let gv = gyp[oy * g.wo() + ox];
                    for ky in 0..g.kh() {
                        for kx in 0..g.kw() {
                            if let Some((iy, ix)) = g.src(oy, ky, ox, kx) {
                                wk[ky * g.kw() + kx] += gv * xp[iy * g.w() + ix];
                            }
                        }
                    }
                }
            }
        }
    });
}
