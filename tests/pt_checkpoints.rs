//! PyTorch .pt checkpoints read in Rust: a state_dict written by torch.save from upstream's
//! UNetModel (tests/fixtures/unet_tiny_pt.pt, float16 storages) gives the same tensors as the
//! safetensors copy of that model, builds the model, and bad files are named errors.

mod common;
use common::*;
use ran::io::flags::ModelFlags;
use ran::io::pt::PtFile;
use ran::io::safetensors::SafeTensors;
use ran::models::unet::UNet;
use ran::models::weights::{Loader, Weights};
use ran::{Backend, Cpu};

#[test]
fn pt_state_dict_equals_the_safetensors_copy() {
    let pt = PtFile::open(fixture_path("unet_tiny_pt.pt")).unwrap();
    let st = SafeTensors::open(fixture_path("unet_guided_plain.safetensors")).unwrap();
    let names = pt.names();
    assert!(names.len() > 50, "{} tensors", names.len());
    for n in &names {
        let (s1, v1) = pt.get(n).unwrap();
        let (s2, v2) = Weights::get(&st, n).unwrap();
        assert_eq!(s1, s2, "{n} shape");
        assert_eq!(v1, v2, "{n} values");
    }
}

#[test]
fn unet_runs_from_the_pt_file() {
    let pt = PtFile::open(fixture_path("unet_tiny_pt.pt")).unwrap();
    let flags = ModelFlags::parse(std::fs::read_to_string(fixture_path("unet_tiny_pt.flags")).unwrap().trim()).unwrap();
    let l = Loader::new(&pt, &Cpu);
    let m = UNet::load(&flags, &l).unwrap();
    l.finish().unwrap();
    let fx = SafeTensors::open(fixture_path("unet_guided_plain.safetensors")).unwrap();
    let load = |k: &str| {
        let (s, v) = fx.get(k).unwrap();
        Cpu.from_host(&s, &v).unwrap()
    };
    let o = m.forward(&Cpu, &load("x"), &load("t"), None).unwrap();
    check_close("out from .pt", &Cpu.to_host(&o.out).unwrap(), &fx.get("out").unwrap().1, 3e-5, 1e-4).unwrap();
}

#[test]
fn bad_pt_files_are_errors() {
    let dir = std::env::temp_dir().join(format!("ran-pt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let full = std::fs::read(fixture_path("unet_tiny_pt.pt")).unwrap();
    let p = dir.join("trunc.pt");
    std::fs::write(&p, &full[..full.len() / 2]).unwrap();
    let e = PtFile::open(&p).err().expect("truncated must fail").to_string();
    assert!(e.contains("trunc.pt"), "{e}");
    std::fs::write(&p, b"\x89PNG not a checkpoint").unwrap();
    let e = PtFile::open(&p).err().expect("png must fail").to_string();
    assert!(e.contains("not a PyTorch zip checkpoint"), "{e}");
    let pt = PtFile::open(fixture_path("unet_tiny_pt.pt")).unwrap();
    assert!(pt.get("no.such.tensor").unwrap_err().to_string().contains("missing"));
}
