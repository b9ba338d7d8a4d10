//! Finite-difference checks of every input gradient, in f64 on tiny shapes: the same generic CPU
//! op bodies the backend runs in f32, instantiated for f64, so the central difference
//! (L(x+h) − L(x−h))/2h with L = Σ f(x)·gy is accurate to ~1e-9 and a wrong backward cannot hide.

use ran::backend::cpu::{activation, attention, broadcast, conv2d, group_norm, layout, linear, mahalanobis, pool, resample};
use ran::backend::{Activation, Conv2dParams, Padding2d, Pool2dParams};
use ran::Shape;

mod common;
use common::fd::{fd_check, Rng};

fn conv_case(rng: &mut Rng, name: &str, xs: [usize; 4], ws: [usize; 4], p: Conv2dParams) {
    let g = ran::ops::conv::conv2d(&Shape::new(&xs), &Shape::new(&ws), None, &p).unwrap();
    let ys = Shape::new(&g.y_dims());
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let gy = rng.vec(ys.numel());
    let gx = conv2d::conv2d_x_backward(&gy, &w, &g);
    fd_check(name, &x, &gy, |v| conv2d::conv2d(v, &w, None, &g), &gx);
}

#[test]
fn conv2d_x_backward_matches_finite_differences() {
    let mut r = Rng(1);
    conv_case(&mut r, "conv3x3 s1 p1", [2, 3, 5, 6], [4, 3, 3, 3], Conv2dParams::new(1, 1, 1));
    let asym = Conv2dParams { stride: (2, 2), padding: Padding2d::lrtb(0, 1, 0, 1), groups: 1 };
    conv_case(&mut r, "conv3x3 s2 asym pad", [1, 2, 7, 8], [3, 2, 3, 3], asym);
    conv_case(&mut r, "depthwise 5x5 s2 p2", [1, 4, 9, 9], [4, 1, 5, 5], Conv2dParams::new(2, 2, 4));
    let dw_asym = Conv2dParams { stride: (2, 2), padding: Padding2d::lrtb(0, 1, 0, 1), groups: 3 };
    conv_case(&mut r, "depthwise 3x3 s2 asym", [1, 3, 6, 7], [3, 1, 3, 3], dw_asym);
    conv_case(&mut r, "grouped 3x3", [1, 4, 5, 5], [6, 2, 3, 3], Conv2dParams::new(1, 1, 2));
    conv_case(&mut r, "pointwise 1x1", [2, 5, 3, 4], [3, 5, 1, 1], Conv2dParams::new(1, 0, 1));
    conv_case(&mut r, "1x1 s2", [1, 4, 7, 7], [2, 4, 1, 1], Conv2dParams::new(2, 0, 1));
    conv_case(&mut r, "7x7 s2 p3", [1, 2, 9, 8], [2, 2, 7, 7], Conv2dParams::new(2, 3, 1));
    // top ≠ left (and right ≠ bottom): a backward that swaps the two while the forward does not
    let tl = Conv2dParams { stride: (1, 1), padding: Padding2d::lrtb(0, 1, 2, 0), groups: 1 };
    conv_case(&mut r, "3x3 top 2 left 0", [1, 2, 6, 5], [3, 2, 3, 3], tl);
}

#[test]
fn linear_x_backward_matches_finite_differences() {
    let mut r = Rng(2);
    let (n, fin, fout) = (3, 7, 5);
    let (x, w, gy) = (r.vec(n * fin), r.vec(fout * fin), r.vec(n * fout));
    let gx = linear::linear_x_backward(&gy, &w, n, fin, fout);
    fd_check("linear", &x, &gy, |v| linear::linear(v, &w, None, n, fin, fout), &gx);
}

#[test]
fn group_norm_x_backward_matches_finite_differences() {
    let mut r = Rng(3);
    for (silu, ss) in [(false, false), (true, false), (false, true), (true, true)] {
        let p = ran::backend::GroupNormParams { groups: 4, eps: 1e-5, silu };
        let g = ran::ops::norm::group_norm(&Shape::new(&[2, 8, 6]), &Shape::new(&[8]), &Shape::new(&[8]), &p, None).unwrap();
        let x = r.vec(2 * 8 * 6);
        let (gamma, beta) = (r.vec(8).iter().map(|v| 1.0 + 0.3 * v).collect::<Vec<_>>(), r.vec(8));
        let (sc, sh) = (r.vec(16), r.vec(16));
        let ssv = ss.then_some((&sc[..], &sh[..]));
        let gy = r.vec(x.len());
        let gx = group_norm::group_norm_x_backward(&gy, &x, &gamma, &beta, ssv, &g);
        fd_check(&format!("group_norm silu={silu} scale_shift={ss}"), &x, &gy, |v| group_norm::group_norm(v, &gamma, &beta, ssv, &g), &gx);
    }
}

#[test]
fn elementwise_x_backward_matches_finite_differences() {
    let mut r = Rng(4);
    for act in [Activation::Silu, Activation::Relu, Activation::Sigmoid, Activation::Relu6] {
        let x: Vec<f64> = r.vec(40).iter().map(|v| 3.0 * v).collect();
        let gy = r.vec(40);
        let gx = activation::activation_x_backward(&gy, &x, act);
        fd_check(&format!("{act:?}"), &x, &gy, |v| activation::activation(v, act), &gx);
    }
    // folded batch norm
    let (c, s) = (3, 4);
    let (x, scale, shift, gy) = (r.vec(2 * c * s), r.vec(c), r.vec(c), r.vec(2 * c * s));
    let gx = broadcast::channel_affine_x_backward(&gy, &scale, c, s);
    fd_check("channel_affine (batch norm)", &x, &gy, |v| broadcast::channel_affine(v, &scale, &shift, c, s), &gx);
    // add and mul, both inputs, several broadcast patterns
    let ad = [2usize, 3, 2, 4];
    for bd in [[2usize, 3, 2, 4], [2, 3, 1, 1], [1, 3, 1, 1], [1, 1, 2, 4], [2, 1, 2, 1]] {
        let (a, b) = (r.vec(ad.iter().product()), r.vec(bd.iter().product()));
        let gy = r.vec(a.len());
        let (ga, gb) = broadcast::add_x_backward(&gy, &ad, &bd);
        fd_check(&format!("add a, b {bd:?}"), &a, &gy, |v| broadcast::add(v, &ad, &b, &bd), &ga);
        fd_check(&format!("add b {bd:?}"), &b, &gy, |v| broadcast::add(&a, &ad, v, &bd), &gb);
        let (ga, gb) = broadcast::mul_x_backward(&gy, &a, &ad, &b, &bd);
        fd_check(&format!("mul a, b {bd:?}"), &a, &gy, |v| broadcast::mul(v, &ad, &b, &bd), &ga);
        fd_check(&format!("mul b {bd:?}"), &b, &gy, |v| broadcast::mul(&a, &ad, v, &bd), &gb);
    }
}

#[test]
fn pooling_and_resampling_x_backward_match_finite_differences() {
    let mut r = Rng(5);
    for (name, p, h, w) in [("avg 2x2/2", Pool2dParams::new(2, 2, 0), 6, 7), ("avg 3x3/2 p1", Pool2dParams::new(3, 2, 1), 7, 6)] {
        let (g, ys) = ran::ops::pool::pool2d_forward("avg", &Shape::new(&[1, 2, h, w]), &p).unwrap();
        let (x, gy) = (r.vec(2 * h * w), r.vec(ys.numel()));
        let gx = pool::avg_pool2d_x_backward(&gy, &g);
        fd_check(name, &x, &gy, |v| pool::avg_pool2d(v, &g), &gx);
    }
    let p = Pool2dParams::new(3, 2, 1);
    let (g, ys) = ran::ops::pool::pool2d_forward("max", &Shape::new(&[1, 2, 7, 8]), &p).unwrap();
    let (x, gy) = (r.vec(2 * 7 * 8), r.vec(ys.numel()));
    let gx = pool::max_pool2d_x_backward(&gy, &x, &g);
    fd_check("max 3x3/2 p1", &x, &gy, |v| pool::max_pool2d(v, &g), &gx);

    let (x, gy) = (r.vec(2 * 3 * 4), r.vec(2 * 6 * 8));
    let gx = resample::upsample_nearest2x_x_backward(&gy, 3, 4);
    fd_check("nearest x2", &x, &gy, |v| resample::upsample_nearest2x(v, 3, 4), &gx);

    for (h, w, ho, wo) in [(8, 8, 4, 4), (5, 7, 9, 4), (16, 12, 3, 5), (4, 4, 16, 16)] {
        let (x, gy) = (r.vec(2 * h * w), r.vec(2 * ho * wo));
        let gx = resample::resize_bilinear_x_backward(&gy, h, w, ho, wo);
        fd_check(&format!("bilinear {h}x{w}->{ho}x{wo}"), &x, &gy, |v| resample::resize_bilinear(v, h, w, ho, wo), &gx);
    }
}

#[test]
fn concat_and_attention_x_backward_match_finite_differences() {
    let mut r = Rng(6);
    // concat: the gradient of part 0 is its slice of gy
    let (a, b) = (r.vec(2 * 3 * 4), r.vec(2 * 2 * 4));
    let gy = r.vec(2 * 5 * 4);
    let ga = layout::slice_channels(&gy, 2, 5, 4, 0, 3);
    fd_check("concat part a", &a, &gy, |v| layout::concat_channels(&[(v, 3), (&b, 2)], 2, 4), &ga);
    let gb = layout::slice_channels(&gy, 2, 5, 4, 3, 5);
    fd_check("concat part b", &b, &gy, |v| layout::concat_channels(&[(&a, 3), (v, 2)], 2, 4), &gb);

    for (n, heads, d, t) in [(1, 1, 4, 5), (2, 2, 3, 6)] {
        let qkv: Vec<f64> = r.vec(n * 3 * heads * d * t).iter().map(|v| 1.5 * v).collect();
        let gy = r.vec(n * heads * d * t);
        let g = attention::attention_legacy_x_backward(&gy, &qkv, d, t);
        fd_check(&format!("attention n{n} h{heads} d{d} t{t}"), &qkv, &gy, |v| attention::attention_legacy(v, n, heads, d, t), &g);
    }
}

#[test]
fn gather_and_mahalanobis_x_backward_match_finite_differences() {
    let mut r = Rng(7);
    let ids = [4, 0, 2];
    let (x, gy) = (r.vec(2 * 5 * 3), r.vec(2 * 3 * 3));
    let gx = layout::gather_channels_x_backward(&gy, 2, 5, 3, &ids);
    fd_check("gather channels", &x, &gy, |v| layout::gather_channels(v, 2, 5, 3, &ids), &gx);

    // a random lower-triangular L⁻¹ with a dominant diagonal (any such factor is a valid one)
    for (n, d, np) in [(1, 1, 2), (2, 5, 3), (1, 37, 2)] {
        let mut linv = r.vec(np * mahalanobis::packed_len(d));
        for p in 0..np {
            for i in 0..d {
                linv[p * mahalanobis::packed_len(d) + i * (i + 1) / 2 + i] += 2.0;
            }
        }
        let (f, mean, gd) = (r.vec(n * d * np), r.vec(np * d), r.vec(n * np));
        let g = mahalanobis::mahalanobis_x_backward(&gd, &f, &mean, &linv, n, d, np);
        fd_check(&format!("mahalanobis n{n} d{d} p{np}"), &f, &gd, |v| mahalanobis::mahalanobis(v, &mean, &linv, n, d, np), &g);
    }
}
