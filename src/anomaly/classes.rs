//! Which class label an image gets from a class-conditional model.

use crate::{Error, Result};
use std::path::Path;

/// The class label of `path`: `explicit` (--class, an index or a name), else the first class
/// name contained in the path (the official code's substring rule).
pub fn class_of(path: &Path, explicit: Option<&str>, classes: &[String]) -> Result<usize> {
    if let Some(c) = explicit {
        if let Ok(i) = c.parse::<usize>() {
            return Ok(i);
        }
        return classes.iter().position(|n| n == c).ok_or_else(|| Error::InvalidArgument(format!("unknown class `{c}` (known: {})", classes.join(", "))));
    }
    let s = path.to_string_lossy();
    classes
        .iter()
        .position(|n| s.contains(n.as_str()))
        .ok_or_else(|| Error::InvalidArgument(format!("{}: the model is class-conditional and no class name appears in the path: give --class", path.display())))
}
