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
    } else if by_block(g) {
        conv2d_by_block(x, w, &mut y, g);
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

/// Whether the conv runs one task per (image, group, band) with single-threaded GEMMs: when an
/// image has fewer bands than there are threads (planes up to ~32², every pointwise conv) but the
/// batch and groups give the threads whole rounds of blocks (`balanced`). Otherwise each image's
/// GEMM is split over the threads by gemm itself, whose packing and hand-offs cost more than the
/// products at 16² and 8². The GEMM per block is the same call either way (gemm's blocking
/// depends on m, n, k only, not on its threading), so the outputs are the same bits.
fn by_block(g: &Conv2dGeom) -> bool {
    let bands = if g.pointwise() { 1 } else { g.bands().count() };
    bands < rayon::current_num_threads() && balanced(g.n() * g.groups() * bands)
}

/// Whether `tasks` equal tasks keep rayon's threads evenly busy: at least one each, and a whole
/// number of rounds or enough rounds that the last one's idle threads do not matter (3 blocks on
/// 2 threads would leave one idle for a third of the time: gemm's own split does better).
fn balanced(tasks: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && tasks >= threads && (tasks % threads == 0 || tasks >= 4 * threads)
}

/// `conv2d`'s GEMMs, one task per (image, group, band) (`by_block`); the bias is added after.
fn conv2d_by_block<T: Real>(x: &[T], w: &[T], y: &mut [T], g: &Conv2dGeom) {
    let (cg, og, kk, hw, plane) = (g.cg(), g.og(), g.kk(), g.h() * g.w(), g.ho() * g.wo());
    let bands: Vec<(usize, usize)> = if g.pointwise() { vec![(0, g.ho())] } else { g.bands().collect() };
    let col_len = if g.pointwise() { 0 } else { kk * g.max_band_cols() };
    let (nb, ng) = (bands.len(), g.groups());
    let tasks: Vec<(usize, usize, (usize, usize))> = (0..g.n() * ng * nb).map(|t| (t / (ng * nb), (t / nb) % ng, bands[t % nb])).collect();
    let dst = SendPtr(y.as_mut_ptr());
    tasks.par_iter().for_each_init(
        || Pooled::for_overwrite(col_len),
        |col: &mut Pooled<T>, &(ni, gi, (r0, r1))| {
            let xg = &x[(ni * g.c() + gi * cg) * hw..][..cg * hw];
            let wg = MatRef::row_major(&w[gi * og * kk..][..og * kk], kk);
            let yoff = (ni * g.o() + gi * og) * plane;
            if g.pointwise() {
                // SAFETY: each task writes its own image and group's [og, plane] block of y.
                unsafe { matmul_raw(og, plane, kk, dst.at(yoff), (plane, 1), wg, MatRef::row_major(xg, hw), false, false) };
                return;
            }
            let cols = (r1 - r0) * g.wo();
            let col = &mut col[..kk * cols];
            im2col_band(xg, g, r0, r1, col);
            // SAFETY: tasks cover disjoint (image, group, output rows) blocks of y.
            unsafe { matmul_raw(og, cols, kk, dst.at(yoff + r0 * g.wo()), (plane, 1), wg, MatRef::row_major(col, cols), false, false) };
        },
    );
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
    let colg_len = if g.pointwise() { 0 } else { g.kk() * g.max_band_cols() };
    let block = g.cg() * hw;
    if balanced(g.n() * g.groups()) {
        // one task per (image, group), single-threaded inside: each input plane gets the same
        // sums in the same order as the threaded loop below, so the same bits
        gx.par_chunks_mut(block)
            .enumerate()
            .for_each_init(|| Pooled::for_overwrite(colg_len), |colg: &mut Pooled<T>, (blk, gxg)| x_backward_group(gy, w, g, blk / g.groups(), blk % g.groups(), colg, gxg, false));
        return gx;
    }
    let mut colg: Pooled<T> = Pooled::for_overwrite(colg_len);
    for (blk, gxg) in gx.chunks_mut(block).enumerate() {
        x_backward_group(gy, w, g, blk / g.groups(), blk % g.groups(), &mut colg, gxg, true);
    }
    gx
}

/// Image `ni`, group `gi` of ∂x (`gxg`, its cg planes): per band, the columns wᵀ·∂y (the GEMM
/// overwrites every element of the band's part of `colg`) scattered back by col2im. `parallel`
/// threads the GEMM and the planes; either way each plane's sums run in the same order.
#[allow(clippy::too_many_arguments)]
fn x_backward_group<T: Real>(gy: &[T], w: &[T], g: &Conv2dGeom, ni: usize, gi: usize, colg: &mut [T], gxg: &mut [T], parallel: bool) {
    let (og, kk, plane, hw) = (g.og(), g.kk(), g.ho() * g.wo(), g.h() * g.w());
    let gyg = &gy[(ni * g.o() + gi * og) * plane..][..og * plane];
    let wt = MatRef::transposed(&w[gi * og * kk..][..og * kk], kk);
    if g.pointwise() {
        matmul(kk, hw, og, gxg, hw, wt, MatRef::row_major(gyg, plane), false, parallel);
        return;
    }
    for (r0, r1) in g.bands() {
        let cols = (r1 - r0) * g.wo();
        let gyb = MatRef { data: &gyg[r0 * g.wo()..], rs: plane, cs: 1 };
        let colb = &mut colg[..kk * cols];
        matmul(kk, cols, og, colb, cols, wt, gyb, false, parallel);
        let colb = &*colb;
        if parallel {
            gxg.par_chunks_mut(hw).enumerate().for_each(|(ci, gp)| col2im_plane(colb, g, r0, r1, ci, gp));
        } else {
            gxg.chunks_mut(hw).enumerate().for_each(|(ci, gp)| col2im_plane(colb, g, r0, r1, ci, gp));
        }
    }
}

/// Input plane `ci` of one group's ∂x += its rows of the band's columns.
fn col2im_plane<T: Real>(colg: &[T], g: &Conv2dGeom, r0: usize, r1: usize, ci: usize, gp: &mut [T]) {
    let (cols, khw) = ((r1 - r0) * g.wo(), g.kh() * g.kw());
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
                let Some(iy) = (oy * g.sh() + ky).checked_sub(g.pt()).filter(|&iy| iy < g.h()) else {
                    continue;
                };
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
    let kk = g.kk();
    if g.depthwise() {
        let mut gw = vec![T::zero(); g.o() * kk];
        conv2d_depthwise_w_backward(gy, x, &mut gw, g);
        return gw;
    }
    let col_len = if g.pointwise() { 0 } else { kk * g.max_band_cols() };
    if balanced(g.n()) {
        // one partial ∂w per image (its groups and bands in turn, single-threaded GEMMs), summed
        // in image order: another summation order than the loop below, f32 rounding apart the same
        let parts: Vec<Vec<T>> = (0..g.n())
            .into_par_iter()
            .map_init(
                || Pooled::for_overwrite(col_len),
                |col: &mut Pooled<T>, ni| {
                    let mut p = T::zeroed(g.o() * kk);
                    w_backward_image(gy, x, g, ni, col, &mut p, false);
                    p
                },
            )
            .collect();
        let mut parts = parts.into_iter();
        let mut gw = parts.next().expect("at least one image");
        for p in parts {
            gw.iter_mut().zip(&p).for_each(|(a, &b)| *a += b);
            T::recycle(p);
        }
        return gw;
    }
    let mut gw = vec![T::zero(); g.o() * kk];
    let mut col: Pooled<T> = Pooled::for_overwrite(col_len);
    for ni in 0..g.n() {
        w_backward_image(gy, x, g, ni, &mut col, &mut gw, true);
    }
    gw
}

/// gw += image `ni`'s ∂w, group by group, band by band; `parallel`: im2col and the GEMMs use
/// every thread. Each group's product runs transposed, ∂wᵀ [kk, og] = col · ∂yᵀ, into `gwt`,
/// added into gw once at the end: gemm is 3–5× faster with the long kk (C·KH·KW) as its m than
/// with the short og (32–64 in the demo: below one 64-row microkernel panel), measured on the
/// demo's shapes (benches/RESULTS.md, "conv2d_w_backward orientation").
fn w_backward_image<T: Real>(gy: &[T], x: &[T], g: &Conv2dGeom, ni: usize, col: &mut [T], gw: &mut [T], parallel: bool) {
    let (cg, og, kk, plane, hw) = (g.cg(), g.og(), g.kk(), g.ho() * g.wo(), g.h() * g.w());
    let mut gwt: Pooled<T> = Pooled::for_overwrite(kk * og);
    for gi in 0..g.groups() {
        let xg = &x[(ni * g.c() + gi * cg) * hw..][..cg * hw];
        let gyg = &gy[(ni * g.o() + gi * og) * plane..][..og * plane];
        if g.pointwise() {
            // a 1×1 stride-1 conv's columns are x itself
            matmul(kk, og, plane, &mut gwt, og, MatRef::row_major(xg, hw), MatRef::transposed(gyg, plane), false, parallel);
        } else {
            for (bi, (r0, r1)) in g.bands().enumerate() {
                let cols = (r1 - r0) * g.wo();
                if parallel {
                    im2col(xg, g, r0, r1, &mut col[..kk * cols]);
                } else {
                    im2col_band(xg, g, r0, r1, &mut col[..kk * cols]);
                }
                let gyb = MatRef { data: &gyg[r0 * g.wo()..], rs: 1, cs: plane };
                // the first band overwrites every element of gwt, the others add
                matmul(kk, og, cols, &mut gwt, og, MatRef::row_major(&col[..kk * cols], cols), gyb, bi > 0, parallel);
            }
        }
        add_transposed(&gwt, kk, og, &mut gw[gi * og * kk..][..og * kk]);
    }
}

/// dst[c·rows + r] += src[r·cols + c]: the [kk, og] product added into ∂w's [og, kk] block.
fn add_transposed<T: Real>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    for (c, drow) in dst.chunks_exact_mut(rows).take(cols).enumerate() {
        for (r, d) in drow.iter_mut().enumerate() {
            *d += src[r * cols + c];
        }
    }
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
