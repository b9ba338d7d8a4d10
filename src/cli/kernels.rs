//! `ran kernels --traffic`: the emulator's traffic accounting over the UNet's ops
//! (src/optable/traffic.rs), as a table or JSON lines.

use crate::optable::traffic::{format_row, header, measure, unet_cases};
use std::process::ExitCode;

pub fn traffic(json: bool, max_blocks: u32) -> ExitCode {
    if !json {
        println!("global-memory bytes the kernels request (no cache), per op at the 553M UNet's shapes (batch 1); at most {max_blocks} sampled blocks per launch, counts scaled to the grid");
        println!("{}", header());
    }
    for (_, build) in unet_cases() {
        for tc in build() {
            match measure(&tc, max_blocks) {
                Ok(o) if json => println!("{}", o.to_json()),
                Ok(o) => {
                    println!("{}", format_row(&o));
                    for l in &o.launches {
                        let s = l.scale();
                        println!(
                            "    {:<36} grid {}x{}x{} ({} of {} blocks run)  read {:.2} MB  written {:.2} MB  {:.3} GFLOP",
                            l.kernel,
                            l.grid.0,
                            l.grid.1,
                            l.grid.2,
                            l.sampled,
                            l.nblocks,
                            l.read() as f64 * s / 1e6,
                            l.written() as f64 * s / 1e6,
                            (l.fma_flops + l.mma_flops) as f64 * s / 1e9
                        );
                    }
                }
                Err(e) => return super::fail(e),
            }
        }
    }
    ExitCode::SUCCESS
}
