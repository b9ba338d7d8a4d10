//! Small layers shared by the feature extractors.

use super::weights::Loader;
use crate::backend::{fold_batch_norm, Activation, Backend, Conv2dParams};
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

/// A bias-free convolution followed by inference BatchNorm, folded into the convolution:
/// w' = w·γ/√(var+eps) per output channel and bias β − mean·γ/√(var+eps), so forward and input
/// gradient are one convolution each.
pub struct ConvBn<B: Backend> {
    w: Tensor<B>,
    pub p: Conv2dParams,
    shift: Tensor<B>,
}

impl<B: Backend> ConvBn<B> {
    /// `conv`.weight [cout, cin/groups, k, k] and `bn`.{weight, bias, running_mean, running_var}.
    pub fn load(l: &Loader<B>, conv: &str, bn: &str, cin: usize, cout: usize, k: usize, p: Conv2dParams, eps: f32) -> Result<Self> {
        if cout == 0 || p.groups == 0 || cin % p.groups != 0 {
            return Err(crate::Error::InvalidArgument(format!("{conv}: a convolution of {cin} → {cout} channels in {} groups", p.groups)));
        }
        let shape = [cout, cin / p.groups, k, k];
        let mut w = l.host_shaped(&format!("{conv}.weight"), &shape)?;
        let v = |n: &str| l.host_shaped(&format!("{bn}.{n}"), &[cout]);
        let (gamma, beta, mean, var) = (v("weight")?, v("bias")?, v("running_mean")?, v("running_var")?);
        // a negative variance makes √(var+eps) NaN, which a ReLU6 would silently turn into 0
        if let Some(i) = var.iter().position(|&x| x < 0.0) {
            return Err(crate::Error::BadTensor { path: l.weights.path().to_path_buf(), name: format!("{bn}.running_var"), msg: format!("value #{i} is {}: a variance cannot be negative", var[i]) });
        }
        let (scale, shift) = fold_batch_norm(&gamma, &beta, &mean, &var, eps)?;
        let per = w.len() / cout;
        for (o, chunk) in w.chunks_mut(per).enumerate() {
            chunk.iter_mut().for_each(|x| *x = (*x as f64 * scale[o] as f64) as f32);
        }
        Ok(ConvBn { w: l.backend.from_host(&shape, &w)?, p, shift: l.backend.from_host(&[cout], &shift)? })
    }

    /// act(conv(x) + shift), the activation in the conv's output pass (Backend::conv2d_act).
    pub fn forward(&self, b: &B, x: &Tensor<B>, act: Option<Activation>) -> Result<Tensor<B>> {
        match act {
            Some(a) => Ok(b.conv2d_act(x, &self.w, Some(&self.shift), a, &self.p, false)?.0),
            None => b.conv2d(x, &self.w, Some(&self.shift), &self.p),
        }
    }

    /// `forward` with `act`, and each output plane's mean [N, O, 1, 1] of it (squeeze-excite's
    /// squeeze), summed in the same pass on the CPU.
    pub fn forward_with_mean(&self, b: &B, x: &Tensor<B>, act: Activation) -> Result<(Tensor<B>, Tensor<B>)> {
        match b.conv2d_act(x, &self.w, Some(&self.shift), act, &self.p, true)? {
            (y, Some(m)) => Ok((y, m)),
            // (a backend that dropped the mean it was asked for)
            (_, None) => Err(crate::Error::InvalidArgument("conv2d_act returned no mean".into())),
        }
    }

    /// conv(x) + shift + res (no activation; res shaped like the output): a residual block's
    /// projection with the add in the conv's output pass (Backend::conv2d_add).
    pub fn forward_add(&self, b: &B, x: &Tensor<B>, res: &Tensor<B>) -> Result<Tensor<B>> {
        b.conv2d_add(x, &self.w, Some(&self.shift), res, &self.p)
    }

    /// The convolution of x ⊙ s, s [1, C, 1, 1] one scale per input channel (squeeze-excite's
    /// gate), for a 1×1 convolution (a pointwise conv's input scale is a scale of its weight
    /// columns): for one image w·diag(s) is computed instead of x ⊙ s, cout·C products instead
    /// of a pass over x; otherwise (several images, or a wider kernel) x ⊙ s first.
    /// With `res`, res is added to the output in the conv's output pass (`forward_add`).
    pub fn forward_input_scaled(&self, b: &B, x: &Tensor<B>, s: &Tensor<B>, res: Option<&Tensor<B>>) -> Result<Tensor<B>> {
        let wd = self.w.dims();
        let conv = |x: &Tensor<B>, w: &Tensor<B>| match res {
            Some(r) => b.conv2d_add(x, w, Some(&self.shift), r, &self.p),
            None => b.conv2d(x, w, Some(&self.shift), &self.p),
        };
        if x.dims()[0] == 1 && wd[2] == 1 && wd[3] == 1 && self.p.groups == 1 && s.dims() == &[1, wd[1], 1, 1][..] {
            // as [cout, C] · [1, C]: rows of C (as [cout, C, 1, 1] the CPU's broadcast would walk
            // cout·C rows of one value, an offset computed for each)
            let (o, c) = (wd[0], wd[1]);
            let w = b.mul(&b.reshape(&self.w, &[o, c])?, &b.reshape(s, &[1, c])?)?;
            return conv(x, &b.reshape(&w, wd)?);
        }
        conv(&b.mul(x, s)?, &self.w)
    }

    /// ∂L/∂x given ∂L/∂(BN output) (before any activation, which the caller undoes).
    pub fn x_backward(&self, b: &B, gy: &Tensor<B>, x_shape: &crate::tensor::Shape) -> Result<Tensor<B>> {
        b.conv2d_x_backward(gy, &self.w, x_shape, &self.p)
    }
}
