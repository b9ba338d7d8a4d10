//! Evaluation: exact metrics (pixel/image AUROC, AU-PRO) and data set layouts.

pub mod datasets;
pub mod metrics;
pub mod report;
