//! One case of the op table: an op name, its JSON parameters and its named host tensors (inputs,
//! and, for a fixture case, the independent reference's outputs). Cases come from the fixture
//! files (made by tools/reference/*.py from torch / guided_diffusion) or are generated at the
//! model's production sizes for the benchmarks and the large cross-backend cases.

use crate::backend::Backend;
use crate::io::safetensors::SafeTensors;
use crate::{Error, Result, Tensor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Host tensor: dims and values.
pub type HostTensor = (Vec<usize>, Vec<f32>);

#[derive(Clone, Debug)]
pub struct OpCase {
    pub name: String,
    /// `{"op": ..., op parameters ..., "grads": [inputs with a gradient]}`
    pub params: Value,
    pub tensors: BTreeMap<String, HostTensor>,
}

impl OpCase {
    pub fn new(name: impl Into<String>, params: Value) -> Self {
        OpCase { name: name.into(), params, tensors: BTreeMap::new() }
    }

    pub fn with(mut self, k: &str, dims: &[usize], data: Vec<f32>) -> Self {
        self.tensors.insert(k.to_string(), (dims.to_vec(), data));
        self
    }

    pub fn op(&self) -> &str {
        self.params["op"].as_str().unwrap_or("?")
    }

    /// Large cases run once in the cross-backend suite (forward schedule, race detector on), the
    /// small ones under every schedule.
    pub fn is_large(&self) -> bool {
        self.params["large"].as_bool().unwrap_or(false)
    }

    /// A generated case (`sizes::production_cases`): random inputs and no reference outputs, so
    /// its results are compared with the CPU backend's only.
    pub fn is_synthetic(&self) -> bool {
        self.params["synthetic"].as_bool().unwrap_or(false)
    }

    /// The independent reference's value of output `k`: a fixture's tensor of that name.
    pub fn reference(&self, k: &str) -> Option<&HostTensor> {
        if self.is_synthetic() {
            None
        } else {
            self.tensors.get(k)
        }
    }

    pub fn has(&self, k: &str) -> bool {
        self.tensors.contains_key(k)
    }

    pub fn host(&self, k: &str) -> Result<&HostTensor> {
        self.tensors.get(k).ok_or_else(|| Error::InvalidArgument(format!("op case {}: no tensor `{k}`", self.name)))
    }

    pub fn dims(&self, k: &str) -> Result<&[usize]> {
        Ok(&self.host(k)?.0)
    }

    pub fn load<B: Backend>(&self, b: &B, k: &str) -> Result<Tensor<B>> {
        let (s, v) = self.host(k)?;
        b.from_host(s, v)
    }

    pub fn usize(&self, k: &str) -> Result<usize> {
        self.params[k].as_u64().map(|v| v as usize).ok_or_else(|| self.bad_param(k))
    }

    pub fn f64(&self, k: &str) -> Result<f64> {
        self.params[k].as_f64().ok_or_else(|| self.bad_param(k))
    }

    pub fn bool(&self, k: &str) -> Result<bool> {
        self.params[k].as_bool().ok_or_else(|| self.bad_param(k))
    }

    pub fn str(&self, k: &str) -> Result<&str> {
        self.params[k].as_str().ok_or_else(|| self.bad_param(k))
    }

    pub fn usizes(&self, k: &str) -> Result<Vec<usize>> {
        let a = self.params[k].as_array().ok_or_else(|| self.bad_param(k))?;
        a.iter().map(|v| v.as_u64().map(|v| v as usize).ok_or_else(|| self.bad_param(k))).collect()
    }

    /// The inputs whose gradient the case asks for.
    pub fn grads(&self) -> Vec<String> {
        self.params["grads"].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default()
    }

    pub fn wants_grad(&self, k: &str) -> bool {
        self.grads().iter().any(|g| g == k)
    }

    fn bad_param(&self, k: &str) -> Error {
        Error::InvalidArgument(format!("op case {}: parameter `{k}` missing or of the wrong type in {}", self.name, self.params))
    }
}

/// Every case of a fixture file written by tools/reference/*.py: tensors `<case>.<name>`,
/// metadata `<case>` → JSON parameters (keys starting with `__` are the file's own notes).
/// `filter` picks cases by their parameters (diffusion.safetensors also holds schedule tables).
pub fn fixture_cases(path: &Path, filter: impl Fn(&Value) -> bool) -> Result<Vec<OpCase>> {
    let fx = SafeTensors::open(path)?;
    let mut by_case: BTreeMap<String, OpCase> = BTreeMap::new();
    for (k, v) in fx.metadata().iter().filter(|(k, _)| !k.starts_with("__")) {
        let params: Value = serde_json::from_str(v).map_err(|e| Error::InvalidArgument(format!("{}: case {k}: metadata is not JSON: {e}", path.display())))?;
        if filter(&params) {
            by_case.insert(k.clone(), OpCase::new(k.clone(), params));
        }
    }
    for name in fx.names() {
        // case names may hold dots ("eps0.001"); tensor names do not
        if let Some((case, t)) = name.rsplit_once('.') {
            if let Some(c) = by_case.get_mut(case) {
                c.tensors.insert(t.to_string(), fx.get(name)?);
            }
        }
    }
    Ok(by_case.into_values().collect())
}
