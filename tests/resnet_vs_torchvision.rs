//! The ResNet feature extractor (PaDiM's backbone) against torchvision (tests/fixtures/
//! resnet_small.safetensors, made by tools/reference/make_resnet_fixtures.py): a scaled-down
//! Bottleneck ResNet, layer1–3 outputs on CPU and emulated CUDA; and wide_resnet50_2's layer 1–3
//! parameter count against torchvision's.

mod common;
use common::*;
use ran::backend::cuda::EmulatedCuda;
use ran::io::safetensors::SafeTensors;
use ran::models::resnet::{ResNet, ResNetConfig};
use ran::models::weights::{Loader, Synthetic};
use ran::{Backend, Cpu};

fn run<B: Backend>(b: &B, fx: &SafeTensors) -> Vec<String> {
    let m = fx.metadata();
    let blocks: Vec<usize> = serde_json::from_str(&m["layers"]).unwrap();
    let cfg = ResNetConfig { blocks: [blocks[0], blocks[1], blocks[2]], width_per_group: m["width_per_group"].parse().unwrap() };
    let l = Loader::new(fx, b).ignoring(&["x", "layer1", "layer2", "layer3"]).ignoring_prefixes(ResNet::<B>::unused_prefixes());
    let net = ResNet::load(&cfg, &l).unwrap();
    l.finish().unwrap();
    let (xs, xv) = fx.get("x").unwrap();
    let outs = net.layers(b, &b.from_host(&xs, &xv).unwrap()).unwrap();
    let mut fails = Vec::new();
    for (i, o) in outs.iter().enumerate() {
        let (s, want) = fx.get(&format!("layer{}", i + 1)).unwrap();
        assert_eq!(o.dims(), &s[..]);
        if let Err(e) = check_close(&format!("[{}] layer{}", b.name(), i + 1), &b.to_host(o).unwrap(), &want, 3e-5, 1e-4) {
            fails.push(e);
        }
    }
    fails
}

#[test]
fn resnet_layers_match_torchvision() {
    let fx = SafeTensors::open(fixture_path("resnet_small.safetensors")).unwrap();
    let mut f = run(&Cpu, &fx);
    f.extend(run(&EmulatedCuda::emulated(), &fx));
    assert!(f.is_empty(), "{}", f.join("\n"));
}

#[test]
fn wide_resnet50_2_has_torchvisions_parameter_count() {
    let fx = SafeTensors::open(fixture_path("resnet_small.safetensors")).unwrap();
    let l = Loader::synthetic(&Cpu, Synthetic { seed: 2, shapes: Default::default() });
    ResNet::load(&ResNetConfig::from_name("wide_resnet50_2").unwrap(), &l).unwrap();
    let params: usize = l.loaded().iter().filter(|(n, _)| !n.contains("running_")).map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(params, fx.metadata()["wide_resnet50_2_params_l123"].parse::<usize>().unwrap());
}
