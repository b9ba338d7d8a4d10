//! Gaussian diffusion (guided-diffusion / improved-diffusion maths, docs/method.md §7): schedules and their
//! f64 tables on the host (`schedule`), and the per-timestep coefficients that the backends'
//! step ops (q_sample, p_mean_variance, kl_bits, p_sample, ddim_step) take.

pub mod schedule;

pub use schedule::{space_timesteps, BetaSchedule, Diffusion};
