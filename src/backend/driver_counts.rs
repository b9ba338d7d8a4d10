//! Driver calls a device backend made: what `ran bench unet --device cuda|emulator` prints per
//! forward. Counted by the CUDA backend's caching layer (backend/cuda/cached.rs) as it calls the
//! device: a cache hit is not a driver call, a miss is one allocation.

use std::ops::Sub;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverCounts {
    /// kernel launches (cuLaunchKernel)
    pub launches: u64,
    /// device allocations (cuMemAllocAsync), i.e. caching-allocator misses
    pub allocs: u64,
    /// device frees (cuMemFreeAsync): releases above the threshold and trims on out-of-memory
    pub frees: u64,
    /// cuMemsetD8Async, for outputs an op needs zeroed
    pub memsets: u64,
    /// host↔device copies (uploads and downloads)
    pub copies: u64,
    /// stream synchronisations (each download waits for the stream; RAN_CUDA_SYNC=1 adds one per launch)
    pub syncs: u64,
    /// other calls: kernel attributes (cuFuncSetAttribute for large dynamic shared memory) and
    /// graph instantiations (cuGraphInstantiate)
    pub other: u64,
    /// graph launches (cuGraphLaunch: a whole recorded forward in one call; backend/cuda/graph.rs)
    pub graph_launches: u64,
}

impl DriverCounts {
    /// All driver calls.
    pub fn calls(&self) -> u64 {
        self.launches + self.allocs + self.frees + self.memsets + self.copies + self.syncs + self.other + self.graph_launches
    }
}

impl Sub for DriverCounts {
    type Output = DriverCounts;
    /// The calls made between two snapshots (`later - earlier`).
    fn sub(self, e: DriverCounts) -> DriverCounts {
        DriverCounts {
            launches: self.launches - e.launches,
            allocs: self.allocs - e.allocs,
            frees: self.frees - e.frees,
            memsets: self.memsets - e.memsets,
            copies: self.copies - e.copies,
            syncs: self.syncs - e.syncs,
            other: self.other - e.other,
            graph_launches: self.graph_launches - e.graph_launches,
        }
    }
}

impl std::fmt::Display for DriverCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} driver calls: {} launches, {} allocs, {} frees, {} memsets, {} copies, {} syncs, {} other, {} graph launches",
            self.calls(),
            self.launches,
            self.allocs,
            self.frees,
            self.memsets,
            self.copies,
            self.syncs,
            self.other,
            self.graph_launches
        )
    }
}
