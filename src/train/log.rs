//! The run's record: one JSON object per step in `log.jsonl` (step, lr, mse, vb, feat_mse, loss,
//! seconds; under f16 loss scaling also lg_loss_scale, and `skipped` on a skipped step), kept in
//! step with the checkpoint when a run resumes.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE: &str = "log.jsonl";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// 1-based: the record of the step after which `step` AdamW updates have been made
    pub step: u64,
    pub lr: f64,
    /// batch means of the per-sample terms
    pub mse: f64,
    pub vb: f64,
    pub feat_mse: Option<f64>,
    pub loss: f64,
    /// wall time of the step
    pub seconds: f64,
    /// f16 loss scaling: log2 of the scale this step's loss was multiplied by
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lg_loss_scale: Option<f64>,
    /// f16: a gradient overflowed and the step was skipped (no AdamW or EMA update)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

pub struct Log {
    path: PathBuf,
    pub records: Vec<StepRecord>,
}

impl Log {
    /// The log of the run in `dir`, its records up to `step` (those after a checkpoint are
    /// dropped: the resumed run redoes them); a fresh run (`step` 0) starts an empty one.
    pub fn open(dir: &Path, step: u64) -> Result<Self> {
        let path = dir.join(FILE);
        let mut records = Vec::new();
        if step > 0 {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (i, line) in text.lines().enumerate() {
                // a line cut short by a kill is the last one; anything else unreadable is named
                match serde_json::from_str::<StepRecord>(line) {
                    Ok(r) if r.step <= step => records.push(r),
                    Ok(_) => {}
                    Err(_) if i + 1 == text.lines().count() => {}
                    Err(e) => return Err(Error::BadFile { path, msg: format!("line {}: {e}", i + 1) }),
                }
            }
        }
        let mut body = String::new();
        for r in &records {
            body += &serde_json::to_string(r).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            body.push('\n');
        }
        crate::io::files::write_bytes_atomic(&path, body)?;
        Ok(Log { path, records })
    }

    pub fn push(&mut self, r: StepRecord) -> Result<()> {
        let io = |e| Error::Io { path: self.path.clone(), source: e };
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.path).map_err(io)?;
        let line = serde_json::to_string(&r).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        writeln!(f, "{line}").map_err(io)?;
        self.records.push(r);
        Ok(())
    }
}
