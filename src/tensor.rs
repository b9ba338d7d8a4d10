//! A tensor is a logical shape (PyTorch's order: NCHW for images, so state dicts and fixtures map
//! 1:1) plus a storage handle owned by a backend. How the backend lays the numbers out in memory
//! is its own business; only `Backend::to_host` promises the logical row-major order.

use std::fmt;

/// What a tensor needs of its backend: the type of its storage handle. The only thing tensor.rs
/// knows about backends, so shapes and tensors sit below the op layer and the backends.
pub trait HasStorage {
    type Storage: Clone + Send + Sync;
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// Dimension `i`; negative `i` counts from the end like Python.
    pub fn dim(&self, i: isize) -> usize {
        let r = self.0.len() as isize;
        self.0[(if i < 0 { r + i } else { i }) as usize]
    }
    /// (N, C, prod(spatial)) view used by every channel-wise op.
    pub fn ncs(&self) -> (usize, usize, usize) {
        let n = self.0.first().copied().unwrap_or(1);
        let c = self.0.get(1).copied().unwrap_or(1);
        let s = self.0.iter().skip(2).product();
        (n, c, s)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape::new(d)
    }
}
impl<const R: usize> From<[usize; R]> for Shape {
    fn from(d: [usize; R]) -> Self {
        Shape::new(&d)
    }
}

pub struct Tensor<B: HasStorage> {
    shape: Shape,
    storage: B::Storage,
}

impl<B: HasStorage> Clone for Tensor<B> {
    fn clone(&self) -> Self {
        Tensor { shape: self.shape.clone(), storage: self.storage.clone() }
    }
}

impl<B: HasStorage> fmt::Debug for Tensor<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{}", self.shape)
    }
}

impl<B: HasStorage> Tensor<B> {
    /// Only backends build tensors; they guarantee that `storage` holds `shape.numel()` values.
    pub fn from_parts(shape: Shape, storage: B::Storage) -> Self {
        Tensor { shape, storage }
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    pub fn storage(&self) -> &B::Storage {
        &self.storage
    }
}
