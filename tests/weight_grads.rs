//! The weight gradients training needs (conv2d_w_backward, linear_w_backward,
//! group_norm_w_backward, embedding_w_backward): the CPU twins against central differences in
//! f64. Their float64 PyTorch autograd cases (tests/fixtures/weight_grads.safetensors,
//! tools/reference/make_weight_grad_fixtures.py) are rows of the op table, run on the CPU by
//! tests/ops_vs_torch.rs and on the CUDA kernels under every schedule by tests/backends_agree.rs.
//!
//! Bugs the fixture cases are there to catch: a wrong tap ↔ pixel index in the im2col transpose (any
//! conv case), a second or third GEMM tile in M, N or K never summed (wconv3x3_m70_k220,
//! wconv3x3_n144, wlinear_130x100_rows150), top and left padding swapped (wconv3x3_s2_top1_left0,
//! wconv2x4_s3_asym), the depthwise and pointwise paths (wconv_dw*, wconv1x1_pointwise_130px),
//! a group's weights written to another group (groups2), a scale-shift or SiLU term left out of
//! ∂γ/∂β (wgn_silu_ss), eps ignored (wgn_300_per_group_eps1e-3: variance 1e-4, eps 1e-3), a
//! block-stride loop over more than 256 values (same case), and repeated embedding ids that
//! overwrite instead of adding (wembedding_repeat).

mod common;
use common::fd::{fd_check, Rng};
use ran::backend::cpu::{conv2d, embedding, group_norm, linear};
use ran::backend::{Conv2dParams, GroupNormParams, Padding2d};
use ran::Shape;

#[test]
fn conv2d_w_backward_matches_finite_differences() {
    let mut r = Rng(9);
    // (name, x dims, w dims, stride, padding l r t b, groups): dense, strided with top ≠ left,
    // grouped, depthwise, pointwise; 45×100 output pixels make three im2col bands (the CPU's
    // BAND_COLS is 2048): a band after the first that overwrote instead of adding, or the first
    // adding onto the scratch's stale values, shows; 3 images on 2 threads take the image loop
    let cases: [(&str, [usize; 4], [usize; 4], usize, [usize; 4], usize); 6] = [
        ("3x3 s1 p1 @45x100, 3 bands, 3 images", [3, 2, 45, 100], [3, 2, 3, 3], 1, [1, 1, 1, 1], 1),
        ("3x3 s1 p1", [2, 3, 5, 6], [4, 3, 3, 3], 1, [1, 1, 1, 1], 1),
        ("3x3 s2 top 1 left 0", [1, 2, 7, 6], [3, 2, 3, 3], 2, [0, 1, 1, 0], 1),
        ("3x3 groups 2", [1, 4, 5, 5], [4, 2, 3, 3], 1, [1, 1, 1, 1], 2),
        ("depthwise 3x3 s2", [2, 3, 6, 7], [3, 1, 3, 3], 2, [1, 0, 0, 1], 3),
        ("pointwise", [2, 4, 3, 5], [5, 4, 1, 1], 1, [0, 0, 0, 0], 1),
    ];
    for (name, xs, ws, stride, pad, groups) in cases {
        let p = Conv2dParams { stride: (stride, stride), padding: Padding2d::lrtb(pad[0], pad[1], pad[2], pad[3]), groups };
        let g = ran::ops::conv::conv2d(&Shape::new(&xs), &Shape::new(&ws), None, &p).unwrap();
        let x = r.vec(xs.iter().product());
        let w = r.vec(ws.iter().product());
        let gy = r.vec(Shape::new(&g.y_dims()).numel());
        let gw = conv2d::conv2d_w_backward(&gy, &x, &g);
        fd_check(&format!("conv2d_w_backward {name}"), &w, &gy, |v| conv2d::conv2d(&x, v, None, &g), &gw);
    }
}

#[test]
fn linear_and_embedding_w_backward_match_finite_differences() {
    let mut r = Rng(10);
    let (n, fin, fout) = (4, 6, 5);
    let (x, w, gy) = (r.vec(n * fin), r.vec(fout * fin), r.vec(n * fout));
    let gw = linear::linear_w_backward(&gy, &x, n, fin, fout);
    fd_check("linear_w_backward", &w, &gy, |v| linear::linear(&x, v, None, n, fin, fout), &gw);
    let (rows, dim, ids) = (5, 3, [1usize, 4, 1, 1, 0]);
    let (table, gy) = (r.vec(rows * dim), r.vec(ids.len() * dim));
    let gt = embedding::embedding_w_backward(&gy, rows, dim, &ids);
    fd_check("embedding_w_backward repeated ids", &table, &gy, |v| embedding::embedding(v, dim, &ids), &gt);
}

#[test]
fn group_norm_w_backward_matches_finite_differences() {
    let mut r = Rng(12);
    let (n, c, s, groups) = (2, 6, 5, 3);
    for (silu, with_ss) in [(false, false), (true, false), (false, true), (true, true)] {
        let p = GroupNormParams { groups, eps: 1e-5, silu };
        let g = ran::ops::norm::group_norm(&Shape::new(&[n, c, s]), &Shape::new(&[c]), &Shape::new(&[c]), &p, None).unwrap();
        let g = ran::ops::contract::GroupNormGeom { has_ss: with_ss as i32, ..g };
        let x = r.vec(n * c * s);
        let (gamma, beta) = (r.vec(c).iter().map(|v| 1.0 + 0.3 * v).collect::<Vec<_>>(), r.vec(c));
        let (sc, sh) = (r.vec(n * c), r.vec(n * c));
        let gy = r.vec(n * c * s);
        let ss = with_ss.then_some((&sc[..], &sh[..]));
        let (gg, gb, gss) = group_norm::group_norm_w_backward(&gy, &x, &gamma, &beta, ss, &g);
        let tag = format!("silu {silu}, scale-shift {with_ss}");
        fd_check(&format!("group_norm ∂γ ({tag})"), &gamma, &gy, |v| group_norm::group_norm(&x, v, &beta, ss, &g), &gg);
        fd_check(&format!("group_norm ∂β ({tag})"), &beta, &gy, |v| group_norm::group_norm(&x, &gamma, v, ss, &g), &gb);
        if let Some((gs, gsh)) = gss {
            fd_check(&format!("group_norm ∂scale ({tag})"), &sc, &gy, |v| group_norm::group_norm(&x, &gamma, &beta, Some((v, &sh[..])), &g), &gs);
            fd_check(&format!("group_norm ∂shift ({tag})"), &sh, &gy, |v| group_norm::group_norm(&x, &gamma, &beta, Some((&sc[..], v)), &g), &gsh);
        } else {
            assert!(!with_ss, "scale-shift gradients missing");
        }
    }
}
