//! The CUDA backend: every op of `Compute` as a launch of a hand-written kernel from kernels/*.cu,
//! through the typed launch functions build.rs generates (`launch`). Generic over `Device`, so the
//! same code drives a real GPU (`gpu`, through cudarc) and the CPU emulator of CUDA (`emu`) that
//! runs the kernels in the test suite. Shapes arrive checked (`backend::Backend` asks `ops`).

pub mod attention_flash;
pub mod attention_tc;
pub mod broadcast;
pub mod cached;
pub mod device;
pub mod emu;
pub mod gn_out;
pub mod gpu;
pub mod graph;
pub mod kernels;
pub mod launch;
pub mod norm_conv;
pub mod norm_split;
pub mod precision_dispatch;
pub mod tensor_core;
pub mod weight_cache;

use self::cached::{CacheOptions, CachedBuf, CachedDevice};
use self::device::{Device, LaunchCfg};
use super::{Compute, GroupNormGrads, ScaleShift};
use crate::backend::driver_counts::DriverCounts;
use crate::backend::Backend as _;
use crate::ops::attention::AttentionGeom;
use crate::ops::contract::{
    AdamwCoefs, BroadcastGeom, Conv2dGeom, DdimCoefs, GroupNormGeom, Pool2dGeom, StepCoefs, ATTN_BLOCK, EW_BLOCK, EW_MAX_BLOCKS, IGEMM_SMEM_BYTES, IGEMM_THREADS, IGEMM_TM, IGEMM_TN, MAHA_BLOCK,
    MEAN_STD_BLOCK, REDUCE_BLOCK,
};
use crate::ops::conv::LinearGeom;
use crate::ops::padim::MahalanobisGeom;
use crate::ops::pool::ResizeGeom;
use crate::ops::precision::Precision;
use crate::ops::Activation;
use crate::tensor::{HasStorage, Shape, Tensor};
use crate::Result;
use std::sync::Arc;

/// Every device call goes through `cached` (buffer reuse, driver-call counts, RAN_CUDA_SYNC).
pub struct CudaBackend<D: Device> {
    dev: CachedDevice<D>,
    /// operands of conv2d / linear and their input gradients (precision_dispatch.rs); F32 is the
    /// f32 kernels exactly as without it
    precision: Precision,
    /// recorded forwards (graph.rs)
    graphs: graph::GraphCache<D>,
    /// the tensor-core paths' narrow weight copies, made once per weight (weight_cache.rs)
    weights: weight_cache::WeightCache<D>,
    /// group_norm_coefs_f32's zeroed per-group counters (norm_conv.rs)
    gn_counts: norm_conv::GnCounters<D>,
    /// the tensor-core conv casts x to NHWC in a pass of its own first (`RAN_CUDA_CAST_FIRST=1`),
    /// instead of in its loader (tensor_core.rs): the same numbers, for measuring which pays
    cast_first: bool,
}

/// Cached bytes kept for reuse where the device does not say its size (the emulator: host memory
/// shared with the rest of the test suite); a GPU keeps up to its whole memory and trims on
/// out-of-memory.
const EMU_RELEASE_THRESHOLD: usize = 1 << 30;

pub type EmulatedCuda = CudaBackend<emu::EmuDevice>;
pub type Gpu = CudaBackend<gpu::GpuDevice>;

impl EmulatedCuda {
    /// The emulator; the first call in a process applies RAN_EMU_SCHEDULE (see
    /// `emu::schedule_from_env`), so every model-level test runs under the schedule CI asks for.
    pub fn emulated() -> Self {
        static ENV: std::sync::Once = std::sync::Once::new();
        ENV.call_once(|| match emu::schedule_from_env() {
            Ok(Some(s)) => emu::set_schedule(s),
            Ok(None) => {}
            Err(e) => eprintln!("warning: {e}; the emulator keeps its forward schedule"),
        });
        CudaBackend::new(emu::EmuDevice)
    }
}

type T<D> = Tensor<CudaBackend<D>>;

/// An on/off switch from the environment, read by the caller once per process: unset or empty
/// gives `default`; a value other than 0 or 1 is reported and gives `default` too.
fn env_switch(var: &str, default: bool, keeps: &str) -> bool {
    match std::env::var(var).as_deref() {
        Err(_) | Ok("") => default,
        Ok("1") => true,
        Ok("0") => false,
        Ok(v) => {
            eprintln!("warning: {var}=`{v}`: expected 0 or 1; {keeps}");
            default
        }
    }
}

/// A 1-D grid-stride launch over `n` elements.
fn ew(n: usize) -> LaunchCfg {
    let blocks = n.div_ceil(EW_BLOCK as usize).clamp(1, EW_MAX_BLOCKS as usize) as u32;
    LaunchCfg { grid: (blocks, 1, 1), block: (EW_BLOCK, 1, 1), smem_bytes: 0 }
}

/// The igemm.cuh tiling of an M×N product, `z` independent products (groups) deep.
fn igemm_cfg(m: usize, n: usize, z: usize) -> LaunchCfg {
    let grid = (n.div_ceil(IGEMM_TN as usize) as u32, m.div_ceil(IGEMM_TM as usize) as u32, z as u32);
    LaunchCfg { grid, block: (IGEMM_THREADS, IGEMM_THREADS, 1), smem_bytes: IGEMM_SMEM_BYTES }
}

/// One block per row of a reduction.
fn per_block(blocks: usize, threads: u32, smem_bytes: usize) -> LaunchCfg {
    LaunchCfg { grid: (blocks as u32, 1, 1), block: (threads, 1, 1), smem_bytes: smem_bytes as u32 }
}

/// The device buffer behind a tensor.
fn b<D: Device>(t: &T<D>) -> &CachedBuf<D> {
    t.storage().as_ref()
}

/// Sizes reaching the kernels' `int` parameters; `ops` has bounded every tensor by 2³¹−1.
fn i(v: usize) -> i32 {
    v as i32
}

impl<D: Device> CudaBackend<D> {
    /// The backend over `dev`, its caching options from the environment (`CacheOptions::from_env`;
    /// a bad value is reported and ignored).
    pub fn new(dev: D) -> Self {
        let threshold = dev.mem_info().map_or(EMU_RELEASE_THRESHOLD, |(_, total)| total);
        let emulated = dev.kind() == "cuda-emulator";
        let opts = CacheOptions::from_env(threshold, emulated).unwrap_or_else(|e| {
            eprintln!("warning: {e}; ignored");
            CacheOptions { release_threshold: threshold, mem_limit: None, sync_each_launch: false }
        });
        Self::with_options(dev, opts)
    }
    /// The backend computing conv2d / linear (and their input gradients) with `p` operands.
    pub fn with_precision(mut self, p: Precision) -> Self {
        self.precision = p;
        self
    }
    pub fn set_precision(&mut self, p: Precision) {
        self.precision = p;
    }
    /// The narrow weight copies kept by the tensor-core paths (weight_cache.rs).
    pub fn weight_cache(&self) -> &weight_cache::WeightCache<D> {
        &self.weights
    }
    pub fn with_options(dev: D, opts: CacheOptions) -> Self {
        let graphs = graph::enabled_from_env().unwrap_or_else(|e| {
            eprintln!("warning: {e}; graphs stay on");
            true
        });
        CudaBackend {
            dev: CachedDevice::new(dev, opts),
            precision: Precision::F32,
            graphs: graph::GraphCache::new(graphs),
            weights: weight_cache::WeightCache::new(weight_cache::WEIGHT_CACHE_BYTES),
            gn_counts: norm_conv::GnCounters::new(),
            cast_first: tensor_core::cast_first_from_env(),
        }
    }
    /// The tensor-core conv's activation cast as a pass of its own (true) or in its loader.
    pub fn with_cast_first(mut self, on: bool) -> Self {
        self.cast_first = on;
        self
    }
    /// The device underneath the caching layer.
    pub fn device(&self) -> &D {
        self.dev.raw()
    }
    /// The caching layer: its counts, cache statistics and trim.
    pub fn driver(&self) -> &CachedDevice<D> {
        &self.dev
    }

    /// An output the kernel writes in full: a (cached) buffer with undefined contents — NaN in
    /// the emulator, so a kernel that leaves elements unwritten fails the cross-backend tests.
    fn alloc(&self, dims: &[usize]) -> Result<T<D>> {
        let n: usize = dims.iter().product();
        let buf = self.dev.alloc(n * 4)?;
        Ok(Tensor::from_parts(Shape::new(dims), Arc::new(buf)))
    }

    /// An output the kernel accumulates into (atomics) or writes only in part: zeroed first.
    fn alloc_zeroed(&self, dims: &[usize]) -> Result<T<D>> {
        let n: usize = dims.iter().product();
        let buf = self.dev.alloc_zeros(n * 4)?;
        Ok(Tensor::from_parts(Shape::new(dims), Arc::new(buf)))
    }

    /// Sum of `src` (shaped like a) down to b's shape.
    fn reduce_to(&self, src: &T<D>, b_shape: &Shape, g: &BroadcastGeom) -> Result<T<D>> {
        if b_shape.numel() == src.numel() {
            return self.reshape(src, b_shape.dims());
        }
        let y = self.alloc(b_shape.dims())?;
        if y.numel() > 0 {
            launch::reduce_to_broadcast_f32(&self.dev, &ew(y.numel()), b(src), b(&y), i(y.numel()), g)?;
        }
        Ok(y)
    }

    fn copy_channels(&self, src: &T<D>, src_off: usize, dst: &T<D>, dst_off: usize, c: usize) -> Result<()> {
        let (n, src_c, s) = src.shape().ncs();
        let dst_c = dst.shape().dim(1);
        let total = n * c * s;
        if total == 0 {
            return Ok(());
        }
        launch::copy_channels_f32(&self.dev, &ew(total), b(src), i(src_c), i(src_off), b(dst), i(dst_c), i(dst_off), i(n), i(c), i(s))
    }

    /// The first pass of group_norm.cu's split launches: each chunk's mean and M2.
    fn gn_moments(&self, x: &T<D>, g: &GroupNormGeom, p: &norm_split::Plan) -> Result<T<D>> {
        let part = self.alloc(&[2 * p.blocks])?; // every entry written
        launch::group_norm_stats_f32(&self.dev, &p.cfg, b(x), b(&part), g, &p.split)?;
        Ok(part)
    }

    /// Small index lists go up as an i32 buffer.
    fn upload_ids(&self, ids: &[usize]) -> Result<CachedBuf<D>> {
        let ids32: Vec<i32> = ids.iter().map(|&v| v as i32).collect();
        self.dev.upload(bytemuck::cast_slice(&ids32))
    }
}

impl<D: Device> HasStorage for CudaBackend<D> {
    type Storage = Arc<CachedBuf<D>>;
}

impl<D: Device> Compute for CudaBackend<D> {
    fn name(&self) -> String {
        format!("{}: {}", self.dev.kind(), self.dev.describe())
    }

    fn driver_counts(&self) -> Option<DriverCounts> {
        Some(self.dev.counts())
    }

    fn graph_forward(&self, model: u64, inputs: &[&T<D>], f: &dyn Fn(&[T<D>]) -> Result<Vec<T<D>>>) -> Result<Vec<T<D>>> {
        self.graph_forward_impl(model, inputs, f)
    }

    fn upload(&self, dims: &[usize], v: &[f32]) -> Result<T<D>> {
        let buf = self.dev.upload(bytemuck::cast_slice(v))?;
        Ok(Tensor::from_parts(Shape::new(dims), Arc::new(buf)))
    }

    fn download(&self, x: &T<D>) -> Result<Vec<f32>> {
        let mut v = vec![0.0f32; x.numel()];
        self.dev.download(x.storage(), bytemuck::cast_slice_mut(&mut v))?;
        Ok(v)
    }

    fn conv2d(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, g: &Conv2dGeom) -> Result<T<D>> {
        let y = self.alloc(&g.y_dims())?;
        if y.numel() == 0 {
            return Ok(y);
        }
        let bias = bias.unwrap_or(w); // unread when has_bias = 0
        if g.depthwise() {
            launch::depthwise_conv2d_f32(&self.dev, &ew(y.numel()), b(x), b(w), b(bias), b(&y), g)?;
        } else {
            let cfg = igemm_cfg(g.og(), g.n() * g.ho() * g.wo(), g.groups());
            launch::conv2d_f32(&self.dev, &cfg, b(x), b(w), b(bias), b(&y), g)?;
        }
        Ok(y)
    }

    fn conv2d_add(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, res: &T<D>, g: &Conv2dGeom) -> Result<T<D>> {
        if g.depthwise() {
            // no fused depthwise kernel: the two launches (no model runs one with a residual)
            let h = Compute::conv2d(self, x, w, bias, g)?;
            return Compute::add(self, res, &h, &crate::ops::elementwise::broadcast("conv2d_add", res.shape(), h.shape())?);
        }
        let y = self.alloc(&g.y_dims())?;
        if y.numel() == 0 {
            return Ok(y);
        }
        let bias = bias.unwrap_or(w); // unread when has_bias = 0
        let cfg = igemm_cfg(g.og(), g.n() * g.ho() * g.wo(), g.groups());
        launch::conv2d_add_f32(&self.dev, &cfg, b(x), b(w), b(bias), b(res), b(&y), g)?;
        Ok(y)
    }

    fn precision(&self) -> Precision {
        self.precision
    }
    fn conv2d_add_lowp(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, res: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        precision_dispatch::conv2d_add(self, x, w, bias, res, g, p)
    }
    fn conv2d_lowp(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        precision_dispatch::conv2d(self, x, w, bias, g, p)
    }
    fn conv2d_x_backward_lowp(&self, gy: &T<D>, w: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        precision_dispatch::conv2d_x_backward(self, gy, w, g, p)
    }
    fn conv2d_w_backward_lowp(&self, gy: &T<D>, x: &T<D>, g: &Conv2dGeom, p: Precision) -> Result<T<D>> {
        precision_dispatch::conv2d_w_backward(self, gy, x, g, p)
    }
    fn linear_lowp(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, g: &LinearGeom, p: Precision) -> Result<T<D>> {
        precision_dispatch::linear(self, x, w, bias, g, p)
    }
    fn linear_x_backward_lowp(&self, gy: &T<D>, w: &T<D>, g: &LinearGeom, p: Precision) -> Result<T<D>> {
        precision_dispatch::linear_x_backward(self, gy, w, g, p)
    }
    fn attention_legacy_lowp(&self, qkv: &T<D>, g: &AttentionGeom, p: Precision) -> Result<T<D>> {
        precision_dispatch::attention_legacy(self, qkv, g, p)
    }

    fn conv2d_x_backward(&self, gy: &T<D>, w: &T<D>, g: &Conv2dGeom) -> Result<T<D>> {
        let gx = self.alloc(&g.x_dims())?;
        if gx.numel() == 0 {
            return Ok(gx);
        }
        if g.depthwise() {
            launch::depthwise_conv2d_x_backward_f32(&self.dev, &ew(gx.numel()), b(gy), b(w), b(&gx), g)?;
        } else {
            let cfg = igemm_cfg(g.cg(), g.n() * g.h() * g.w(), g.groups());
            launch::conv2d_x_backward_f32(&self.dev, &cfg, b(gy), b(w), b(&gx), g)?;
        }
        Ok(gx)
    }

    fn linear(&self, x: &T<D>, w: &T<D>, bias: Option<&T<D>>, g: &LinearGeom) -> Result<T<D>> {
        let y = self.alloc(&[g.rows, g.fout])?;
        if y.numel() == 0 {
            return Ok(y);
        }
        let has_bias = bias.is_some() as i32;
        let bias = bias.unwrap_or(w);
        launch::linear_f32(&self.dev, &igemm_cfg(g.fout, g.rows, 1), b(x), b(w), b(bias), b(&y), i(g.rows), i(g.fin), i(g.fout), has_bias)?;
        Ok(y)
    }

    fn linear_x_backward(&self, gy: &T<D>, w: &T<D>, g: &LinearGeom) -> Result<T<D>> {
        let gx = self.alloc(&[g.rows, g.fin])?;
        if gx.numel() == 0 {
            return Ok(gx);
        }
        launch::linear_x_backward_f32(&self.dev, &igemm_cfg(g.fin, g.rows, 1), b(gy), b(w), b(&gx), i(g.rows), i(g.fin), i(g.fout))?;
        Ok(gx)
    }

    fn conv2d_w_backward(&self, gy: &T<D>, x: &T<D>, g: &Conv2dGeom) -> Result<T<D>> {
        let gw = self.alloc(&[g.o(), g.cg(), g.kh(), g.kw()])?;
        if gw.numel() == 0 {
            return Ok(gw);
        }
        if g.depthwise() {
            launch::depthwise_conv2d_w_backward_f32(&self.dev, &per_block(gw.numel(), REDUCE_BLOCK, 0), b(gy), b(x), b(&gw), g)?;
        } else {
            launch::conv2d_w_backward_f32(&self.dev, &igemm_cfg(g.og(), g.kk(), g.groups()), b(gy), b(x), b(&gw), g)?;
        }
        Ok(gw)
    }

    fn linear_w_backward(&self, gy: &T<D>, x: &T<D>, g: &LinearGeom) -> Result<T<D>> {
        let gw = self.alloc(&[g.fout, g.fin])?;
        if gw.numel() > 0 {
            launch::linear_w_backward_f32(&self.dev, &igemm_cfg(g.fout, g.fin, 1), b(gy), b(x), b(&gw), i(g.rows), i(g.fin), i(g.fout))?;
        }
        Ok(gw)
    }

    fn channel_sum(&self, x: &T<D>, n: usize, c: usize, s: usize) -> Result<T<D>> {
        let y = self.alloc(&[c])?;
        if c > 0 {
            launch::channel_sum_f32(&self.dev, &per_block(c, REDUCE_BLOCK, 0), b(x), b(&y), i(n), i(c), i(s))?;
        }
        Ok(y)
    }

    fn group_norm_w_backward(&self, gy: &T<D>, x: &T<D>, gamma: &T<D>, beta: &T<D>, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<GroupNormGrads<Self>> {
        let (n, c) = (g.n(), g.c());
        // the kernel's four per-(image, channel) sums, then ∂γ, ∂β summed over images
        let (sc, sh) = ss.unwrap_or((gamma, beta));
        let part = match norm_split::plan(g) {
            Some(p) => {
                let part = self.alloc(&[1, 4, n * c])?; // every entry written
                let moments = self.gn_moments(x, g, &p)?;
                let threads = g.s().div_ceil(4).next_multiple_of(32).min(REDUCE_BLOCK as usize) as u32;
                launch::group_norm_w_backward_f32(&self.dev, &per_block(n * c, threads, 0), b(gy), b(x), b(gamma), b(beta), b(sc), b(sh), b(&moments), b(&part), g, &p.split)?;
                part
            }
            None if n * c == 0 => self.alloc(&[1, 4, 0])?,
            // empty channels (s = 0): every sum is zero
            None => self.alloc_zeroed(&[1, 4, n * c])?,
        };
        let sum = |j: usize| -> Result<T<D>> { Compute::slice_channels(self, &part, j, &[1, 1, n * c]) };
        let (gg, gb) = (Compute::channel_sum(self, &sum(0)?, n, c, 1)?, Compute::channel_sum(self, &sum(1)?, n, c, 1)?);
        let scale_shift = match ss {
            Some(_) => Some((self.reshape(&sum(2)?, &[n, c])?, self.reshape(&sum(3)?, &[n, c])?)),
            None => None,
        };
        Ok(GroupNormGrads { gamma: gg, beta: gb, scale_shift })
    }

    fn group_norm(&self, x: &T<D>, gamma: &T<D>, beta: &T<D>, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<T<D>> {
        let y = self.alloc(x.dims())?;
        let (sc, sh) = ss.unwrap_or((gamma, beta)); // unread when has_ss = 0
        if let Some(cfg) = norm_split::fused(g) {
            launch::group_norm_fused_f32(&self.dev, &cfg, b(x), b(gamma), b(beta), b(sc), b(sh), b(&y), g)?;
        } else if let Some(p) = norm_split::plan(g) {
            let part = self.gn_moments(x, g, &p)?;
            launch::group_norm_apply_f32(&self.dev, &p.cfg, b(x), b(gamma), b(beta), b(sc), b(sh), b(&part), b(&y), g, &p.split)?;
        }
        Ok(y)
    }

    #[allow(clippy::too_many_arguments)]
    fn group_norm_conv2d(
        &self,
        x: &T<D>,
        gamma: &T<D>,
        beta: &T<D>,
        emb: Option<&T<D>>,
        gn: &GroupNormGeom,
        w: &T<D>,
        bias: Option<&T<D>>,
        res: Option<&T<D>>,
        g: &Conv2dGeom,
        p: Precision,
    ) -> Result<T<D>> {
        self.group_norm_conv2d_folded(x, gamma, beta, emb, gn, w, bias, res, g, p)
    }

    fn conv2d_gn(
        &self,
        x: &T<D>,
        rec: Option<&T<D>>,
        norm: Option<&crate::backend::compute::GnOperand<'_, Self>>,
        w: &T<D>,
        bias: Option<&T<D>>,
        res: Option<&T<D>>,
        g: &Conv2dGeom,
        p: Precision,
        next: Option<&crate::backend::compute::GnOperand<'_, Self>>,
    ) -> Result<(T<D>, Option<T<D>>)> {
        self.conv2d_gn_cuda(x, rec, norm, w, bias, res, g, p, next)
    }

    fn group_norm_emb(&self, x: &T<D>, gamma: &T<D>, beta: &T<D>, emb: &T<D>, g: &GroupNormGeom) -> Result<T<D>> {
        // the kernel reads scale and shift at g's stride and offsets in emb: no slices
        Compute::group_norm(self, x, gamma, beta, Some((emb, emb)), g)
    }

    fn group_norm_x_backward(&self, gy: &T<D>, x: &T<D>, gamma: &T<D>, beta: &T<D>, ss: ScaleShift<'_, Self>, g: &GroupNormGeom) -> Result<T<D>> {
        let gx = self.alloc(x.dims())?;
        let (sc, sh) = ss.unwrap_or((gamma, beta));
        if let Some(cfg) = norm_split::fused_x_backward(g) {
            launch::group_norm_x_backward_fused_f32(&self.dev, &cfg, b(gy), b(x), b(gamma), b(beta), b(sc), b(sh), b(&gx), g)?;
        } else if let Some(p) = norm_split::plan(g) {
            let part = self.gn_moments(x, g, &p)?;
            let sums = self.alloc(&[2 * p.blocks])?; // every entry written
            launch::group_norm_grad_sums_f32(&self.dev, &p.cfg, b(gy), b(x), b(gamma), b(beta), b(sc), b(sh), b(&part), b(&sums), g, &p.split)?;
            launch::group_norm_x_backward_f32(&self.dev, &p.cfg, b(gy), b(x), b(gamma), b(beta), b(sc), b(sh), b(&part), b(&sums), b(&gx), g, &p.split)?;
        }
        Ok(gx)
    }

    fn channel_affine(&self, x: &T<D>, scale: &T<D>, shift: &T<D>, c: usize, s: usize) -> Result<T<D>> {
        let y = self.alloc(x.dims())?;
        if y.numel() > 0 {
            launch::channel_affine_f32(&self.dev, &ew(y.numel()), b(x), b(scale), b(shift), b(&y), i(y.numel()), i(c), i(s))?;
        }
        Ok(y)
    }

    fn channel_affine_x_backward(&self, gy: &T<D>, scale: &T<D>, c: usize, s: usize) -> Result<T<D>> {
        let gx = self.alloc(gy.dims())?;
        if gx.numel() > 0 {
            launch::channel_affine_x_backward_f32(&self.dev, &ew(gx.numel()), b(gy), b(scale), b(&gx), i(gx.numel()), i(c), i(s))?;
        }
        Ok(gx)
    }

    fn activation(&self, x: &T<D>, act: Activation) -> Result<T<D>> {
        let y = self.alloc(x.dims())?;
        if y.numel() > 0 {
            launch::activation_f32(&self.dev, &ew(y.numel()), b(x), b(&y), i(y.numel()), act.code())?;
        }
        Ok(y)
    }

    fn activation_x_backward(&self, gy: &T<D>, x: &T<D>, act: Activation) -> Result<T<D>> {
        let gx = self.alloc(x.dims())?;
        if gx.numel() > 0 {
            launch::activation_x_backward_f32(&self.dev, &ew(gx.numel()), b(gy), b(x), b(&gx), i(gx.numel()), act.code())?;
        }
        Ok(gx)
    }

    fn add(&self, a: &T<D>, bt: &T<D>, g: &BroadcastGeom) -> Result<T<D>> {
        let y = self.alloc(a.dims())?;
        if y.numel() > 0 {
            match broadcast::rows(g) {
                Some((inner, mid)) => launch::add_rows_f32(&self.dev, &ew(y.numel()), b(a), b(bt), b(&y), i(y.numel()), inner, mid)?,
                None => launch::add_f32(&self.dev, &ew(y.numel()), b(a), b(bt), b(&y), i(y.numel()), g)?,
            }
        }
        Ok(y)
    }

    fn mul(&self, a: &T<D>, bt: &T<D>, g: &BroadcastGeom) -> Result<T<D>> {
        let y = self.alloc(a.dims())?;
        if y.numel() > 0 {
            match broadcast::rows(g) {
                Some((inner, mid)) => launch::mul_rows_f32(&self.dev, &ew(y.numel()), b(a), b(bt), b(&y), i(y.numel()), inner, mid)?,
                None => launch::mul_f32(&self.dev, &ew(y.numel()), b(a), b(bt), b(&y), i(y.numel()), g)?,
            }
        }
        Ok(y)
    }

    fn add_x_backward(&self, gy: &T<D>, b_shape: &Shape, g: &BroadcastGeom) -> Result<(T<D>, T<D>)> {
        let ga = Compute::scale_add_scalar(self, gy, 1.0, 0.0)?;
        let gb = self.reduce_to(gy, b_shape, g)?;
        Ok((ga, gb))
    }

    fn mul_x_backward(&self, gy: &T<D>, a: &T<D>, bt: &T<D>, g: &BroadcastGeom) -> Result<(T<D>, T<D>)> {
        let ga = Compute::mul(self, gy, bt, g)?;
        let gya = Compute::mul(self, gy, a, &crate::ops::elementwise::broadcast("mul_x_backward", gy.shape(), a.shape())?)?;
        let gb = self.reduce_to(&gya, bt.shape(), g)?;
        Ok((ga, gb))
    }

    fn scale_add_scalar(&self, x: &T<D>, alpha: f32, beta: f32) -> Result<T<D>> {
        let y = self.alloc(x.dims())?;
        if y.numel() > 0 {
            launch::scale_add_scalar_f32(&self.dev, &ew(y.numel()), b(x), b(&y), i(y.numel()), alpha, beta)?;
        }
        Ok(y)
    }

    fn avg_pool2d(&self, x: &T<D>, g: &Pool2dGeom, ys: &Shape) -> Result<T<D>> {
        let y = self.alloc(ys.dims())?;
        if y.numel() > 0 {
            launch::avg_pool2d_f32(&self.dev, &ew(y.numel()), b(x), b(&y), g)?;
        }
        Ok(y)
    }

    fn avg_pool2d_x_backward(&self, gy: &T<D>, x_shape: &Shape, g: &Pool2dGeom) -> Result<T<D>> {
        let gx = self.alloc(x_shape.dims())?;
        if gx.numel() > 0 {
            launch::avg_pool2d_x_backward_f32(&self.dev, &ew(gx.numel()), b(gy), b(&gx), g)?;
        }
        Ok(gx)
    }

    fn max_pool2d(&self, x: &T<D>, g: &Pool2dGeom, ys: &Shape) -> Result<T<D>> {
        let y = self.alloc(ys.dims())?;
        if y.numel() > 0 {
            launch::max_pool2d_f32(&self.dev, &ew(y.numel()), b(x), b(&y), g)?;
        }
        Ok(y)
    }

    fn max_pool2d_x_backward(&self, gy: &T<D>, x: &T<D>, g: &Pool2dGeom) -> Result<T<D>> {
        let gx = self.alloc(x.dims())?;
        if gx.numel() > 0 {
            launch::max_pool2d_x_backward_f32(&self.dev, &ew(gx.numel()), b(gy), b(x), b(&gx), g)?;
        }
        Ok(gx)
    }

    fn global_avg_pool(&self, x: &T<D>, n: usize, c: usize, plane: usize) -> Result<T<D>> {
        let y = self.alloc(&[n, c, 1, 1])?;
        if n * c > 0 {
            launch::global_avg_pool_f32(&self.dev, &per_block(n * c, REDUCE_BLOCK, 0), b(x), b(&y), i(plane))?;
        }
        Ok(y)
    }

    fn upsample_nearest2x(&self, x: &T<D>, [n, c, h, w]: [usize; 4]) -> Result<T<D>> {
        let y = self.alloc(&[n, c, 2 * h, 2 * w])?;
        if y.numel() > 0 {
            launch::upsample_nearest2x_f32(&self.dev, &ew(y.numel()), b(x), b(&y), i(n * c), i(h), i(w))?;
        }
        Ok(y)
    }

    fn upsample_nearest2x_x_backward(&self, gy: &T<D>, [n, c, h, w]: [usize; 4]) -> Result<T<D>> {
        let gx = self.alloc(&[n, c, h, w])?;
        if gx.numel() > 0 {
            launch::upsample_nearest2x_x_backward_f32(&self.dev, &ew(gx.numel()), b(gy), b(&gx), i(n * c), i(h), i(w))?;
        }
        Ok(gx)
    }

    fn resize_bilinear(&self, x: &T<D>, g: &ResizeGeom) -> Result<T<D>> {
        let y = self.alloc(&[g.n, g.c, g.ho, g.wo])?;
        if y.numel() > 0 {
            launch::resize_bilinear_f32(&self.dev, &ew(y.numel()), b(x), b(&y), i(g.n * g.c), i(g.h), i(g.w), i(g.ho), i(g.wo))?;
        }
        Ok(y)
    }

    fn resize_bilinear_x_backward(&self, gy: &T<D>, g: &ResizeGeom) -> Result<T<D>> {
        // the kernel scatters with atomics into the zeroed output, one thread per output pixel
        let gx = self.alloc_zeroed(&[g.n, g.c, g.h, g.w])?;
        if gy.numel() > 0 {
            launch::resize_bilinear_x_backward_f32(&self.dev, &ew(gy.numel()), b(gy), b(&gx), i(g.n * g.c), i(g.h), i(g.w), i(g.ho), i(g.wo))?;
        }
        Ok(gx)
    }

    fn concat_channels(&self, xs: &[&T<D>], dims: &[usize]) -> Result<T<D>> {
        let y = self.alloc(dims)?;
        if let [a, bt] = xs {
            // the decoder's cat([h, skip]): one launch for both parts
            if y.numel() > 0 {
                let (n, ca, s) = a.shape().ncs();
                launch::concat2_channels_f32(&self.dev, &ew(y.numel()), b(a), i(ca), b(bt), i(bt.dims()[1]), b(&y), i(n), i(s))?;
            }
            return Ok(y);
        }
        let mut off = 0;
        for x in xs {
            let c = x.dims()[1];
            self.copy_channels(x, 0, &y, off, c)?;
            off += c;
        }
        Ok(y)
    }

    fn group_norm_resample(&self, x: &T<D>, rec: Option<&T<D>>, norm: &crate::backend::compute::GnOperand<'_, Self>, up: bool) -> Result<Option<T<D>>> {
        self.group_norm_resample_cuda(x, rec, norm, up)
    }

    fn concat_channels_gn(&self, xs: &[&T<D>], dims: &[usize], next: Option<&crate::backend::compute::GnOperand<'_, Self>>) -> Result<(T<D>, Option<T<D>>)> {
        self.concat_channels_gn_cuda(xs, dims, next)
    }

    fn slice_channels(&self, x: &T<D>, start: usize, dims: &[usize]) -> Result<T<D>> {
        let y = self.alloc(dims)?;
        self.copy_channels(x, start, &y, 0, dims[1])?;
        Ok(y)
    }

    fn gather_channels(&self, x: &T<D>, ids: &[usize], dims: &[usize]) -> Result<T<D>> {
        let y = self.alloc(dims)?;
        if y.numel() > 0 {
            let (n, c, s) = x.shape().ncs();
            let idb = self.upload_ids(ids)?;
            launch::gather_channels_f32(&self.dev, &ew(y.numel()), b(x), &idb, b(&y), i(n), i(c), i(ids.len()), i(s))?;
        }
        Ok(y)
    }

    fn gather_channels_x_backward(&self, gy: &T<D>, ids: &[usize], dims: &[usize]) -> Result<T<D>> {
        let gx = self.alloc_zeroed(dims)?; // zero: channels not in ids get no gradient
        if gy.numel() > 0 {
            let (n, c, s) = Shape::new(dims).ncs();
            let idb = self.upload_ids(ids)?;
            launch::gather_channels_x_backward_f32(&self.dev, &ew(gy.numel()), b(gy), &idb, b(&gx), i(n), i(c), i(ids.len()), i(s))?;
        }
        Ok(gx)
    }

    fn mahalanobis(&self, f: &T<D>, mean: &T<D>, linv: &T<D>, g: &MahalanobisGeom) -> Result<T<D>> {
        // with no features (d = 0) nothing is launched and every distance is 0
        let y = if g.d == 0 { self.alloc_zeroed(&g.dist_dims())? } else { self.alloc(&g.dist_dims())? };
        if y.numel() > 0 && g.d > 0 {
            let cfg = LaunchCfg { grid: (g.p as u32, g.n as u32, 1), block: (MAHA_BLOCK, 1, 1), smem_bytes: g.smem_bytes(2) as u32 };
            launch::mahalanobis_f32(&self.dev, &cfg, b(f), b(mean), b(linv), b(&y), i(g.d), i(g.p))?;
        }
        Ok(y)
    }

    fn mahalanobis_x_backward(&self, gd: &T<D>, f: &T<D>, mean: &T<D>, linv: &T<D>, g: &MahalanobisGeom) -> Result<T<D>> {
        let gf = self.alloc(f.dims())?;
        if gf.numel() > 0 {
            let cfg = LaunchCfg { grid: (g.p as u32, g.n as u32, 1), block: (MAHA_BLOCK, 1, 1), smem_bytes: g.smem_bytes(3) as u32 };
            launch::mahalanobis_x_backward_f32(&self.dev, &cfg, b(gd), b(f), b(mean), b(linv), b(&gf), i(g.d), i(g.p))?;
        }
        Ok(gf)
    }

    fn attention_legacy(&self, qkv: &T<D>, g: &AttentionGeom) -> Result<T<D>> {
        let y = self.alloc(&g.y_dims(qkv.shape()))?;
        if g.n * g.heads * g.t > 0 && attention_flash::attention_flash_supported(g) {
            self.attention_flash_f32(qkv, &y, g)?;
        } else if g.n * g.heads * g.t > 0 {
            let cfg = LaunchCfg { grid: (g.t as u32, (g.n * g.heads) as u32, 1), block: (ATTN_BLOCK, 1, 1), smem_bytes: ((g.t + 32) * 4) as u32 };
            launch::attention_legacy_f32(&self.dev, &cfg, b(qkv), b(&y), i(g.d), i(g.t))?;
        }
        Ok(y)
    }

    fn attention_legacy_x_backward(&self, gy: &T<D>, qkv: &T<D>, g: &AttentionGeom) -> Result<T<D>> {
        let flash = g.n * g.heads * g.t > 0 && attention_flash::attention_flash_supported(g);
        // the flash kernels write every element; the one-query kernel's gK and gV accumulate atomically
        let gq = if flash { self.alloc(qkv.dims())? } else { self.alloc_zeroed(qkv.dims())? };
        if flash {
            self.attention_flash_x_backward_f32(gy, qkv, &gq, g)?;
        } else if g.n * g.heads * g.t > 0 {
            let cfg = LaunchCfg { grid: (g.t as u32, (g.n * g.heads) as u32, 1), block: (ATTN_BLOCK, 1, 1), smem_bytes: ((2 * g.t + 32) * 4) as u32 };
            launch::attention_legacy_x_backward_f32(&self.dev, &cfg, b(qkv), b(gy), b(&gq), i(g.d), i(g.t))?;
        }
        Ok(gq)
    }

    fn timestep_embedding(&self, t: &T<D>, dim: usize, max_period: f32) -> Result<T<D>> {
        let n = t.numel();
        let y = self.alloc(&[n, dim])?;
        if y.numel() > 0 {
            let neg_log = -(max_period as f64).ln() as f32;
            launch::timestep_embedding_f32(&self.dev, &ew(y.numel()), b(t), b(&y), i(n), i(dim), neg_log)?;
        }
        Ok(y)
    }

    fn embedding(&self, table: &T<D>, ids: &[usize], dim: usize) -> Result<T<D>> {
        let y = self.alloc(&[ids.len(), dim])?;
        if y.numel() > 0 {
            let idb = self.upload_ids(ids)?;
            launch::embedding_f32(&self.dev, &ew(y.numel()), b(table), &idb, b(&y), i(ids.len()), i(dim))?;
        }
        Ok(y)
    }

    fn embedding_w_backward(&self, gy: &T<D>, ids: &[usize], rows: usize, dim: usize) -> Result<T<D>> {
        let gt = self.alloc_zeroed(&[rows, dim])?; // zero: repeated ids add atomically, rows not in ids stay zero
        if gy.numel() > 0 {
            let idb = self.upload_ids(ids)?;
            launch::embedding_w_backward_f32(&self.dev, &ew(gy.numel()), b(gy), &idb, b(&gt), i(ids.len()), i(dim))?;
        }
        Ok(gt)
    }

    fn mean_std(&self, x: &T<D>) -> Result<(f64, f64)> {
        let out = self.alloc(&[2])?;
        launch::mean_std_f32(&self.dev, &per_block(1, MEAN_STD_BLOCK, 0), b(x), x.numel() as i64, b(&out))?;
        let v = self.download(&out)?;
        Ok((v[0] as f64, v[1] as f64))
    }

    fn adamw_step(&self, param: &T<D>, grad: &T<D>, m: &T<D>, v: &T<D>, k: &AdamwCoefs) -> Result<(T<D>, T<D>, T<D>)> {
        let (p2, m2, v2) = (self.alloc(param.dims())?, self.alloc(param.dims())?, self.alloc(param.dims())?);
        if param.numel() > 0 {
            launch::adamw_step_f32(&self.dev, &ew(param.numel()), b(param), b(grad), b(m), b(v), b(&p2), b(&m2), b(&v2), i(param.numel()), k)?;
        }
        Ok((p2, m2, v2))
    }

    fn axpby(&self, a: &T<D>, bt: &T<D>, alpha: f32, beta: f32) -> Result<T<D>> {
        let y = self.alloc(a.dims())?;
        if y.numel() > 0 {
            launch::axpby_f32(&self.dev, &ew(y.numel()), b(a), b(bt), b(&y), i(y.numel()), alpha, beta)?;
        }
        Ok(y)
    }

    fn q_sample(&self, x0: &T<D>, noise: &T<D>, sqrt_ab: f32, sqrt_1m_ab: f32) -> Result<T<D>> {
        let y = self.alloc(x0.dims())?;
        if y.numel() > 0 {
            launch::q_sample_f32(&self.dev, &ew(y.numel()), b(x0), b(noise), b(&y), i(y.numel()), sqrt_ab, sqrt_1m_ab)?;
        }
        Ok(y)
    }

    fn p_mean_variance(&self, xt: &T<D>, model_out: &T<D>, c: &StepCoefs, ch: usize, s: usize) -> Result<(T<D>, T<D>, T<D>)> {
        let (m, lv, x0) = (self.alloc(xt.dims())?, self.alloc(xt.dims())?, self.alloc(xt.dims())?);
        if xt.numel() > 0 {
            launch::p_mean_variance_f32(&self.dev, &ew(xt.numel()), b(xt), b(model_out), b(&m), b(&lv), b(&x0), i(xt.numel()), i(ch), i(s), c)?;
        }
        Ok((m, lv, x0))
    }

    fn kl_bits(&self, x0: &T<D>, xt: &T<D>, p_mean: &T<D>, p_logvar: &T<D>, c: &StepCoefs) -> Result<T<D>> {
        let y = self.alloc(x0.dims())?;
        if y.numel() > 0 {
            launch::kl_bits_f32(&self.dev, &ew(y.numel()), b(x0), b(xt), b(p_mean), b(p_logvar), b(&y), i(y.numel()), c)?;
        }
        Ok(y)
    }

    fn p_sample(&self, mean: &T<D>, logvar: &T<D>, z: &T<D>, nonzero: bool) -> Result<T<D>> {
        let y = self.alloc(mean.dims())?;
        if y.numel() > 0 {
            let nz = if nonzero { 1.0 } else { 0.0 };
            launch::p_sample_f32(&self.dev, &ew(y.numel()), b(mean), b(logvar), b(z), b(&y), i(y.numel()), nz)?;
        }
        Ok(y)
    }

    fn ddim_step(&self, xt: &T<D>, pred_x0: &T<D>, z: &T<D>, c: &DdimCoefs) -> Result<T<D>> {
        let y = self.alloc(xt.dims())?;
        if y.numel() > 0 {
            launch::ddim_step_f32(&self.dev, &ew(y.numel()), b(xt), b(pred_x0), b(z), b(&y), i(y.numel()), c)?;
        }
        Ok(y)
    }
}
