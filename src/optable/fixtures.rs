//! The op table's reference cases: the fixture files that independent code wrote (torch float64
//! and guided_diffusion, tools/reference/make_{op,weight_grad,optim,diffusion}_fixtures.py).

use super::case::{fixture_cases, OpCase};
use crate::Result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Files holding op cases directly (metadata `"op"`).
pub const OP_FILES: &[&str] = &["ops.safetensors", "weight_grads.safetensors", "optim.safetensors"];

/// Every case of the op-table fixtures in folder `dir`: the op files, the diffusion step cases
/// of diffusion.safetensors (each with its schedule's parameters under `schedule_params`), and the
/// fused ops' cases derived from them.
pub fn all_cases(dir: &Path) -> Result<Vec<OpCase>> {
    let mut out = Vec::new();
    for f in OP_FILES {
        out.extend(fixture_cases(&dir.join(f), |p| p["op"].is_string())?);
    }
    out.extend(step_cases(dir)?);
    // the fused ops' cases, derived from torch's cases of the ops they fuse (fused.rs)
    let derived = super::fused::derived_cases(&out);
    out.extend(derived);
    Ok(out)
}

pub fn step_cases(dir: &Path) -> Result<Vec<OpCase>> {
    let path = dir.join("diffusion.safetensors");
    let schedules: BTreeMap<String, Value> = fixture_cases(&path, |p| p["kind"] == "schedule")?.into_iter().map(|c| (c.name, c.params)).collect();
    let mut steps = fixture_cases(&path, |p| p["kind"] == "step")?;
    for c in &mut steps {
        let sched = c.params["schedule"].as_str().and_then(|s| schedules.get(s)).cloned().unwrap_or(Value::Null);
        c.params["schedule_params"] = sched;
        c.params["op"] = Value::from("diffusion_step");
    }
    Ok(steps)
}
