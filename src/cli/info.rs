//! `ran info` and `ran kernels`: what this binary and this machine offer.

use crate::backend::cuda::device::Device;
use crate::backend::cuda::gpu::GpuDevice;
use crate::backend::cuda::kernels::{KERNEL_FILES, NVRTC_STATUS, PTXAS_REPORT};
use crate::Backend;
use std::process::ExitCode;

pub fn info() -> ExitCode {
    println!("ran {} ({})", env!("CARGO_PKG_VERSION"), env!("RAN_GIT_HASH"));
    println!("backends:");
    println!("  cpu   available: {}; CPU features: {}", crate::Cpu.name(), crate::sysinfo::cpu_features());
    let cuda = crate::sysinfo::probe_cuda();
    if cuda.available {
        match GpuDevice::open(0) {
            Ok(d) => {
                println!("  cuda  available: {} ({})", Device::describe(&d), cuda.detail);
                println!("        kernels load from: {:?} images", d.image_for(&KERNEL_FILES[0]));
            }
            Err(e) => println!("  cuda  unavailable: {e}; using the CPU backend"),
        }
    } else {
        println!("  cuda  unavailable: {}; using the CPU backend", cuda.detail);
    }
    println!("  kernels: {} in {} files; {}", KERNEL_FILES.iter().map(|f| f.kernels.len()).sum::<usize>(), KERNEL_FILES.len(), NVRTC_STATUS);
    println!("  cuda-emulator  available (runs the same kernels on the CPU; for tests)");
    ExitCode::SUCCESS
}

pub fn kernels(report: bool) -> ExitCode {
    for f in KERNEL_FILES {
        let cubins: Vec<String> = f.cubins.iter().map(|(sm, b)| format!("sm_{sm} {} KiB", b.len() / 1024)).collect();
        println!("kernels/{}.cu  ptx: {}  cubin: {}", f.file, if f.ptx.is_some() { "compute_80" } else { "none" }, if cubins.is_empty() { "none".into() } else { cubins.join(", ") });
        for k in f.kernels {
            println!("    {k}");
        }
    }
    if report {
        println!("\n{}", if PTXAS_REPORT.is_empty() { "no ptxas report: NVRTC was not available at build time" } else { PTXAS_REPORT });
    }
    ExitCode::SUCCESS
}
