//! The paper's anomaly scores (spec §1–§3): the KL map, the feature map, their ensemble and the
//! image score; seeded noise so that the same seed gives the same map.

pub mod noise;
pub mod padim;
pub mod padim_file;
pub mod reconstruct;
pub mod render;
pub mod score;
