//! `ran convert` on the command line.

use super::options::WeightDtype;
use crate::commands::convert::Summary;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ConvertCmd {
    /// ema_0.997_010000.pt, model.safetensors, ...
    #[arg(long)]
    checkpoint: PathBuf,
    /// The MODEL_FLAGS string from the training script, e.g. "--image_size 256 --num_channels 256 ..."
    #[arg(long, allow_hyphen_values = true)]
    flags: String,
    #[arg(long)]
    out: PathBuf,
    /// Storage type of the weights (computation stays f32).
    #[arg(long, value_enum, default_value = "f32")]
    dtype: WeightDtype,
    /// Category names of a class-conditional model, in label order (e.g. the 15 MVTec names).
    #[arg(long, value_delimiter = ',')]
    class_names: Vec<String>,
    /// The EfficientNet the feature head was trained against (e.g. efficientnet-b4,
    /// efficientnet-lite0), recorded in the metadata so detect/eval pick it by default.
    #[arg(long, value_parser = super::options::parse_effnet_arch)]
    feature_extractor: Option<String>,
}

impl ConvertCmd {
    pub fn run(self) -> ExitCode {
        match crate::commands::convert::run(&self.checkpoint, &self.flags, &self.out, self.dtype.dtype(), &self.class_names, self.feature_extractor.as_deref()) {
            Ok(s) => print(&s, &self.out, self.dtype),
            Err(e) => super::fail(e),
        }
    }
}

fn print(s: &Summary, out: &Path, dtype: WeightDtype) -> ExitCode {
    println!(
        "wrote {}: {} tensors, {:.1} M parameters{}, {:.1} MB ({})",
        out.display(),
        s.tensors,
        s.params as f64 / 1e6,
        if s.feature_head { " incl. the anomaly feature head" } else { "" },
        s.bytes as f64 / 1e6,
        dtype.name()
    );
    ExitCode::SUCCESS
}
