//! The CPU conv's block-parallel paths (backend/cpu/conv2d.rs): when an image has fewer bands of
//! output rows than there are threads but the batch (or the groups) gives every thread a block,
//! conv2d and its ∂x run one task per (image, group[, band]) with single-threaded GEMMs, and ∂w
//! sums one partial per image. conv2d and ∂x must give exactly the bits of the one-thread run (the
//! same GEMM call per block: the forward's recorded demo numbers rest on it); ∂w exactly the f32
//! sum, in image order, of each image's ∂w from the one-thread run. Each case runs in rayon pools
//! of 1, 2 and 3 threads built here, so the paths are taken on any machine.
//!
//! Bugs these catch: a block written at another image's or group's offset, a band's rows shifted,
//! tasks racing on one output, a lost or doubled image in ∂w, a GEMM whose threading changed its
//! sums (any of them changes bits).

use ran::backend::cpu::conv2d;
use ran::backend::{Conv2dParams, Padding2d};
use ran::ops::contract::Conv2dGeom;
use ran::optable::sizes::uniform;
use ran::Shape;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

fn geom(xs: [usize; 4], ws: [usize; 4], stride: usize, pad: [usize; 4], groups: usize) -> Conv2dGeom {
    let p = Conv2dParams { stride: (stride, stride), padding: Padding2d::lrtb(pad[0], pad[1], pad[2], pad[3]), groups };
    ran::ops::conv::conv2d(&Shape::new(&xs), &Shape::new(&ws), None, &p).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn block_parallel_convs_give_the_one_thread_bits() {
    // (what, x, w, stride, padding l r t b, groups)
    let cases: [(&str, [usize; 4], [usize; 4], usize, [usize; 4], usize); 6] = [
        ("3x3 s1 @16², 3 images", [3, 8, 16, 16], [12, 8, 3, 3], 1, [1, 1, 1, 1], 1),
        ("3x3 s1 @8², 2 images, odd channels", [2, 5, 8, 8], [7, 5, 3, 3], 1, [1, 1, 1, 1], 1),
        ("3x3 s2 asymmetric padding, 2 images", [2, 6, 9, 10], [5, 6, 3, 3], 2, [1, 0, 1, 0], 1),
        ("3x3 groups 2, one image", [1, 8, 8, 8], [6, 4, 3, 3], 1, [1, 1, 1, 1], 2),
        ("pointwise, 2 images", [2, 16, 8, 8], [24, 16, 1, 1], 1, [0, 0, 0, 0], 1),
        ("3x3 @64² (two bands an image), 3 images", [3, 4, 64, 64], [6, 4, 3, 3], 1, [1, 1, 1, 1], 1),
    ];
    for (what, xs, ws, stride, pad, groups) in cases {
        let g = geom(xs, ws, stride, pad, groups);
        let x = uniform(xs.iter().product(), 1);
        let w = uniform(ws.iter().product(), 2);
        let bias = uniform(ws[0], 3);
        let gy = uniform(Shape::new(&g.y_dims()).numel(), 4);
        let one = pool(1);
        let y1 = one.install(|| conv2d::conv2d(&x, &w, Some(&bias[..]), &g));
        let gx1 = one.install(|| conv2d::conv2d_x_backward(&gy, &w, &g));
        // each image's ∂w alone, one thread, then their f32 sum in image order
        let n = xs[0];
        let (xper, yper) = (x.len() / n, gy.len() / n);
        let gi = geom([1, xs[1], xs[2], xs[3]], ws, stride, pad, groups);
        let mut gw_sum: Vec<f32> = Vec::new();
        for i in 0..n {
            let p = one.install(|| conv2d::conv2d_w_backward(&gy[i * yper..][..yper], &x[i * xper..][..xper], &gi));
            if gw_sum.is_empty() {
                gw_sum = p;
            } else {
                gw_sum.iter_mut().zip(&p).for_each(|(a, &b)| *a += b);
            }
        }
        for threads in [2, 3] {
            let tp = pool(threads);
            let y = tp.install(|| conv2d::conv2d(&x, &w, Some(&bias[..]), &g));
            assert_eq!(bits(&y), bits(&y1), "{what}, {threads} threads: conv2d differs from the one-thread run");
            let gx = tp.install(|| conv2d::conv2d_x_backward(&gy, &w, &g));
            assert_eq!(bits(&gx), bits(&gx1), "{what}, {threads} threads: ∂x differs from the one-thread run");
            let gw = tp.install(|| conv2d::conv2d_w_backward(&gy, &x, &g));
            // ∂w sums per-image partials when the images fill the threads evenly (conv2d.rs's
            // `balanced`); else it accumulates image after image in one buffer: within f32
            // rounding of the partials' sum, not its bits
            if n >= threads && (n % threads == 0 || n >= 4 * threads) {
                assert_eq!(bits(&gw), bits(&gw_sum), "{what}, {threads} threads: ∂w is not the images' ∂w summed in order");
            } else {
                let scale = gw_sum.iter().fold(1.0f32, |m, v| m.max(v.abs()));
                let worst = gw.iter().zip(&gw_sum).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(worst <= 1e-5 * scale, "{what}, {threads} threads: ∂w off by {worst:e} (scale {scale})");
            }
        }
    }
}
