//! `ran bench`: time the engine's main workloads on random weights (UNet forward, EfficientNet
//! features, the ResNet gradient of gradient denoising, full detection, one convolution) and
//! report times, FLOP rate and the share of the machine's ceiling, so each can be put beside its
//! PyTorch twin (tools/bench/torch_*.py, tools/bench/compare.sh). The cargo benches
//! (benches/*.rs) build their models from `workloads` too.

pub mod measure;
pub mod report;
pub mod run;
pub mod workloads;
