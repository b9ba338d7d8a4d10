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
    /// The CUDA kernels built into this binary; `--report` adds ptxas's registers / shared memory /
    /// spills per kernel for sm_90.
    Kernels {
        #[arg(long)]
        report: bool,
    },
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
            if cuda.available {
                match ran::backend::cuda::gpu::GpuDevice::open(0) {
                    Ok(d) => {
                        println!("  cuda  available: {} ({})", ran::backend::cuda::device::Device::describe(&d), cuda.detail);
                        let f = &ran::backend::cuda::kernels::KERNEL_FILES[0];
                        println!("        kernels load from: {:?} images", d.image_for(f));
                    }
                    Err(e) => println!("  cuda  unavailable: {e}; using the CPU backend"),
                }
            } else {
                println!("  cuda  unavailable: {}; using the CPU backend", cuda.detail);
            }
            println!("  kernels: {} in {} files; {}", ran::backend::cuda::kernels::KERNEL_FILES.iter().map(|f| f.kernels.len()).sum::<usize>(), ran::backend::cuda::kernels::KERNEL_FILES.len(), ran::backend::cuda::kernels::NVRTC_STATUS);
            println!("  cuda-emulator  available (runs the same kernels on the CPU; for tests)");
            ExitCode::SUCCESS
        }
        Command::Kernels { report } => {
            for f in ran::backend::cuda::kernels::KERNEL_FILES {
                let cubins: Vec<String> = f.cubins.iter().map(|(sm, b)| format!("sm_{sm} {} KiB", b.len() / 1024)).collect();
                println!("kernels/{}.cu  ptx: {}  cubin: {}", f.file, if f.ptx.is_some() { "compute_80" } else { "none" }, if cubins.is_empty() { "none".into() } else { cubins.join(", ") });
                for k in f.kernels {
                    println!("    {k}");
                }
            }
            if report {
                println!("\n{}", if ran::backend::cuda::kernels::PTXAS_REPORT.is_empty() { "no ptxas report: NVRTC was not available at build time" } else { ran::backend::cuda::kernels::PTXAS_REPORT });
            }
            ExitCode::SUCCESS
        }
        Command::Detect { .. } => {
            eprintln!("ran detect: not available yet in this version: the engine's ops are in place, the diffusion model and the detection pipeline are still being built (see README).");
            ExitCode::from(2)
        }
    }
}
