//! Small layers shared by the models.

use super::weights::Loader;
use crate::backend::{Backend, Conv2dParams};
use crate::tensor::Tensor;
use crate::Result;

/// A 1×1 convolution with bias (squeeze-excite's reduce/expand).
pub struct Conv1x1<B: Backend> {
    w: Tensor<B>,
    b: Tensor<B>,
}

impl<B: Backend> Conv1x1<B> {
    pub fn load(l: &Loader<B>, name: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Conv1x1 { w: l.tensor(&format!("{name}.weight"), &[cout, cin, 1, 1])?, b: l.tensor(&format!("{name}.bias"), &[cout])? })
    }
    pub fn forward(&self, b: &B, x: &Tensor<B>) -> Result<Tensor<B>> {
        b.conv2d(x, &self.w, Some(&self.b), &Conv2dParams::default())
    }
}
