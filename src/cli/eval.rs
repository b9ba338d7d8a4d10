//! `ran eval` on the command line (and its demo).

use super::options::parse_shard;
use super::score_opts::ScoreOpts;
use crate::backend::select::PrecisionDefault;
use crate::commands::eval::EvalArgs;
use crate::eval::pro_variant::ProVariant;
use crate::eval::results::CategoryMetrics;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct EvalCmd {
    /// Root of the data set (MVTec-AD or BTAD layout) [the demo: examples/demo].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Evaluate the shipped demo model on the shipped demo data set.
    #[arg(long)]
    demo: bool,
    /// Categories to evaluate (default: all found).
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    #[command(flatten)]
    score: ScoreOpts,
    /// Output folder: metrics.json/csv and the map cache (resumable).
    #[arg(long, default_value = "ran-eval")]
    out: PathBuf,
    /// Score only images i, i+n, ... (i/n); run `--merge` once all shards are done.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Compute the metrics from the cached maps of all shards.
    #[arg(long)]
    merge: bool,
    /// Which AU-PRO is reported.
    #[arg(long, value_enum, default_value = "mvtec")]
    pro_variant: ProVariant,
    /// Also score the ensemble at each of these α (from the cached maps) and write the best per
    /// category to alpha_table.json (for detect --alpha-table). Chosen on the test set, as the
    /// paper's per-category best results: an upper bound, not an estimate.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1")]
    alpha_sweep: Option<Vec<f32>>,
    /// A calibration file made by `ran calibrate` for this model and settings: its statistics
    /// instead of the training images' (implies --ensemble calibrated), and its image thresholds'
    /// verdicts (precision, recall, F1 of `defective`) measured on the test set.
    #[arg(long)]
    calibration: Option<PathBuf>,
}

impl EvalCmd {
    pub fn run(mut self) -> ExitCode {
        if self.demo {
            match super::demo::paths() {
                Ok((model, data)) => {
                    super::demo::score_settings(&mut self.score, model);
                    self.data.get_or_insert(data);
                }
                Err(e) => return super::fail(e),
            }
        }
        let Some(data) = self.data else { return super::usage("give --data ROOT (MVTec-AD or BTAD layout) or --demo") };
        if self.calibration.is_some() && self.score.ensemble.is_none() {
            self.score.ensemble = Some(crate::anomaly::settings::EnsembleKind::Calibrated);
        }
        let (device, precision) = (self.score.device, self.score.precision);
        let Some(score) = self.score.settings() else { return super::usage("give --model MODEL.safetensors (made by `ran convert`)") };
        let ensemble = format!("{} (α = {})", score.ensemble, score.alpha);
        let args = EvalArgs {
            score,
            data,
            out: self.out,
            categories: self.categories,
            shard: self.shard,
            merge: self.merge,
            pro_variant: self.pro_variant,
            alpha_sweep: self.alpha_sweep.unwrap_or_default(),
            calibration: self.calibration,
        };
        let backend = match super::backend(device, precision, PrecisionDefault::Fast) {
            Ok(b) => b,
            Err(code) => return code,
        };
        match crate::with_backend!(backend, |b| crate::commands::eval::run(b, &args)) {
            Ok(r) => print(&r, &ensemble, &args.out),
            Err(e) => super::fail(e),
        }
    }
}

fn print(r: &[CategoryMetrics], ensemble: &str, out: &Path) -> ExitCode {
    if r.is_empty() {
        println!("shard done: maps cached in {}; run with --merge when every shard has finished", out.join("cache").display());
    } else {
        println!("ensemble: {ensemble}");
        print!("{}", crate::eval::summary::summary(r));
        println!("metrics in {} (metrics.csv, defects.csv, report.html beside it)", out.join("metrics.json").display());
    }
    ExitCode::SUCCESS
}
