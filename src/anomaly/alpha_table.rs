//! Per-category α (`detect --alpha-table`, as `eval --alpha-sweep` writes it).

use crate::error::AtPath;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Reads a per-category α table: JSON {"bottle": 0.3, ...} or lines `category,alpha`; every
/// category must be a known class and every α lie in [0, 1].
pub fn read_alpha_table(path: &Path, classes: &[String]) -> Result<BTreeMap<String, f32>> {
    let text = std::fs::read_to_string(path).at_path(path)?;
    let bad = |m: String| Error::BadFile { path: path.to_path_buf(), msg: m };
    let mut t = BTreeMap::new();
    if text.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        for (k, a) in v.as_object().ok_or_else(|| bad("expected an object {category: alpha}".into()))? {
            t.insert(k.clone(), a.as_f64().ok_or_else(|| bad(format!("α of `{k}` is not a number")))? as f32);
        }
    } else {
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#')) {
            let (k, a) = line.split_once([',', ' ', '\t']).ok_or_else(|| bad(format!("line {}: `category,alpha` expected", i + 1)))?;
            t.insert(k.trim().to_string(), a.trim().parse().map_err(|_| bad(format!("line {}: `{}` is not a number", i + 1, a.trim())))?);
        }
    }
    for (k, a) in &t {
        if !classes.contains(k) {
            return Err(bad(format!("unknown category `{k}` (known: {})", classes.join(", "))));
        }
        if !(0.0..=1.0).contains(a) {
            return Err(bad(format!("α of `{k}` is {a}, outside [0, 1]")));
        }
    }
    Ok(t)
}
