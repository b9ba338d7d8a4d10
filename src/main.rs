//! `ran` command line.

use clap::{Parser, Subcommand};
use ran::Backend;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ran", version, about = "Removing Anomalies as Noises: diffusion-based defect localization")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, available backends, and why CUDA is or is not usable here.
    Info,
    /// Find and outline defects in images (not available yet: arrives with the detection work).
    Detect {
        /// Images, folders or globs.
        inputs: Vec<String>,
        /// Run on the shipped demo model and sample images.
        #[arg(long)]
        demo: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            println!("ran {} ({})", env!("CARGO_PKG_VERSION"), env!("RAN_GIT_HASH"));
            println!("backends:");
            println!("  cpu   available: {}; CPU features: {}", ran::Cpu.name(), ran::sysinfo::cpu_features());
            let cuda = ran::sysinfo::probe_cuda();
            let state = if cuda.available { "driver present" } else { "unavailable" };
            println!("  cuda  {state}: {}", cuda.detail);
            println!("        (this build has no CUDA backend yet; all work runs on the CPU backend)");
            ExitCode::SUCCESS
        }
        Command::Detect { .. } => {
            eprintln!("ran detect: not available yet in this version: the engine's ops are in place, the diffusion model and the detection pipeline are still being built (see README).");
            ExitCode::from(2)
        }
    }
}
