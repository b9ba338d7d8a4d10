//! The one op table (ggml's test-backend-ops): every Backend method once, with how to run it on
//! any backend from a case, its tolerance and its work. It drives the CPU-vs-torch fixture test
//! (tests/ops_vs_torch.rs), the coverage check, the cross-backend suite on the emulator and the
//! GPU (tests/backends_agree.rs) and the kernel benchmarks (benches/kernels.rs).

pub mod case;
pub mod compare;
pub mod fixtures;
pub mod fused;
pub mod precision;
pub mod run;
pub mod sizes;
pub mod table;
pub mod tc_cases;
pub mod traffic;

pub use case::OpCase;
pub use run::{run_method, Inputs, Outputs};
pub use table::{entries_for, entry, Entry, Tol, Work, TABLE};
