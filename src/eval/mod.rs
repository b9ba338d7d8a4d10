//! Evaluation: exact metrics (pixel/image AUROC, AU-PRO), data set layouts and class lists, the
//! inputs of a command line, the map cache of `ran eval`, its per-category metrics and reports,
//! and the result files of detect and reconstruct.

pub mod alpha_sweep;
pub mod cache;
pub mod category;
pub mod datasets;
pub mod detect_results;
pub mod inputs;
pub mod metrics;
pub mod pictures;
pub mod pro_variant;
pub mod reconstruct_results;
pub mod report;
pub mod results;
pub mod summary;
pub mod tables;
