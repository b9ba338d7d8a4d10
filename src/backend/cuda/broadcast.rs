//! Which broadcasts elementwise.cu's `add_rows_f32` / `mul_rows_f32` take: those where b's index
//! of a's element e is (e / inner) mod mid — b keeps a contiguous run of a's dims (dims of size 1
//! aside) and broadcasts the rest: the same shape, [1,C,1,1] or [N,C,1,1] over [N,C,H,W], a
//! scalar, [1,1,H,W]. Anything else (e.g. [N,1,H,W]) goes to the general kernels.

use crate::ops::contract::BroadcastGeom;

/// (inner, mid), or None for a pattern the row kernels cannot express.
pub fn rows(g: &BroadcastGeom) -> Option<(i32, i32)> {
    // dims of a (size > 1) that b keeps
    let kept: Vec<usize> = (0..4).filter(|&d| g.dims[d] > 1 && g.bdims[d] == g.dims[d]).collect();
    let n: i64 = g.dims.iter().map(|&d| d as i64).product();
    let (Some(&lo), Some(&hi)) = (kept.first(), kept.last()) else {
        return Some((i32::try_from(n).ok()?.max(1), 1)); // b is one value
    };
    // between lo and hi every dim of a is kept or of size 1
    if (lo..=hi).any(|d| g.dims[d] > 1 && g.bdims[d] != g.dims[d]) {
        return None;
    }
    let inner: i64 = g.dims[hi + 1..].iter().map(|&d| d as i64).product();
    let mid: i64 = g.dims[lo..=hi].iter().map(|&d| d as i64).product();
    Some((i32::try_from(inner).ok()?, i32::try_from(mid).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::elementwise::broadcast;
    use crate::tensor::Shape;

    fn of(a: &[usize], b: &[usize]) -> Option<(i32, i32)> {
        rows(&broadcast("test", &Shape::new(a), &Shape::new(b)).unwrap())
    }

    /// Each pattern against b's index computed the long way, element by element.
    #[test]
    fn rows_index_b_as_the_broadcast_does() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 4, 3, 5], &[2, 4, 3, 5]),
            (&[2, 4, 3, 5], &[2, 4, 1, 1]),
            (&[3, 4, 2, 3], &[1, 4, 1, 1]),
            (&[2, 3, 4, 5], &[1, 1, 4, 5]),
            (&[2, 3, 4, 5], &[1, 1, 1, 1]),
            (&[2, 1, 4, 5], &[2, 1, 1, 1]),
            (&[7, 6], &[1, 6]),
            (&[5], &[5]),
        ];
        for &(a, b) in cases {
            let (inner, mid) = of(a, b).unwrap_or_else(|| panic!("{a:?} <- {b:?} should be a row pattern"));
            let n: usize = a.iter().product();
            for e in 0..n {
                // a's multi-index, then b's flat index with b's broadcast dims at 0
                let (mut r, mut bi, mut bstride) = (e, 0, 1);
                for d in (0..a.len()).rev() {
                    let i = r % a[d];
                    r /= a[d];
                    if b[d] != 1 {
                        bi += i * bstride;
                    }
                    bstride *= b[d];
                }
                assert_eq!((e / inner as usize) % mid as usize, bi, "{a:?} <- {b:?} at {e}");
            }
        }
    }

    #[test]
    fn split_patterns_go_to_the_general_kernels() {
        assert_eq!(of(&[2, 3, 4, 5], &[2, 1, 4, 5]), None);
        assert_eq!(of(&[2, 3, 4, 5], &[2, 1, 1, 5]), None);
    }
}
