//! GroupNorm over [N, C, S] with affine γ, β, optional fused scale-shift
//! (GN(x)·(1+scale)+shift, scale/shift [N, C]) and optional fused SiLU; and its input gradient.
//! Statistics accumulate in f64, so the f32 path is at least as accurate as PyTorch's.

use super::real::{exp_f64, Real};
use super::simd::{isa, multiversion};
use crate::ops::contract::GroupNormGeom;
use rayon::prelude::*;

/// Per-(n, c) affine after normalisation: pre = xhat·a + b.
fn channel_coeffs<T: Real>(gamma: &[T], beta: &[T], ss: Option<(&[T], &[T])>, g: &GroupNormGeom, ni: usize, c: usize) -> (f64, f64) {
    let (ga, be) = (gamma[c].f64(), beta[c].f64());
    match ss {
        Some((sc, sh)) => {
            let k = 1.0 + sc[ni * g.c() + c].f64();
            (ga * k, be * k + sh[ni * g.c() + c].f64())
        }
        None => (ga, be),
    }
}

#[inline(always)]
fn stats<T: Real>(x: &[T], eps: f64) -> (f64, f64) {
    let m = x.len() as f64;
    let mean = lane_sum(x, |v| v.f64()) / m;
    let var = lane_sum(x, |v| (v.f64() - mean) * (v.f64() - mean)) / m;
    (mean, 1.0 / (var + eps).sqrt())
}

pub fn group_norm<T: Real>(x: &[T], gamma: &[T], beta: &[T], ss: Option<(&[T], &[T])>, g: &GroupNormGeom) -> Vec<T> {
    let cpg = g.c() / g.groups();
    let mut y = T::for_overwrite(x.len());
    y.par_chunks_mut(cpg * g.s()).zip(x.par_chunks(cpg * g.s())).enumerate().for_each(|(idx, (yg, xg))| {
        let (ni, gi) = (idx / g.groups(), idx % g.groups());
        let (mean, rstd) = stats(xg, g.eps as f64);
        for cl in 0..cpg {
            // pre = (x − mean)·rstd·a + b = x·k + m, folded once per channel in f64
            let (a, b) = channel_coeffs(gamma, beta, ss, g, ni, gi * cpg + cl);
            let (k, m) = (T::of(rstd * a), T::of(b - mean * rstd * a));
            let (yc, xc) = (&mut yg[cl * g.s()..][..g.s()], &xg[cl * g.s()..][..g.s()]);
            if g.silu != 0 {
                yc.iter_mut().zip(xc).for_each(|(yv, &xv)| {
                    let pre = xv * k + m;
                    *yv = pre / (T::one() + (-pre).fast_exp());
                });
            } else {
                yc.iter_mut().zip(xc).for_each(|(yv, &xv)| *yv = xv * k + m);
            }
        }
    });
    y
}

/// Lanes of independent f64 accumulators in the statistics and the backward's sums (as
/// `real::sum_lanes`): the loops vectorise instead of adding one dependent value per element (the
/// sequential f64 sum of the statistics was 7% of the 553M forward).
const L: usize = 8;

/// Σ f(v) over `x` in `L` interleaved f64 partial sums.
#[inline(always)]
fn lane_sum<T: Real>(x: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut acc = [0.0f64; L];
    let chunks = x.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..L {
            acc[j] += f(c[j]);
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|&v| f(v)).sum::<f64>()
}

/// d/dp of p·σ(p) = σ(p)·(1 + p·(1 − σ(p))) in f64, with the vectorising `exp_f64` (relative
/// error ~1e-15, where libm's exp made this a call per element).
#[inline(always)]
fn silu_grad_lanes(p: f64) -> f64 {
    let s = 1.0 / (1.0 + exp_f64(-p));
    s * (1.0 + p * (1.0 - s))
}

/// One channel of one group: with x̂ = (x − mean)·rstd, pre = x̂·a + b and gp = ∂L/∂pre (gy
/// through the SiLU when `silu`), returns (Σ gp·x̂, Σ gp) in f64, and writes gp·a (= ∂L/∂x̂) into
/// `gxhat` when it is given.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channel_sums<T: Real>(gy: &[T], x: &[T], mean: f64, rstd: f64, a: f64, b: f64, silu: bool, gxhat: Option<&mut [f64]>) -> (f64, f64) {
    #[inline(always)]
    fn run<T: Real>(gy: &[T], x: &[T], mean: f64, rstd: f64, a: f64, gxhat: Option<&mut [f64]>, gp: impl Fn(f64, f64) -> f64) -> (f64, f64) {
        let (mut sgx, mut sg) = ([0.0f64; L], [0.0f64; L]);
        let n = x.len();
        let full = n - n % L;
        let (xa, xb) = x.split_at(full);
        let (ga, gb) = gy[..n].split_at(full);
        let elem = |gv: T, xv: T| {
            let xh = (xv.f64() - mean) * rstd;
            (gp(gv.f64(), xh), xh)
        };
        match gxhat {
            Some(h) => {
                let (ha, hb) = h[..n].split_at_mut(full);
                for ((xs, gs), hs) in xa.chunks_exact(L).zip(ga.chunks_exact(L)).zip(ha.chunks_exact_mut(L)) {
                    for j in 0..L {
                        let (g, xh) = elem(gs[j], xs[j]);
                        hs[j] = g * a;
                        sgx[j] += g * xh;
                        sg[j] += g;
                    }
                }
                for ((&xv, &gv), hv) in xb.iter().zip(gb).zip(hb.iter_mut()) {
                    let (g, xh) = elem(gv, xv);
                    *hv = g * a;
                    sgx[0] += g * xh;
                    sg[0] += g;
                }
            }
            None => {
                for (xs, gs) in xa.chunks_exact(L).zip(ga.chunks_exact(L)) {
                    for j in 0..L {
                        let (g, xh) = elem(gs[j], xs[j]);
                        sgx[j] += g * xh;
                        sg[j] += g;
                    }
                }
                for (&xv, &gv) in xb.iter().zip(gb) {
                    let (g, xh) = elem(gv, xv);
                    sgx[0] += g * xh;
                    sg[0] += g;
                }
            }
        }
        (sgx.iter().sum(), sg.iter().sum())
    }
    if silu {
        run(gy, x, mean, rstd, a, gxhat, |g, xh| g * silu_grad_lanes(xh * a + b))
    } else {
        run(gy, x, mean, rstd, a, gxhat, |g, _| g)
    }
}

/// ∂L/∂x of one (image, group) of `s` values per channel, channel coefficients `ab` (pre = x̂·a + b):
/// gx = rstd·(gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂)), all in f64; `gxhat` is scratch of the group's size.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn x_backward_group_generic<T: Real>(gy: &[T], x: &[T], ab: &[(f64, f64)], s: usize, silu: bool, eps: f64, gxhat: &mut [f64], gx: &mut [T]) {
    let len = x.len();
    let (mean, rstd) = stats(x, eps);
    let (mut sg, mut sgx) = (0.0f64, 0.0f64);
    for (cl, &(a, b)) in ab.iter().enumerate() {
        let r = cl * s..(cl + 1) * s;
        let (cx, cg) = channel_sums(&gy[r.clone()], &x[r.clone()], mean, rstd, a, b, silu, Some(&mut gxhat[r]));
        sgx += a * cx;
        sg += a * cg;
    }
    let (mean_g, mean_gx) = (sg / len as f64, sgx / len as f64);
    for ((o, &h), &xv) in gx[..len].iter_mut().zip(&gxhat[..len]).zip(x) {
        let xh = (xv.f64() - mean) * rstd;
        *o = T::of(rstd * (h - mean_g - xh * mean_gx));
    }
}

/// Per channel of one (image, group): (Σ gp·x̂, Σ gp) into `out`.
#[inline(always)]
fn w_backward_group_generic<T: Real>(gy: &[T], x: &[T], ab: &[(f64, f64)], s: usize, silu: bool, eps: f64, out: &mut [(f64, f64)]) {
    let (mean, rstd) = stats(x, eps);
    for (cl, (&(a, b), o)) in ab.iter().zip(out.iter_mut()).enumerate() {
        let r = cl * s..(cl + 1) * s;
        *o = channel_sums(&gy[r.clone()], &x[r], mean, rstd, a, b, silu, None);
    }
}

multiversion!(
    /// `x_backward_group_generic` at the width of `isa`.
    fn x_backward_group => x_backward_group_generic<T: Real>(gy: &[T], x: &[T], ab: &[(f64, f64)], s: usize, silu: bool, eps: f64, gxhat: &mut [f64], gx: &mut [T])
);
multiversion!(
    /// `w_backward_group_generic` at the width of `isa`.
    fn w_backward_group => w_backward_group_generic<T: Real>(gy: &[T], x: &[T], ab: &[(f64, f64)], s: usize, silu: bool, eps: f64, out: &mut [(f64, f64)])
);

/// The (a, b) of `channel_coeffs` for the channels of group `gi` of image `ni`.
fn group_coeffs<T: Real>(gamma: &[T], beta: &[T], ss: Option<(&[T], &[T])>, g: &GroupNormGeom, ni: usize, gi: usize) -> Vec<(f64, f64)> {
    let cpg = g.c() / g.groups();
    (0..cpg).map(|cl| channel_coeffs(gamma, beta, ss, g, ni, gi * cpg + cl)).collect()
}

/// ∂L/∂x: back through SiLU and the affine to x̂, then the usual normalisation gradient
/// gx = rstd·(gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂)) over each group, in f64 (vectorised: `exp_f64`,
/// lane sums), one task per (image, group).
pub fn group_norm_x_backward<T: Real>(gy: &[T], x: &[T], gamma: &[T], beta: &[T], ss: Option<(&[T], &[T])>, g: &GroupNormGeom) -> Vec<T> {
    let cpg = g.c() / g.groups();
    let len = cpg * g.s();
    // every element is written by x_backward_group's last loop
    let mut gx = T::for_overwrite(x.len());
    let isa = isa();
    gx.par_chunks_mut(len).enumerate().for_each_init(
        || vec![0.0f64; len],
        |gxhat, (idx, gxg)| {
            let (ni, gi) = (idx / g.groups(), idx % g.groups());
            let ab = group_coeffs(gamma, beta, ss, g, ni, gi);
            x_backward_group(isa, &gy[idx * len..][..len], &x[idx * len..][..len], &ab, g.s(), g.silu != 0, g.eps as f64, gxhat, gxg);
        },
    );
    gx
}

/// Parameter gradients of group norm, in f64 per (image, channel) then summed over images:
/// with u = x̂·γ + β and pre = u·(1+scale) + shift (pre = u without scale-shift), g = ∂L/∂pre:
/// ∂γ = (1+scale)·Σ g·x̂, ∂β = (1+scale)·Σ g, ∂scale[n,c] = γ·Σ g·x̂ + β·Σ g, ∂shift[n,c] = Σ g
/// — so two sums per (image, channel), Σ g·x̂ and Σ g (vectorised as the input gradient's).
/// Returns (∂γ [C], ∂β [C], ∂scale and ∂shift [N·C] when scale-shift is on).
pub fn group_norm_w_backward<T: Real>(gy: &[T], x: &[T], gamma: &[T], beta: &[T], ss: Option<(&[T], &[T])>, g: &GroupNormGeom) -> (Vec<T>, Vec<T>, Option<(Vec<T>, Vec<T>)>) {
    let (n, c, s, cpg) = (g.n(), g.c(), g.s(), g.cpg());
    let len = cpg * s;
    // per (n, c): (Σ g·x̂, Σ g); one task per (n, group), whose statistics are computed once
    let mut sums = vec![(0.0f64, 0.0f64); n * c];
    let isa = isa();
    sums.par_chunks_mut(cpg).enumerate().for_each(|(idx, out)| {
        let (ni, gi) = (idx / g.groups(), idx % g.groups());
        let ab = group_coeffs(gamma, beta, ss, g, ni, gi);
        w_backward_group(isa, &gy[idx * len..][..len], &x[idx * len..][..len], &ab, s, g.silu != 0, g.eps as f64, out);
    });
    // [Σ g(1+sc)x̂, Σ g(1+sc), Σ g·u, Σ g] per (n, c)
    let acc = |nc: usize, j: usize| {
        let (sgx, sg) = sums[nc];
        let k = ss.map_or(1.0, |(sc, _)| 1.0 + sc[nc].f64());
        let ci = nc % c;
        match j {
            0 => k * sgx,
            1 => k * sg,
            2 => gamma[ci].f64() * sgx + beta[ci].f64() * sg,
            _ => sg,
        }
    };
    let per_channel = |j: usize| (0..c).map(|ci| T::of((0..n).map(|ni| acc(ni * c + ci, j)).sum::<f64>())).collect::<Vec<T>>();
    let ss_grads = ss.map(|_| ((0..n * c).map(|nc| T::of(acc(nc, 2))).collect(), (0..n * c).map(|nc| T::of(acc(nc, 3))).collect()));
    (per_channel(0), per_channel(1), ss_grads)
}
