//! Weights from an f16 file stay f16 on the CPU (backend/cpu/resident.rs) and are widened per
//! use. f16 → f32 is exact, so a model loaded from an f16 file must compute the very bits of the
//! same model loaded from an f32 file holding the same (f16-representable) values — the f32 file
//! takes the old path (f32 at load), which is the independent reference here. Bitwise equality
//! is the tolerance: any difference is a bug (a stale pooled buffer read as a weight, a part of
//! a stacked weight taken at the wrong offset, a transformed Winograd weight of another tensor).

use half::f16;
use ran::backend::cpu::resident::{self, MIN_F16_LEN};
use ran::backend::Conv2dParams;
use ran::bench::workloads;
use ran::io::flags::ModelFlags;
use ran::io::safetensors::{write_streaming, Dtype, SafeTensors};
use ran::models::efficientnet::{EffNetConfig, EfficientNet};
use ran::models::load_unet;
use ran::models::unet::UNet;
use ran::models::weights::{synth_values, Loader, Synthetic};
use ran::{Backend, Cpu, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// 128 channels at 32² (Winograd under RAN_CONV=auto: ≥ 128 channels, 64 tiles per image) and
/// 16², 8², 4² below it (the direct conv); 12 output blocks, so the feature head (tap 10) is there.
const FLAGS: &str = "--image_size 32 --num_channels 128 --num_res_blocks 2 --attention_resolutions 8 --num_head_channels 64 \
--resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 3 --channel_mult 1,1,2,2 --feat_shape 8";

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn to_f16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// Seeded values already on the f16 grid (the f32 file then holds exactly what the f16 one does).
fn f16_grid(seed: u64, name: &str, shape: &[usize]) -> Vec<f32> {
    let mut v = synth_values(seed, name, shape);
    if name.ends_with("running_var") {
        v.iter_mut().for_each(|x| *x = 0.5 + x.abs());
    }
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ran-f16-weights-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// The same tensors written as f16 and as f32.
fn write_twins(stem: &str, entries: &[(String, Vec<usize>)], meta: &BTreeMap<String, String>) -> (PathBuf, PathBuf) {
    let shape = |n: &str| entries.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let (p16, p32) = (tmp(&format!("{stem}-f16.safetensors")), tmp(&format!("{stem}-f32.safetensors")));
    write_streaming(&p16, entries, |n| Ok(f16_grid(1, n, &shape(n))), meta, Dtype::F16).unwrap();
    write_streaming(&p32, entries, |n| Ok(f16_grid(1, n, &shape(n))), meta, Dtype::F32).unwrap();
    (p16, p32)
}

fn is_f16(t: &Tensor<Cpu>) -> bool {
    t.storage().as_f16().is_some()
}

/// Tensors of at least MIN_F16_LEN values from an f16 file are held f16 (unless
/// RAN_CPU_F16_WEIGHTS=0); small ones, and every tensor of an f32 file, are f32.
fn check_residency(p16: &Path, p32: &Path, big: (&str, &[usize]), small: (&str, &[usize])) {
    assert!(big.1.iter().product::<usize>() >= MIN_F16_LEN && small.1.iter().product::<usize>() < MIN_F16_LEN);
    let on = resident::enabled().unwrap();
    let (s16, s32) = (SafeTensors::open(p16).unwrap(), SafeTensors::open(p32).unwrap());
    let (l16, l32) = (Loader::new(&s16, &Cpu), Loader::new(&s32, &Cpu));
    assert_eq!(is_f16(&l16.tensor(big.0, big.1).unwrap()), on, "{} from the f16 file", big.0);
    assert!(!is_f16(&l16.tensor(small.0, small.1).unwrap()), "{} is small: f32", small.0);
    assert!(!is_f16(&l32.tensor(big.0, big.1).unwrap()), "an f32 file stays f32");
}

#[test]
fn a_unet_from_an_f16_file_computes_the_bits_of_its_f32_twin() {
    let flags = ModelFlags::parse(FLAGS).unwrap();
    let mut shapes = BTreeMap::new();
    shapes.insert("label_emb.weight".to_string(), vec![3, 512]);
    shapes.insert("feat_rec1.0.weight".to_string(), vec![workloads::feat_tap_channels(&flags).unwrap()]);
    let l = Loader::synthetic(&Cpu, Synthetic { seed: 1, shapes });
    UNet::load(&flags, &l).unwrap();
    let mut meta = BTreeMap::new();
    meta.insert("model_flags".to_string(), FLAGS.to_string());
    let (p16, p32) = write_twins("unet", &l.loaded(), &meta);
    check_residency(&p16, &p32, ("input_blocks.1.0.in_layers.2.weight", &[128, 128, 3, 3]), ("input_blocks.1.0.in_layers.2.bias", &[128]));

    let (m16, m32): (UNet<Cpu>, UNet<Cpu>) = (load_unet(&p16, &Cpu, &[]).unwrap(), load_unet(&p32, &Cpu, &[]).unwrap());
    let inp = workloads::unet_inputs(&Cpu, &flags, 2).unwrap();
    let run = |m: &UNet<Cpu>| {
        let o = m.forward(&Cpu, &inp.x, &inp.t, inp.y.as_deref()).unwrap();
        (Cpu.to_host(&o.out).unwrap(), Cpu.to_host(o.feat.as_ref().expect("the head")).unwrap())
    };
    let want = run(&m32);
    assert!(want.0.iter().chain(&want.1).all(|v| v.is_finite()));
    // twice: the second forward runs on pooled buffers and cached Winograd weights
    for pass in 0..2 {
        let got = run(&m16);
        assert!(bits(&got.0) == bits(&want.0) && bits(&got.1) == bits(&want.1), "pass {pass}: the f16-resident model differs");
    }
    let _ = std::fs::remove_file(p16);
    let _ = std::fs::remove_file(p32);
}

#[test]
fn an_efficientnet_from_an_f16_file_computes_the_bits_of_its_f32_twin() {
    let cfg = EffNetConfig::from_name("efficientnet-b0").unwrap();
    let l = Loader::synthetic(&Cpu, Synthetic { seed: 1, shapes: BTreeMap::new() });
    EfficientNet::load(&cfg, &l).unwrap();
    let entries = l.loaded();
    let se = entries.iter().find(|(n, s)| n.contains("_se_expand.weight") && s.iter().product::<usize>() >= MIN_F16_LEN).expect("a large squeeze-excite weight").clone();
    let (p16, p32) = write_twins("effnet", &entries, &BTreeMap::new());
    let bias = se.0.replace(".weight", ".bias");
    check_residency(&p16, &p32, (&se.0, &se.1), (&bias, &[se.1[0]]));

    let load = |p: &Path| {
        let st = SafeTensors::open(p).unwrap();
        EfficientNet::load(&cfg, &Loader::new(&st, &Cpu)).unwrap()
    };
    let (e16, e32) = (load(&p16), load(&p32));
    for batch in [1, 2] {
        // batch 1 and 2 gate squeeze-excite differently (ConvBn::forward_input_scaled)
        let x = workloads::images(&Cpu, batch, 64).unwrap();
        let want = Cpu.to_host(&e32.features(&Cpu, &x, 8).unwrap()).unwrap();
        let got = Cpu.to_host(&e16.features(&Cpu, &x, 8).unwrap()).unwrap();
        assert!(want.iter().all(|v| v.is_finite()));
        assert!(bits(&got) == bits(&want), "batch {batch}: the f16-resident extractor differs");
    }
    let _ = std::fs::remove_file(p16);
    let _ = std::fs::remove_file(p32);
}

/// (f16-resident, f32) tensors of the same seeded values on the f16 grid.
fn twin(dims: &[usize], seed: u64) -> (Tensor<Cpu>, Tensor<Cpu>) {
    let v = f16_grid(seed, "w", dims);
    let h = Cpu.from_host_f16(dims, to_f16(&v)).unwrap();
    (h, Cpu.from_host(dims, &v).unwrap())
}

fn same(a: &Tensor<Cpu>, b: &Tensor<Cpu>, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}");
    assert!(bits(&Cpu.to_host(a).unwrap()) == bits(&Cpu.to_host(b).unwrap()), "{what}: differs");
}

#[test]
fn every_weight_op_reads_an_f16_weight_as_its_f32_twin_also_when_used_twice() {
    if !resident::enabled().unwrap() {
        eprintln!("RAN_CPU_F16_WEIGHTS=0: the op checks below compare f32 with f32");
    }
    let x = workloads::rand_tensor(&Cpu, &[2, 128, 32, 32], 1).unwrap();
    let p = Conv2dParams::new(1, 1, 1);
    // Winograd (128 → 128 at 32²) and direct (a 3×3 stride-2 conv), each weight used twice in one chain
    for (w_dims, p) in [([128, 128, 3, 3], p), ([128, 128, 3, 3], Conv2dParams::new(2, 1, 1))] {
        let (w16, w32) = twin(&w_dims, 2);
        assert_eq!(is_f16(&w16), resident::enabled().unwrap());
        let (b16, b32) = twin(&[128], 3);
        let chain = |w: &Tensor<Cpu>, b: &Tensor<Cpu>| {
            let y1 = Cpu.conv2d(&x, w, Some(b), &p).unwrap();
            let y2 = Cpu.conv2d(&Cpu.activation(&y1, ran::backend::Activation::Silu).unwrap(), w, Some(b), &Conv2dParams::new(1, 1, 1)).unwrap();
            let gx = Cpu.conv2d_x_backward(&y2, w, y1.shape(), &Conv2dParams::new(1, 1, 1)).unwrap();
            (y1, y2, gx)
        };
        let (a, b) = (chain(&w16, &b16), chain(&w32, &b32));
        same(&a.0, &b.0, "first use");
        same(&a.1, &b.1, "second use");
        same(&a.2, &b.2, "input gradient");
    }
    // linear twice, and the UNet's stacked projections: concat of f16 weights stays f16
    let xs = workloads::rand_tensor(&Cpu, &[3, 256], 4).unwrap();
    let ((wa16, wa32), (wb16, wb32)) = (twin(&[128, 256], 5), twin(&[192, 256], 6));
    let (bias16, bias32) = twin(&[320], 7);
    for _ in 0..2 {
        same(&Cpu.linear(&xs, &wa16, None).unwrap(), &Cpu.linear(&xs, &wa32, None).unwrap(), "linear");
    }
    let stack = |a: &Tensor<Cpu>, b: &Tensor<Cpu>| {
        let parts = [Cpu.reshape(a, &[1, 128 * 256]).unwrap(), Cpu.reshape(b, &[1, 192 * 256]).unwrap()];
        Cpu.reshape(&Cpu.concat_channels(&[&parts[0], &parts[1]]).unwrap(), &[320, 256]).unwrap()
    };
    let (s16, s32) = (stack(&wa16, &wb16), stack(&wa32, &wb32));
    assert_eq!(is_f16(&s16), resident::enabled().unwrap(), "a stack of f16 weights stays f16");
    same(&s16, &s32, "stacked weights");
    same(&Cpu.linear_parts(&xs, &s16, Some(&bias16), &[128, 192]).unwrap(), &Cpu.linear_parts(&xs, &s32, Some(&bias32), &[128, 192]).unwrap(), "linear_parts");
    same(&Cpu.linear_x_backward(&Cpu.linear(&xs, &wa16, None).unwrap(), &wa16).unwrap(), &Cpu.linear_x_backward(&Cpu.linear(&xs, &wa32, None).unwrap(), &wa32).unwrap(), "linear input gradient");
    // an embedding table and a mixed concat (f16 with f32: the result is f32)
    let (t16, t32) = twin(&[40, 1024], 8);
    same(&Cpu.embedding(&t16, &[3, 0, 3]).unwrap(), &Cpu.embedding(&t32, &[3, 0, 3]).unwrap(), "embedding");
    let mixed = Cpu.concat_channels(&[&t16, &t32]).unwrap();
    assert!(!is_f16(&mixed));
    same(&mixed, &Cpu.concat_channels(&[&t32, &t32]).unwrap(), "mixed concat");
    // a small f16 weight is widened at once
    assert!(!is_f16(&Cpu.from_host_f16(&[MIN_F16_LEN - 1], vec![f16::ONE; MIN_F16_LEN - 1]).unwrap()));
}

#[test]
fn a_non_finite_f16_weight_is_refused_by_name() {
    let p = tmp("nan.safetensors");
    let n = MIN_F16_LEN;
    write_streaming(&p, &[("w".to_string(), vec![n])], |_| Ok((0..n).map(|i| if i == 7 { f32::INFINITY } else { 0.5 }).collect()), &BTreeMap::new(), Dtype::F16).unwrap();
    let st = SafeTensors::open(&p).unwrap();
    let e = Loader::new(&st, &Cpu).tensor("w", &[n]).unwrap_err().to_string();
    assert!(e.contains("nan.safetensors") && e.contains('w') && e.contains("#7") && e.contains("finite"), "{e}");
    let e = Loader::new(&st, &Cpu).tensor("w", &[n, 1]).unwrap_err().to_string();
    assert!(e.contains("shape"), "a wrong shape is named before the data is read: {e}");
    let _ = std::fs::remove_file(p);
}
