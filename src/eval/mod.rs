//! Evaluation: exact metrics (pixel/image AUROC, AU-PRO), data set layouts and class lists, the
//! inputs of a command line, the map cache of `ran eval`, its per-category metrics and reports.

pub mod alpha_sweep;
pub mod cache;
pub mod category;
pub mod datasets;
pub mod inputs;
pub mod metrics;
pub mod pictures;
pub mod pro_variant;
pub mod report;
pub mod results;
pub mod summary;
pub mod tables;
