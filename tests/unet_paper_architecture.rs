//! The paper's 553M-parameter guided-diffusion 256² UNet (+ the anomaly feature head) instantiates
//! from its flags (docs/method.md §6) with exactly the documented parameter and tensor counts, and its layer
//! layout matches the table of docs/method.md §6 at the points the method relies on.

use ran::io::flags::ModelFlags;
use ran::models::unet::UNet;
use ran::models::weights::{Loader, Synthetic};
use ran::Cpu;

pub const PAPER_FLAGS: &str = "--image_size 256 --num_channels 256 --num_res_blocks 2 --attention_resolutions 32,16,8 \
--num_head_channels 64 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True \
--num_classes 15 --channel_mult 1,1,2,2,4,4";

#[test]
fn paper_unet_has_the_spec_parameter_count() {
    let flags = ModelFlags::parse(PAPER_FLAGS).unwrap();
    let mut shapes = std::collections::BTreeMap::new();
    shapes.insert("label_emb.weight".to_string(), vec![15, 1024]);
    shapes.insert("feat_rec1.0.weight".to_string(), vec![512]);
    let l = Loader::synthetic(&Cpu, Synthetic { seed: 1, shapes });
    let m = UNet::load(&flags, &l).unwrap();
    let loaded = l.loaded();
    let params: usize = loaded.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    // docs/method.md §6: "552,970,006 parameters in 571 tensors"
    assert_eq!(loaded.len(), 571, "tensor count");
    assert_eq!(params, 552_970_006, "parameter count");
    assert!(m.feat_head.is_some());
    let get = |n: &str| loaded.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone()).unwrap_or_else(|| panic!("{n} not loaded"));
    assert_eq!(get("input_blocks.7.0.skip_connection.weight"), vec![512, 256, 1, 1]);
    assert_eq!(get("input_blocks.13.1.qkv.weight"), vec![3072, 1024, 1]);
    assert_eq!(get("output_blocks.10.0.out_layers.3.weight"), vec![512, 512, 3, 3]);
    assert_eq!(get("output_blocks.8.2.in_layers.2.weight"), vec![512, 512, 3, 3]); // ↑ after attention
    assert_eq!(get("output_blocks.14.1.in_layers.2.weight"), vec![256, 256, 3, 3]); // ↑, no attention at 128²
    assert_eq!(get("feat_rec1.2.weight"), vec![272, 512, 1, 1]);
    assert_eq!(get("out.2.weight"), vec![6, 256, 3, 3]);
}
