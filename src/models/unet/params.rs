//! The UNet's parameters by state_dict name, in the same walk as `UNet::load`, for the optimiser
//! (which replaces every tensor after a step) and for writing checkpoints. Conv1d weights
//! (attention qkv and proj_out) are kept as [O, I, 1, 1] here and named with upstream's
//! [O, I, 1] shape by `state_dict_shape`.

use super::{Attention, Conv, Layer, Linear, Norm, ResBlock, UNet};
use crate::backend::Backend;
use crate::tensor::Tensor;
use crate::Result;

type Visit<'a, B> = dyn FnMut(&str, &mut Tensor<B>) -> Result<()> + 'a;

impl<B: Backend> Conv<B> {
    fn visit(&mut self, p: &str, f: &mut Visit<B>) -> Result<()> {
        f(&format!("{p}.weight"), &mut self.w)?;
        if let Some(b) = &mut self.b {
            f(&format!("{p}.bias"), b)?;
        }
        Ok(())
    }
}

impl<B: Backend> Linear<B> {
    fn visit(&mut self, p: &str, f: &mut Visit<B>) -> Result<()> {
        f(&format!("{p}.weight"), &mut self.w)?;
        f(&format!("{p}.bias"), &mut self.b)
    }
}

impl<B: Backend> Norm<B> {
    fn visit(&mut self, p: &str, f: &mut Visit<B>) -> Result<()> {
        f(&format!("{p}.weight"), &mut self.g)?;
        f(&format!("{p}.bias"), &mut self.b)
    }
}

impl<B: Backend> ResBlock<B> {
    fn visit(&mut self, p: &str, f: &mut Visit<B>) -> Result<()> {
        self.in_norm.visit(&format!("{p}.in_layers.0"), f)?;
        self.in_conv.visit(&format!("{p}.in_layers.2"), f)?;
        self.emb.visit(&format!("{p}.emb_layers.1"), f)?;
        self.out_norm.visit(&format!("{p}.out_layers.0"), f)?;
        self.out_conv.visit(&format!("{p}.out_layers.3"), f)?;
        if let Some(s) = &mut self.skip {
            s.visit(&format!("{p}.skip_connection"), f)?;
        }
        Ok(())
    }
}

impl<B: Backend> Attention<B> {
    fn visit(&mut self, p: &str, f: &mut Visit<B>) -> Result<()> {
        self.norm.visit(&format!("{p}.norm"), f)?;
        self.qkv.visit(&format!("{p}.qkv"), f)?;
        self.proj.visit(&format!("{p}.proj_out"), f)
    }
}

impl<B: Backend> Layer<B> {
    fn visit(&mut self, p: &str, f: &mut Visit<B>) -> Result<()> {
        match self {
            Layer::Conv(c) => c.visit(p, f),
            Layer::Down(c) => c.visit(&format!("{p}.op"), f),
            Layer::Up(c) => c.visit(&format!("{p}.conv"), f),
            Layer::Res(r) => r.visit(p, f),
            Layer::Attn(a) => a.visit(p, f),
        }
    }
}

fn visit_block<B: Backend>(layers: &mut [Layer<B>], prefix: &str, f: &mut Visit<B>) -> Result<()> {
    for (k, l) in layers.iter_mut().enumerate() {
        l.visit(&format!("{prefix}.{k}"), f)?;
    }
    Ok(())
}

impl<B: Backend> UNet<B> {
    /// Calls `f` on every parameter with its state_dict name, in load order.
    pub fn visit_params_mut(&mut self, f: &mut Visit<B>) -> Result<()> {
        // f may replace any tensor: the stacked timestep projections are rebuilt from the new ones
        self.unpack_emb();
        self.time_embed.0.visit("time_embed.0", f)?;
        self.time_embed.1.visit("time_embed.2", f)?;
        if let Some(t) = &mut self.label_emb {
            f("label_emb.weight", t)?;
        }
        for (i, blk) in self.input_blocks.iter_mut().enumerate() {
            visit_block(blk, &format!("input_blocks.{i}"), f)?;
        }
        visit_block(&mut self.middle, "middle_block", f)?;
        for (j, blk) in self.output_blocks.iter_mut().enumerate() {
            visit_block(blk, &format!("output_blocks.{j}"), f)?;
        }
        self.out_norm.visit("out.0", f)?;
        self.out_conv.visit("out.2", f)?;
        if let Some(h) = &mut self.feat_head {
            h.norm.visit("feat_rec1.0", f)?;
            h.conv.visit("feat_rec1.2", f)?;
        }
        Ok(())
    }

    /// (name, tensor) of every parameter, in load order.
    pub fn params(&mut self) -> Result<Vec<(String, Tensor<B>)>> {
        let mut v = Vec::new();
        self.visit_params_mut(&mut |n, t| {
            v.push((n.to_string(), t.clone()));
            Ok(())
        })?;
        Ok(v)
    }
}

/// A parameter's shape in upstream's state_dict: attention's Conv1d weights drop the trailing 1.
pub fn state_dict_shape(name: &str, dims: &[usize]) -> Vec<usize> {
    let conv1d = (name.ends_with(".qkv.weight") || name.ends_with(".proj_out.weight")) && dims.len() == 4;
    if conv1d {
        dims[..3].to_vec()
    } else {
        dims.to_vec()
    }
}
