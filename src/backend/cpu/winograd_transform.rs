//! The three F(4×4, 3×3) transforms (Lavin & Gray's points 0, ±1, ±2, ∞): a 6×6 input tile d
//! becomes Bᵀ·d·B, a 3×3 kernel g becomes G·g·Gᵀ, and the 6×6 product m becomes the 4×4 output
//! Aᵀ·m·A. Written out as sums with the matrices' constants so no multiply by 0 or ±1 is spent.
//! Input and output tiles are handled `LANES` tiles at a time, lanes innermost, so the compiler
//! turns every formula into vector arithmetic over the lanes.

use super::real::Real;

/// Tiles transformed side by side (the innermost dimension of the transformed blocks).
pub const LANES: usize = 8;

/// One value per lane.
pub type Lanes<T> = [T; LANES];

#[inline(always)]
fn lanes<T: Real>(f: impl Fn(usize) -> T) -> Lanes<T> {
    std::array::from_fn(f)
}

/// Bᵀ·d for one column of six lane vectors.
#[inline(always)]
fn bt<T: Real>(d: &[Lanes<T>; 6]) -> [Lanes<T>; 6] {
    let (c2, c4, c5) = (T::of(2.0), T::of(4.0), T::of(5.0));
    [
        lanes(|l| c4 * d[0][l] - c5 * d[2][l] + d[4][l]),
        lanes(|l| -c4 * (d[1][l] + d[2][l]) + d[3][l] + d[4][l]),
        lanes(|l| c4 * (d[1][l] - d[2][l]) - d[3][l] + d[4][l]),
        lanes(|l| c2 * (d[3][l] - d[1][l]) - d[2][l] + d[4][l]),
        lanes(|l| c2 * (d[1][l] - d[3][l]) - d[2][l] + d[4][l]),
        lanes(|l| c4 * d[1][l] - c5 * d[3][l] + d[5][l]),
    ]
}

/// Aᵀ·m for one column of six lane vectors.
#[inline(always)]
fn at<T: Real>(m: &[Lanes<T>; 6]) -> [Lanes<T>; 4] {
    let (c2, c4, c8) = (T::of(2.0), T::of(4.0), T::of(8.0));
    [
        lanes(|l| m[0][l] + m[1][l] + m[2][l] + m[3][l] + m[4][l]),
        lanes(|l| m[1][l] - m[2][l] + c2 * (m[3][l] - m[4][l])),
        lanes(|l| m[1][l] + m[2][l] + c4 * (m[3][l] + m[4][l])),
        lanes(|l| m[1][l] - m[2][l] + c8 * (m[3][l] - m[4][l]) + m[5][l]),
    ]
}

/// V = Bᵀ·d·B for `LANES` tiles: d[row][col][lane] → v[ξ = 6·row + col][lane].
#[inline]
pub fn input_tile<T: Real>(d: &[[Lanes<T>; 6]; 6], v: &mut [Lanes<T>; 36]) {
    // columns first: t[r][c] = (Bᵀ·d)[r][c]
    let mut t = [[[T::zero(); LANES]; 6]; 6];
    for c in 0..6 {
        let col = std::array::from_fn(|r| d[r][c]);
        let out = bt(&col);
        for r in 0..6 {
            t[r][c] = out[r];
        }
    }
    // then rows: (Bᵀ·d·B)[r] = Bᵀ·(row r of t)
    for r in 0..6 {
        let out = bt(&t[r]);
        v[6 * r..6 * r + 6].copy_from_slice(&out);
    }
}

/// Y = Aᵀ·m·A for `LANES` tiles: m[ξ][lane] → y[row][col][lane], 4×4.
#[inline]
pub fn output_tile<T: Real>(m: &[Lanes<T>; 36]) -> [[Lanes<T>; 4]; 4] {
    let mut t = [[[T::zero(); LANES]; 6]; 4];
    for c in 0..6 {
        let col = std::array::from_fn(|r| m[6 * r + c]);
        let out = at(&col);
        for r in 0..4 {
            t[r][c] = out[r];
        }
    }
    std::array::from_fn(|r| at(&t[r]))
}

/// U = G·g·Gᵀ of one 3×3 kernel (row-major), in f64 whatever T is: weights are transformed once,
/// and the 1/6, 1/24 constants are not exact in f32.
pub fn kernel(g: &[f64; 9]) -> [f64; 36] {
    let gcol = |a: f64, b: f64, c: f64| -> [f64; 6] { [a / 4.0, -(a + b + c) / 6.0, -(a - b + c) / 6.0, a / 24.0 + b / 12.0 + c / 6.0, a / 24.0 - b / 12.0 + c / 6.0, c] };
    // columns of g first: t[r][kx] = (G·g)[r][kx]
    let mut t = [[0.0; 3]; 6];
    for kx in 0..3 {
        let col = gcol(g[kx], g[3 + kx], g[6 + kx]);
        for r in 0..6 {
            t[r][kx] = col[r];
        }
    }
    let mut u = [0.0; 36];
    for r in 0..6 {
        u[6 * r..6 * r + 6].copy_from_slice(&gcol(t[r][0], t[r][1], t[r][2]));
    }
    u
}

/// `kernel` for `LANES` kernels at once, lanes innermost, the same operations in the same order
/// per lane (so the same bits): the scalar form's divisions and its 36 results per kernel kept it
/// at 8% of the 553M forward, whose transformed weights do not all fit the cache (winograd_weights.rs).
pub fn kernels(g: &[Lanes<f64>; 9]) -> [Lanes<f64>; 36] {
    #[inline(always)]
    fn gcol(a: &Lanes<f64>, b: &Lanes<f64>, c: &Lanes<f64>) -> [Lanes<f64>; 6] {
        [
            lanes(|l| a[l] / 4.0),
            lanes(|l| -(a[l] + b[l] + c[l]) / 6.0),
            lanes(|l| -(a[l] - b[l] + c[l]) / 6.0),
            lanes(|l| a[l] / 24.0 + b[l] / 12.0 + c[l] / 6.0),
            lanes(|l| a[l] / 24.0 - b[l] / 12.0 + c[l] / 6.0),
            *c,
        ]
    }
    // columns of g first: t[r][kx] = (G·g)[r][kx]
    let mut t = [[[0.0; LANES]; 3]; 6];
    for kx in 0..3 {
        let col = gcol(&g[kx], &g[3 + kx], &g[6 + kx]);
        for r in 0..6 {
            t[r][kx] = col[r];
        }
    }
    let mut u = [[0.0; LANES]; 36];
    for r in 0..6 {
        u[6 * r..6 * r + 6].copy_from_slice(&gcol(&t[r][0], &t[r][1], &t[r][2]));
    }
    u
}
