//! Where a model's parameters come from (safetensors, PyTorch .pt) and a loader that checks each
//! tensor's shape by name and, at the end, that the file held nothing the model did not use.

use crate::backend::Backend;
use crate::io::safetensors::{Dtype, SafeTensors};
use crate::tensor::Tensor;
use crate::{Error, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A named collection of f32-convertible tensors (f16 ones also readable as f16).
pub trait Weights {
    fn path(&self) -> &Path;
    fn names(&self) -> Vec<String>;
    fn contains(&self, name: &str) -> bool;
    /// Shape and values (converted to f32) of `name`.
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)>;
    /// Shape only, without reading the data.
    fn shape(&self, name: &str) -> Result<Vec<usize>>;
    /// Shape and values of `name` when the source stores it as f16 (None otherwise), so that a
    /// backend can keep the half-size copy (`Backend::from_host_f16`).
    fn get_f16(&self, _name: &str) -> Result<Option<(Vec<usize>, Vec<f16>)>> {
        Ok(None)
    }
}

impl Weights for SafeTensors {
    fn path(&self) -> &Path {
        SafeTensors::path(self)
    }
    fn names(&self) -> Vec<String> {
        SafeTensors::names(self).map(String::from).collect()
    }
    fn contains(&self, name: &str) -> bool {
        SafeTensors::contains(self, name)
    }
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        SafeTensors::get(self, name)
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.info(name)?.shape.clone())
    }
    fn get_f16(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f16>)>> {
        if self.info(name)?.dtype != Dtype::F16 {
            return Ok(None);
        }
        // through `get` (which refuses NaN/Inf, naming the tensor) and back: f16 → f32 → f16 is
        // the identity, and the f32 copy is one tensor's, freed at once
        let (shape, v) = SafeTensors::get(self, name)?;
        let mut h = vec![f16::ZERO; v.len()];
        h.convert_from_f32_slice(&v);
        Ok(Some((shape, h)))
    }
}

/// Loads parameters onto a backend by name, checking shapes, remembering what was used.
pub struct Loader<'a, B: Backend> {
    pub weights: &'a dyn Weights,
    pub backend: &'a B,
    used: RefCell<BTreeSet<String>>,
    /// names that are allowed to stay unused (e.g. tensors of a reference file that are inputs)
    ignore: BTreeSet<String>,
    ignore_prefixes: Vec<String>,
    synthetic: Option<Synthetic>,
    /// synthetic values rounded to f16 and handed out as an f16 file's would be (`stored_as_f16`)
    synthetic_f16: bool,
    /// (name, shape) of every tensor handed out, in order
    loaded: RefCell<Vec<(String, Vec<usize>)>>,
}

/// Random weights for a model built from flags alone (architecture checks, benchmarks): values
/// are seeded by the tensor's name; `shapes` answers the few shape questions a model asks before
/// loading (e.g. label_emb.weight, feat_rec1.0.weight).
pub struct Synthetic {
    pub seed: u64,
    pub shapes: std::collections::BTreeMap<String, Vec<usize>>,
}

/// An empty weight source for synthetic loading.
struct NoWeights;
impl Weights for NoWeights {
    fn path(&self) -> &Path {
        Path::new("<random weights>")
    }
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
    fn contains(&self, _: &str) -> bool {
        false
    }
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        Err(Error::MissingTensor { path: PathBuf::from("<random weights>"), name: name.into() })
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.get(name).map(|v| v.0)
    }
}

/// The values `Loader::synthetic` hands out for `name`.
pub fn synth_values(seed: u64, name: &str, shape: &[usize]) -> Vec<f32> {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let n: usize = shape.iter().product();
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let norm_weight = shape.len() == 1 && (name.contains("norm") || name.contains("layers.0.") || name.starts_with("out.0") || name.starts_with("feat_rec1.0"));
    let scale = if shape.len() == 1 { 0.1 } else { 1.0 / (fan_in as f32).sqrt() };
    (0..n)
        .map(|_| {
            h ^= h >> 12;
            h ^= h << 25;
            h ^= h >> 27;
            let u = ((h.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            if norm_weight && name.ends_with("weight") {
                1.0 + 0.1 * u
            } else {
                u * scale * 1.7
            }
        })
        .collect()
}

impl<'a, B: Backend> Loader<'a, B> {
    pub fn new(weights: &'a dyn Weights, backend: &'a B) -> Self {
        Loader { weights, backend, used: RefCell::new(BTreeSet::new()), ignore: BTreeSet::new(), ignore_prefixes: Vec::new(), synthetic: None, synthetic_f16: false, loaded: RefCell::new(Vec::new()) }
    }

    /// A loader that invents every tensor (see `Synthetic`).
    pub fn synthetic(backend: &'a B, synthetic: Synthetic) -> Self {
        Loader {
            weights: &NoWeights,
            backend,
            used: RefCell::new(BTreeSet::new()),
            ignore: BTreeSet::new(),
            ignore_prefixes: Vec::new(),
            synthetic: Some(synthetic),
            synthetic_f16: false,
            loaded: RefCell::new(Vec::new()),
        }
    }

    /// Synthetic weights as an f16 file of them would give them: each value rounded to f16, and
    /// `tensor` hands them to `Backend::from_host_f16` (benchmarks of f16-stored models).
    pub fn stored_as_f16(mut self) -> Self {
        self.synthetic_f16 = true;
        self
    }

    /// The synthetic values of `name` (rounded to f16 with `stored_as_f16`).
    fn synth(&self, s: &Synthetic, name: &str, shape: &[usize]) -> Vec<f32> {
        let mut v = synth_values(s.seed, name, shape);
        if name.ends_with("running_var") {
            v.iter_mut().for_each(|x| *x = 0.5 + x.abs());
        }
        if self.synthetic_f16 {
            v.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32());
        }
        v
    }

    /// Tensors that may be present and unused (inputs/outputs stored next to the weights).
    pub fn ignoring(mut self, names: &[&str]) -> Self {
        self.ignore.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// Tensors under these prefixes may stay unused (a classifier head the extractor skips).
    pub fn ignoring_prefixes(mut self, prefixes: &[&str]) -> Self {
        self.ignore_prefixes.extend(prefixes.iter().map(|s| s.to_string()));
        self
    }

    /// Host values of `name`, which must have exactly `shape` (for weights folded before upload).
    pub fn host_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.loaded.borrow_mut().push((name.to_string(), shape.to_vec()));
        if let Some(s) = &self.synthetic {
            return Ok(self.synth(s, name, shape));
        }
        self.host_checked(name, shape)
    }

    /// The values of `name` after its shape, read from the file's header, is found to be
    /// `shape`: a tensor of the wrong (or a hostile, huge) shape is refused before its data is
    /// read or any memory is allocated for it.
    fn host_checked(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if !self.weights.contains(name) {
            return Err(Error::MissingTensor { path: self.path(), name: name.to_string() });
        }
        let got = self.weights.shape(name)?;
        if got != shape {
            return Err(Error::BadTensor { path: self.path(), name: name.to_string(), msg: format!("shape {got:?}, the model expects {shape:?}") });
        }
        let (got, v) = self.host(name)?;
        if got != shape || v.len() != shape.iter().product::<usize>() {
            return Err(Error::BadTensor { path: self.path(), name: name.to_string(), msg: format!("shape {got:?} with {} values, the model expects {shape:?}", v.len()) });
        }
        Ok(v)
    }

    /// The first dimension of `name` (rows of an embedding, output channels of a conv), which
    /// must exist and be positive.
    pub fn rows(&self, name: &str) -> Result<usize> {
        let s = self.shape(name)?;
        match s.first() {
            Some(&n) if n > 0 => Ok(n),
            _ => Err(Error::BadTensor { path: self.path(), name: name.to_string(), msg: format!("shape {s:?}: at least one dimension of positive size expected") }),
        }
    }

    fn path(&self) -> PathBuf {
        self.weights.path().to_path_buf()
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor<B>> {
        self.loaded.borrow_mut().push((name.to_string(), shape.to_vec()));
        if let Some(s) = &self.synthetic {
            let v = self.synth(s, name, shape);
            if self.synthetic_f16 {
                let mut h = vec![f16::ZERO; v.len()];
                h.convert_from_f32_slice(&v);
                return self.backend.from_host_f16(shape, h);
            }
            return self.backend.from_host(shape, &v);
        }
        if let Some(h) = self.host_f16_checked(name, shape)? {
            return self.backend.from_host_f16(shape, h);
        }
        let v = self.host_checked(name, shape)?;
        self.backend.from_host(shape, &v)
    }

    /// The values of `name` as f16 when the file stores them so (None otherwise), its shape
    /// checked against `shape` first like `host_checked`.
    fn host_f16_checked(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f16>>> {
        if !self.weights.contains(name) {
            return Err(Error::MissingTensor { path: self.path(), name: name.to_string() });
        }
        let got = self.weights.shape(name)?;
        if got != shape {
            return Err(Error::BadTensor { path: self.path(), name: name.to_string(), msg: format!("shape {got:?}, the model expects {shape:?}") });
        }
        let Some((got, h)) = self.weights.get_f16(name)? else { return Ok(None) };
        self.used.borrow_mut().insert(name.to_string());
        if got != shape || h.len() != shape.iter().product::<usize>() {
            return Err(Error::BadTensor { path: self.path(), name: name.to_string(), msg: format!("shape {got:?} with {} values, the model expects {shape:?}", h.len()) });
        }
        // every source refuses these already; checked here too so no Weights can slip one in
        if let Some(i) = h.iter().position(|x| !x.is_finite()) {
            return Err(Error::BadTensor { path: self.path(), name: name.to_string(), msg: format!("value #{i} is {} (weights must be finite)", h[i]) });
        }
        Ok(Some(h))
    }

    /// Raw host values of `name` (for weights that are rearranged before upload).
    pub fn host(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        if !self.weights.contains(name) {
            return Err(Error::MissingTensor { path: self.path(), name: name.to_string() });
        }
        self.used.borrow_mut().insert(name.to_string());
        let (shape, v) = self.weights.get(name)?;
        // every source refuses these already; checked here too so no Weights can slip one in
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::BadTensor { path: self.path(), name: name.to_string(), msg: format!("value #{i} is {} (weights must be finite)", v[i]) });
        }
        Ok((shape, v))
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.synthetic {
            Some(s) => s.shapes.contains_key(name) || (name == "feat_rec1.2.weight" && s.shapes.contains_key("feat_rec1.0.weight")),
            None => self.weights.contains(name),
        }
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        if let Some(s) = &self.synthetic {
            return s.shapes.get(name).cloned().ok_or_else(|| Error::MissingTensor { path: self.path(), name: name.to_string() });
        }
        if !self.weights.contains(name) {
            return Err(Error::MissingTensor { path: self.path(), name: name.to_string() });
        }
        self.weights.shape(name)
    }

    /// (name, shape) of every parameter the model took, in load order.
    pub fn loaded(&self) -> Vec<(String, Vec<usize>)> {
        self.loaded.borrow().clone()
    }

    /// Every tensor in the file must have been used (a typo'd or foreign checkpoint fails here).
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        let extra: Vec<String> =
            self.weights.names().into_iter().filter(|n| !used.contains(n) && !self.ignore.contains(n) && !self.ignore_prefixes.iter().any(|p| n.starts_with(p.as_str()))).collect();
        if !extra.is_empty() {
            let shown: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
            return Err(Error::BadFile { path: self.path(), msg: format!("{} tensor(s) the model does not use, e.g. {} (wrong flags or a different model?)", extra.len(), shown.join(", ")) });
        }
        Ok(())
    }
}

/// The first dimension of `name` in `w`, which must exist and be positive.
pub fn rows_of(w: &dyn Weights, name: &str) -> Result<usize> {
    let s = w.shape(name)?;
    match s.first() {
        Some(&n) if n > 0 => Ok(n),
        _ => Err(Error::BadTensor { path: w.path().to_path_buf(), name: name.to_string(), msg: format!("shape {s:?}: at least one dimension of positive size expected") }),
    }
}

/// The tensors of `inner` whose names start with `prefix`, seen without it (a backbone stored
/// inside another file, a submodule's state dict, DataParallel's `module.`).
pub struct Prefixed<'a> {
    pub inner: &'a dyn Weights,
    pub prefix: String,
}

impl Weights for Prefixed<'_> {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn names(&self) -> Vec<String> {
        self.inner.names().into_iter().filter_map(|n| n.strip_prefix(self.prefix.as_str()).map(String::from)).collect()
    }
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(&format!("{}{name}", self.prefix))
    }
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.inner.get(&format!("{}{name}", self.prefix))
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.inner.shape(&format!("{}{name}", self.prefix))
    }
    fn get_f16(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f16>)>> {
        self.inner.get_f16(&format!("{}{name}", self.prefix))
    }
}
