//! Settings parsers: model flags (as in a model's metadata), EfficientNet names, respacings.
//! Whatever they accept must also build a diffusion schedule without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(f) = ran::io::flags::ModelFlags::parse(s) {
        let _ = f.channel_mult();
        let _ = f.attention_ds();
        // accepted flags are usable: the schedule they name can be built
        if f.diffusion_steps <= 20_000 {
            let sched = ran::diffusion::schedule::BetaSchedule::parse(&f.noise_schedule).expect("validated by parse");
            ran::diffusion::schedule::Diffusion::new(sched, f.diffusion_steps, &f.timestep_respacing).expect("validated by parse");
        }
    }
    if let Ok(cfg) = ran::models::efficientnet::EffNetConfig::from_name(s) {
        let _ = cfg.stage_ends();
        let _ = cfg.tap_channels();
        let _ = ran::models::efficientnet::EfficientNet::<ran::Cpu>::unused_prefixes(&cfg);
    }
    if let Some((steps, spec)) = s.split_once(';') {
        if let Ok(steps) = steps.trim().parse::<usize>() {
            if steps <= 20_000 {
                let _ = ran::diffusion::schedule::check_respacing(steps, spec);
            }
        }
    }
});
