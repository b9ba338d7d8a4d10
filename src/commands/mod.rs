//! The `ran` subcommands (one file each); main.rs only parses arguments and dispatches.

pub mod calibrate;
pub mod convert;
pub mod detect;
pub mod eval;
pub mod fit_padim;
pub mod metrics;
pub mod reconstruct;
pub mod verify;
pub mod verify_train;
