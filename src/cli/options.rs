//! Typed values of the options whose set is closed or has a syntax, so a typo fails while the
//! command line is parsed (clap's error, exit status 2), before any model is read or device probed.

use crate::anomaly::render::{DisplayRange, Threshold};
use crate::backend::select::AnyBackend;
use crate::backend::select::PrecisionDefault;
use crate::io::safetensors::Dtype;
use crate::ops::precision::Precision;

/// `--device`: where the ops run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// the GPU if one is usable, else the CPU
    Auto,
    Cpu,
    /// the GPU of this index (`cuda` is `cuda:0`)
    Cuda(usize),
    /// the CUDA kernels on the CPU emulator (for tests)
    Emulator,
}

pub fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "auto" => Ok(Device::Auto),
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        "emulator" => Ok(Device::Emulator),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(Device::Cuda(n)),
            _ => Err("auto, cpu, cuda, cuda:N or emulator".into()),
        },
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Emulator => f.write_str("emulator"),
        }
    }
}

impl Device {
    /// The backend, or why not (a GPU that is not there).
    pub fn backend(self) -> crate::Result<AnyBackend> {
        AnyBackend::select(&self.to_string())
    }
    /// The backend at the precision `--precision` asked for, or the command's default.
    pub fn backend_at(self, precision: Option<Precision>, default: PrecisionDefault) -> crate::Result<AnyBackend> {
        AnyBackend::select_at(&self.to_string(), precision, default)
    }
}

/// `--precision`: f32, tf32, bf16 or f16 (clap names the flag in its error).
pub fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse::<Precision>().map_err(|e| e.to_string())
}

/// `convert --dtype`: how the weights are stored (computation stays f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightDtype {
    F32,
    F16,
    Bf16,
}

impl WeightDtype {
    pub fn dtype(self) -> Dtype {
        match self {
            WeightDtype::F32 => Dtype::F32,
            WeightDtype::F16 => Dtype::F16,
            WeightDtype::Bf16 => Dtype::BF16,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
            WeightDtype::Bf16 => "bf16",
        }
    }
}

/// `fit-padim --dtype`: how the statistics and the backbone are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PadimDtype {
    F32,
    F16,
}

impl PadimDtype {
    pub fn dtype(self) -> Dtype {
        match self {
            PadimDtype::F32 => Dtype::F32,
            PadimDtype::F16 => Dtype::F16,
        }
    }
}

pub fn parse_range(s: &str) -> Result<DisplayRange, String> {
    DisplayRange::parse(s).map_err(|e| e.to_string())
}

pub fn parse_threshold(s: &str) -> Result<Threshold, String> {
    Threshold::parse(s).map_err(|e| e.to_string())
}

/// A weight of the ensemble: a finite number in [0, 1] (NaN, ±inf or −1 would write null scores).
/// `--max-pixels`: a positive pixel count, plainly or with a suffix K, M or G (powers of 1000),
/// e.g. `64M`; at most 2^40 (the decoders' own bound is lower still).
pub fn parse_max_pixels(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000u64),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
        Some((i, 'g' | 'G')) => (&t[..i], 1_000_000_000),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{s}`: a pixel count such as 64000000 or 64M"))?;
    match n.checked_mul(mult) {
        Some(v) if (1..=1u64 << 40).contains(&v) => Ok(v),
        _ => Err(format!("`{s}`: between 1 and 2^40 pixels")),
    }
}

pub fn parse_alpha(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        Ok(_) => Err("α must be a number in [0, 1]".into()),
        Err(_) => Err("not a number".into()),
    }
}

/// `--shard i/n` with 0 ≤ i < n.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    match s.split_once('/').map(|(i, n)| (i.parse::<usize>(), n.parse::<usize>())) {
        Some((Ok(i), Ok(n))) if n > 0 && i < n => Ok((i, n)),
        _ => Err("i/n with 0 <= i < n expected".into()),
    }
}

/// An EfficientNet variant name that `EffNetConfig::from_name` knows (kept as given).
pub fn parse_effnet_arch(s: &str) -> Result<String, String> {
    crate::models::efficientnet::EffNetConfig::from_name(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

/// A torchvision ResNet name that `ResNetConfig::from_name` knows (kept as given).
pub fn parse_resnet_arch(s: &str) -> Result<String, String> {
    crate::models::resnet::ResNetConfig::from_name(s).map(|_| s.to_string()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::score::FeatureTimestep;
    use crate::anomaly::settings::EnsembleKind;
    use crate::eval::pro_variant::ProVariant;
    use clap::ValueEnum;

    /// The backend is chosen from the device's printed form: it must be one `AnyBackend::select` reads.
    #[test]
    fn devices_print_as_select_reads_them() {
        for (s, d) in [("auto", Device::Auto), ("cpu", Device::Cpu), ("cuda", Device::Cuda(0)), ("cuda:3", Device::Cuda(3)), ("emulator", Device::Emulator)] {
            assert_eq!(parse_device(s), Ok(d), "{s}");
            assert_eq!(parse_device(&d.to_string()), Ok(d));
        }
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", ""] {
            assert!(parse_device(bad).is_err(), "{bad}");
        }
        // the CPU backend comes back for `cpu` (nothing else can be built on every machine)
        assert!(matches!(Device::Cpu.backend(), Ok(AnyBackend::Cpu(_))));
    }

    #[test]
    fn shards_are_i_of_n() {
        assert_eq!(parse_shard("0/2"), Ok((0, 2)));
        assert_eq!(parse_shard("1/2"), Ok((1, 2)));
        for bad in ["2/2", "0/0", "1", "a/b", "-1/2", "1/2/3"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    /// results.json and the eval cache's settings.json record these spellings: they must stay
    /// those the command line takes (a drift would make every old cache look foreign).
    #[test]
    fn recorded_names_are_the_command_line_spellings() {
        let clap_name = |v: clap::builder::PossibleValue| v.get_name().to_string();
        for e in EnsembleKind::value_variants() {
            assert_eq!(clap_name(e.to_possible_value().unwrap()), e.name());
        }
        for f in FeatureTimestep::value_variants() {
            assert_eq!(clap_name(f.to_possible_value().unwrap()), f.name());
        }
        for p in ProVariant::value_variants() {
            assert_eq!(clap_name(p.to_possible_value().unwrap()), p.name());
        }
        for w in WeightDtype::value_variants() {
            assert_eq!(clap_name(w.to_possible_value().unwrap()), w.name());
        }
        assert_eq!(FeatureTimestep::RespacedIndex.name(), "index");
        assert_eq!(ProVariant::OfficialRepo.name(), "official-repo");
    }
}
