//! The paper's anomaly scores (docs/method.md §1–§3): the KL map, the feature map, their ensemble and the
//! image score; seeded noise so that the same seed gives the same map. Around them: the settings
//! they are computed with, the loaded detector, calibration and classes.

pub mod alpha_table;
pub mod calibration;
pub mod calibration_file;
pub mod class_score;
pub mod classes;
pub mod detector;
pub mod noise;
pub mod padim;
pub mod padim_file;
pub mod reconstruct;
pub mod render;
pub mod score;
pub mod settings;
pub mod threshold;
