//! How group_norm.cu's split launches cut each (image, group) into chunks, one block per chunk
//! (kernels/README.md, "Group norm"): about GN_TARGET_BLOCKS blocks in all, chunks of at least
//! GN_MIN_CHUNK values and a multiple of 4 (so every chunk of a 16-byte-aligned group is aligned
//! too), and no more threads than one float4 each. A group small enough for one block's shared
//! memory skips the split: `fused`.

use super::device::LaunchCfg;
use crate::ops::contract::{GroupNormGeom, GroupNormSplit, GN_BLOCK, GN_FUSED_FLOATS, GN_MIN_CHUNK, GN_TARGET_BLOCKS};

pub struct Plan {
    pub split: GroupNormSplit,
    pub cfg: LaunchCfg,
    /// blocks in the grid (n · groups · splits); the moments buffers hold two floats per block
    pub blocks: usize,
}

/// None when there is nothing to normalise (no image, or empty groups).
pub fn plan(g: &GroupNormGeom) -> Option<Plan> {
    let len = g.c() / g.groups() * g.s();
    let groups = g.n() * g.groups();
    if len == 0 || groups == 0 {
        return None;
    }
    let want = (GN_TARGET_BLOCKS as usize).div_ceil(groups);
    let most = (len / GN_MIN_CHUNK as usize).max(1);
    let chunk = len.div_ceil(want.min(most)).next_multiple_of(4);
    let splits = len.div_ceil(chunk);
    let threads = chunk.div_ceil(4).next_multiple_of(32).min(GN_BLOCK as usize);
    let blocks = groups * splits;
    let cfg = LaunchCfg { grid: (blocks as u32, 1, 1), block: (threads as u32, 1, 1), smem_bytes: 0 };
    Some(Plan { split: GroupNormSplit { splits: splits as i32, chunk: chunk as i32 }, cfg, blocks })
}

/// The forward in one launch, one block per (image, group) (group_norm_fused_f32), when a group's
/// values (padded to 4) and its channels' (a, bb) pairs fit in GN_FUSED_FLOATS of shared memory:
/// x is then read once, against twice for the split. None: use `plan`. Independent of the batch,
/// so one model launches the same kernels at every batch size.
pub fn fused(g: &GroupNormGeom) -> Option<LaunchCfg> {
    one_block_per_group(g, 1)
}

/// The input gradient in one launch (group_norm_x_backward_fused_f32) when x, gy and the
/// coefficients of a group fit: x and gy read once, against three and two times for the split.
pub fn fused_x_backward(g: &GroupNormGeom) -> Option<LaunchCfg> {
    one_block_per_group(g, 2)
}

/// `tensors` padded group-sized arrays and the (a, bb) pairs in GN_FUSED_FLOATS.
fn one_block_per_group(g: &GroupNormGeom, tensors: usize) -> Option<LaunchCfg> {
    let cpg = g.c() / g.groups();
    let len = cpg * g.s();
    let groups = g.n() * g.groups();
    let floats = tensors * len.next_multiple_of(4) + 2 * cpg;
    if len == 0 || groups == 0 || floats > GN_FUSED_FLOATS as usize {
        return None;
    }
    let threads = len.div_ceil(4).next_multiple_of(32).min(GN_BLOCK as usize);
    Some(LaunchCfg { grid: (groups as u32, 1, 1), block: (threads as u32, 1, 1), smem_bytes: (4 * floats) as u32 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(n: usize, c: usize, s: usize, groups: usize) -> GroupNormGeom {
        GroupNormGeom { n: n as i32, c: c as i32, s: s as i32, groups: groups as i32, eps: 1e-5, silu: 0, has_ss: 0, ss_stride: c as i32, scale_off: 0, shift_off: 0 }
    }

    /// The chunks tile each group exactly: the last starts inside it and every one is aligned.
    #[test]
    fn chunks_cover_each_group_once() {
        for (n, c, s, groups) in [(1, 64, 30, 32), (2, 64, 144, 32), (1, 16, 30, 8), (1, 256, 65536, 32), (8, 1024, 64, 32), (1, 6, 7, 3), (3, 5, 1, 5)] {
            let g = geom(n, c, s, groups);
            let p = plan(&g).unwrap();
            let (splits, chunk, len) = (p.split.splits as usize, p.split.chunk as usize, c / groups * s);
            assert_eq!(chunk % 4, 0, "{n}x{c}x{s}/{groups}");
            assert!(splits * chunk >= len && (splits - 1) * chunk < len, "{n}x{c}x{s}/{groups}: {splits} chunks of {chunk} for {len}");
            assert_eq!(p.blocks, n * groups * splits);
            assert!(p.cfg.block.0 % 32 == 0 && p.cfg.block.0 <= GN_BLOCK);
        }
    }

    /// The point of the split: at batch 1, every group-norm shape of the paper's UNet at 256²
    /// (32 groups; 256 channels at 256² and 128², 512 at 64² and 32², 1024 at 16² and 8²) that is
    /// too large for one block fills a 132-SM H200 with at least two blocks per SM; the smallest
    /// (1024 ch @ 8²: 2,048 values per group, a 256 KiB tensor, latency-bound) is one launch of
    /// one block per group instead.
    #[test]
    fn the_unet_shapes_give_two_blocks_per_sm_at_batch_1_or_one_launch() {
        for (c, hw) in [(256, 256), (256, 128), (512, 64), (512, 32), (1024, 16)] {
            let g = geom(1, c, hw * hw, 32);
            assert!(fused(&g).is_none(), "{c} ch @{hw}²");
            let p = plan(&g).unwrap();
            assert!(p.blocks >= 2 * 132, "{c} ch @{hw}²: {} blocks", p.blocks);
        }
        let f = fused(&geom(1, 1024, 64, 32)).expect("1024 ch @ 8² in one launch");
        assert_eq!((f.grid.0, f.block.0, f.smem_bytes), (32, 256, 4 * (2048 + 64)));
    }

    /// Catches: a fused launch whose shared memory misses the coefficients or the padding to a
    /// float4 (the kernel would write past its dynamic shared memory, an emulator error), or a
    /// group just over the limit still fused.
    #[test]
    fn fused_groups_fit_their_shared_memory() {
        let lim = GN_FUSED_FLOATS as usize;
        // (c, s, groups): 3 channels of 5 (15 values → 16 + 6), one value per group, at the limit (6,140 + 2)
        // and just over it (6,142 → 6,144 + 2)
        for (c, s, groups, fits) in [(3, 5, 1, true), (4, 1, 4, true), (1, lim - 4, 1, true), (1, lim - 2, 1, false), (2, lim / 2, 1, false)] {
            let g = geom(2, c, s, groups);
            let cpg = c / groups;
            match fused(&g) {
                Some(f) => {
                    assert!(fits, "{c}x{s}/{groups} fused");
                    assert_eq!(f.smem_bytes as usize, 4 * ((cpg * s).next_multiple_of(4) + 2 * cpg));
                    assert_eq!(f.grid.0 as usize, 2 * groups);
                    assert!(f.block.0 % 32 == 0 && f.block.0 <= GN_BLOCK);
                }
                None => assert!(!fits, "{c}x{s}/{groups} not fused"),
            }
        }
        // the input gradient holds x and gy: half the values
        let f = fused_x_backward(&geom(1, 1, lim / 2 - 4, 1)).expect("3,068 values");
        assert_eq!(f.smem_bytes as usize, 4 * (2 * (lim / 2 - 4) + 2));
        assert!(fused_x_backward(&geom(1, 1, lim / 2 - 2, 1)).is_none(), "3,070 → 2 × 3,072 + 2 floats");
    }
}
