//! `ran metrics` on the command line.

use crate::commands::metrics::Metrics;
use crate::eval::pro_variant::ProVariant;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MetricsCmd {
    /// safetensors with `maps` [N,H,W], `masks` [N,H,W] and optional `image_labels` [N]
    #[arg(long)]
    input: Option<PathBuf>,
    /// folder of PNG maps (8- or 16-bit grayscale)
    #[arg(long)]
    maps: Option<PathBuf>,
    /// folder of PNG masks named like the maps (optionally with `_mask`); no mask = normal
    #[arg(long)]
    gt: Option<PathBuf>,
    /// write the metrics as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    topk: usize,
    /// Which AU-PRO is reported.
    #[arg(long, value_enum, default_value = "mvtec")]
    pro_variant: ProVariant,
}

impl MetricsCmd {
    pub fn run(self) -> ExitCode {
        let r = crate::commands::metrics::load_input(self.input.as_deref(), self.maps.as_deref(), self.gt.as_deref())
            .and_then(|(m, k, l, d)| crate::commands::metrics::compute(&m, &k, l, d, self.topk, self.pro_variant));
        match r.and_then(|m| self.print(&m)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(e),
        }
    }

    /// Prints the metrics, and writes them to --json.
    fn print(&self, m: &Metrics) -> crate::Result<()> {
        let pv = self.pro_variant;
        println!("pixel AUROC {:.6}\nAU-PRO (0.3, {pv}) {:.6}\nimage AUROC {}", m.pixel_auroc, m.aupro, m.image_auroc.map(|v| format!("{v:.6}")).unwrap_or_else(|| "undefined (one class)".into()));
        if let Some(j) = &self.json {
            let v = serde_json::json!({"pixel_auroc": m.pixel_auroc, "aupro": m.aupro, "image_auroc": m.image_auroc, "pro_variant": pv.name(), "topk": self.topk});
            crate::io::files::write_bytes_atomic(j, serde_json::to_string_pretty(&v).unwrap_or_default())?;
        }
        Ok(())
    }
}
