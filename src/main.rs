//! `ran` command line: parse the arguments (src/cli/) and run the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    ran::heap::keep_freed_buffers();
    ran::cli::run(ran::cli::Cli::parse())
}
