//! A FLOP counter for `ran bench`: the op layer adds the work of each matrix-product-class op
//! (convolution, linear, attention's two batched products, and their backward passes) while
//! counting is on, as torch.utils.flop_counter.FlopCounterMode does (2 FLOPs per multiply-add;
//! normalisation, activations and element-wise ops count nothing), so both sides of a benchmark
//! report the same FLOP count for the same work. Off, it costs one relaxed atomic load per op.

use super::attention::AttentionGeom;
use super::contract::Conv2dGeom;
use super::conv::LinearGeom;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ON: AtomicBool = AtomicBool::new(false);
static FLOPS: AtomicU64 = AtomicU64::new(0);

/// Runs `f` with counting on and returns its result and the FLOPs it did. Global: meant for a
/// benchmark process, which runs one workload at a time.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    FLOPS.store(0, Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
    let r = f();
    ON.store(false, Ordering::Relaxed);
    (r, FLOPS.swap(0, Ordering::Relaxed))
}

fn add(flops: u64) {
    if ON.load(Ordering::Relaxed) {
        FLOPS.fetch_add(flops, Ordering::Relaxed);
    }
}

/// 2·N·O·(C/groups)·KH·KW·Ho·Wo: the forward, and equally each of its input and weight gradients.
pub fn conv2d(g: &Conv2dGeom) {
    add(2 * (g.n() * g.o() * g.kk() * g.ho() * g.wo()) as u64);
}

/// 2·rows·in·out: the forward, and equally each gradient.
pub fn linear(g: &LinearGeom) {
    add(2 * (g.rows * g.fin * g.fout) as u64);
}

/// Q·Kᵀ and P·V per head: 2 · 2·T·T·d; `products` is 2 for the forward and 4 for the backward.
pub fn attention(g: &AttentionGeom, products: u64) {
    add(products * 2 * (g.n * g.heads * g.t * g.t * g.d) as u64);
}
