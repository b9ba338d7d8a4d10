//! How group_norm.cu's split launches cut each (image, group) into chunks, one block per chunk
//! (kernels/README.md, "Group norm"): about GN_TARGET_BLOCKS blocks in all, chunks of at least
//! GN_MIN_CHUNK values and a multiple of 4 (so every chunk of a 16-byte-aligned group is aligned
//! too), and no more threads than one float4 each.

use super::device::LaunchCfg;
use crate::ops::contract::{GroupNormGeom, GroupNormSplit, GN_BLOCK, GN_MIN_CHUNK, GN_TARGET_BLOCKS};

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
    /// (32 groups; 256 channels at 256² and 128², 512 at 64² and 32², 1024 at 16² and 8²) fills a
    /// 132-SM H200 with at least two blocks per SM.
    #[test]
    fn the_unet_shapes_give_two_blocks_per_sm_at_batch_1() {
        for (c, hw) in [(256, 256), (256, 128), (512, 64), (512, 32), (1024, 16), (1024, 8)] {
            let p = plan(&geom(1, c, hw * hw, 32)).unwrap();
            assert!(p.blocks >= 2 * 132, "{c} ch @{hw}²: {} blocks", p.blocks);
        }
    }
}
