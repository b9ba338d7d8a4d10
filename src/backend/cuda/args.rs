//! `#[repr(C)]` mirrors of the parameter structs the kernels take by value. Field order and types
//! must match the C++ structs in kernels/*.cu exactly (bytemuck's Pod derive rules out padding).

use bytemuck::{Pod, Zeroable};

/// kernels/conv2d.cu `ConvArgs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct ConvArgs {
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub o: i32,
    pub kh: i32,
    pub kw: i32,
    pub ho: i32,
    pub wo: i32,
    pub sh: i32,
    pub sw: i32,
    pub pt: i32,
    pub pl: i32,
    pub groups: i32,
    pub has_bias: i32,
}

/// kernels/group_norm.cu `GnArgs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct GnArgs {
    pub c: i32,
    pub s: i32,
    pub groups: i32,
    pub eps: f32,
    pub silu: i32,
    pub has_ss: i32,
}

/// kernels/pool.cu `PoolArgs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct PoolArgs {
    pub planes: i32,
    pub h: i32,
    pub w: i32,
    pub ho: i32,
    pub wo: i32,
    pub k: i32,
    pub s: i32,
    pub p: i32,
}

/// kernels/elementwise.cu `Bcast4`: a's dims padded to rank 4, b's strides (0 = broadcast) and
/// b's dims.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Bcast4 {
    pub dims: [i32; 4],
    pub bstride: [i32; 4],
    pub bdims: [i32; 4],
}

/// kernels/scheduler.cu `StepArgs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct StepArgs {
    pub sqrt_recip_ab: f32,
    pub sqrt_recipm1_ab: f32,
    pub c1: f32,
    pub c2: f32,
    pub post_logvar_clipped: f32,
    pub log_beta: f32,
    pub fixed_logvar: f32,
    pub var_type: i32,
    pub clip: i32,
    pub c: i32,
    pub s: i32,
}
