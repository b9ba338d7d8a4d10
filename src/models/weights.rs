//! Where a model's parameters come from (safetensors, PyTorch .pt) and a loader that checks each
//! tensor's shape by name and, at the end, that the file held nothing the model did not use.

use crate::backend::Backend;
use crate::io::safetensors::SafeTensors;
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A named collection of f32-convertible tensors.
pub trait Weights {
    fn path(&self) -> &Path;
    fn names(&self) -> Vec<String>;
    fn contains(&self, name: &str) -> bool;
    /// Shape and values (converted to f32) of `name`.
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)>;
    /// Shape only, without reading the data.
    fn shape(&self, name: &str) -> Result<Vec<usize>>;
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
}

/// Loads parameters onto a backend by name, checking shapes, remembering what was used.
pub struct Loader<'a, B: Backend> {
    pub weights: &'a dyn Weights,
    pub backend: &'a B,
    used: RefCell<BTreeSet<String>>,
    /// names that are allowed to stay unused (e.g. tensors of a reference file that are inputs)
    ignore: BTreeSet<String>,
}

impl<'a, B: Backend> Loader<'a, B> {
    pub fn new(weights: &'a dyn Weights, backend: &'a B) -> Self {
        Loader { weights, backend, used: RefCell::new(BTreeSet::new()), ignore: BTreeSet::new() }
    }

    /// Tensors that may be present and unused (inputs/outputs stored next to the weights).
    pub fn ignoring(mut self, names: &[&str]) -> Self {
        self.ignore.extend(names.iter().map(|s| s.to_string()));
        self
    }

    fn path(&self) -> PathBuf {
        self.weights.path().to_path_buf()
    }

    /// The tensor `name`, which must have exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor<B>> {
        let (got_shape, v) = self.host(name)?;
        if got_shape != shape {
            return Err(Error::BadTensor { path: self.path(), name: name.to_string(), msg: format!("shape {got_shape:?}, the model expects {shape:?}") });
        }
        self.backend.from_host(shape, &v)
    }

    /// Raw host values of `name` (for weights that are rearranged before upload).
    pub fn host(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        if !self.weights.contains(name) {
            return Err(Error::MissingTensor { path: self.path(), name: name.to_string() });
        }
        self.used.borrow_mut().insert(name.to_string());
        self.weights.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(name)
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        if !self.weights.contains(name) {
            return Err(Error::MissingTensor { path: self.path(), name: name.to_string() });
        }
        self.weights.shape(name)
    }

    /// Every tensor in the file must have been used (a typo'd or foreign checkpoint fails here).
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        let extra: Vec<String> = self.weights.names().into_iter().filter(|n| !used.contains(n) && !self.ignore.contains(n)).collect();
        if !extra.is_empty() {
            let shown: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
            return Err(Error::BadFile {
                path: self.path(),
                msg: format!("{} tensor(s) the model does not use, e.g. {} (wrong flags or a different model?)", extra.len(), shown.join(", ")),
            });
        }
        Ok(())
    }
}
