//! `ran verify` on the command line.

use super::score_opts::ScoreOpts;
use crate::backend::select::PrecisionDefault;
use crate::commands::verify::Row;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct VerifyCmd {
    #[arg(long)]
    reference: PathBuf,
    #[arg(long, default_value_t = 1e-4)]
    atol: f64,
    #[arg(long, default_value_t = 1e-3)]
    rtol: f64,
    /// --model (required), and for kind=effnet / kind=detect the extractor and scoring options
    #[command(flatten)]
    score: ScoreOpts,
}

impl VerifyCmd {
    pub fn run(self) -> ExitCode {
        let (device, precision) = (self.score.device, self.score.precision);
        let Some(settings) = self.score.settings() else { return super::usage("give --model MODEL.safetensors") };
        let backend = match super::backend(device, precision, PrecisionDefault::F32) {
            Ok(b) => b,
            Err(code) => return code,
        };
        match crate::with_backend!(backend, |b| crate::commands::verify::run(b, &self.reference, self.atol, self.rtol, &settings)) {
            Ok(rows) => print(&rows, self.atol, self.rtol),
            Err(e) => super::fail(e),
        }
    }
}

fn print(rows: &[Row], atol: f64, rtol: f64) -> ExitCode {
    // as wide as the longest name (a train_step reference names parameters)
    let w = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(0).max(14);
    println!("{:<w$} {:>12} {:>12}  result (atol {atol:e}, rtol {rtol:e})", "output", "max abs err", "max rel err");
    for r in rows {
        println!("{:<w$} {:>12.3e} {:>12.3e}  {}", r.name, r.max_abs, r.max_rel, if r.pass { "pass" } else { "FAIL" });
    }
    super::status(rows.iter().all(|r| r.pass))
}
