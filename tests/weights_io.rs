//! safetensors reading: dtype conversion, and a clear error (never a panic) for every kind of bad
//! file — truncated, bad header, unknown dtype, missing tensor, wrong shape, NaN.

#[path = "common/paths.rs"]
mod paths;

use ran::io::safetensors::{write_f32, SafeTensors};
use ran::Error;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ran-weights-io-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// A file with one tensor of the given dtype name and raw bytes, written by hand.
fn raw_file(name: &str, dtype: &str, shape: &[usize], data: &[u8]) -> PathBuf {
    let header = serde_json::json!({ "w": {"dtype": dtype, "shape": shape, "data_offsets": [0, data.len()]} });
    let h = serde_json::to_vec(&header).unwrap();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(data);
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn err_text(r: Result<impl Sized, Error>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn roundtrip_f32_with_metadata() {
    let p = tmp("roundtrip.safetensors");
    let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    let b = vec![1.5f32, -3.25];
    let mut meta = BTreeMap::new();
    meta.insert("model_flags".to_string(), "--num_channels 32".to_string());
    write_f32(&p, &[("a", &[3, 4], &a), ("b.bias", &[2], &b)], &meta).unwrap();
    let f = SafeTensors::open(&p).unwrap();
    assert_eq!(f.get("a").unwrap(), (vec![3, 4], a));
    assert_eq!(f.get_shaped("b.bias", &[2]).unwrap(), b);
    assert_eq!(f.metadata()["model_flags"], "--num_channels 32");
    assert_eq!(f.names().collect::<Vec<_>>(), vec!["a", "b.bias"]);
}

#[test]
fn half_precision_and_f64_convert_on_load() {
    let vals = [0.5f32, -2.0, 1.0e-3, 65504.0];
    let f16: Vec<u8> = vals.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16: Vec<u8> = vals.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let f64b: Vec<u8> = vals.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect();
    for (dt, data) in [("F16", f16), ("BF16", bf16), ("F64", f64b)] {
        let p = raw_file(&format!("{dt}.safetensors"), dt, &[2, 2], &data);
        let (shape, got) = SafeTensors::open(&p).unwrap().get("w").unwrap();
        assert_eq!(shape, vec![2, 2]);
        for (g, v) in got.iter().zip(vals) {
            let want = match dt {
                "F16" => half::f16::from_f32(v).to_f32(),
                "BF16" => half::bf16::from_f32(v).to_f32(),
                _ => v,
            };
            assert_eq!(*g, want, "{dt}");
        }
    }
}

#[test]
fn truncated_file_names_the_tensor() {
    let p = tmp("trunc.safetensors");
    write_f32(&p, &[("first", &[4], &[1.0; 4]), ("second", &[8], &[2.0; 8])], &BTreeMap::new()).unwrap();
    let full = std::fs::read(&p).unwrap();
    std::fs::write(&p, &full[..full.len() - 5]).unwrap();
    let e = err_text(SafeTensors::open(&p));
    assert!(e.contains("second") && e.contains("truncated") && e.contains("trunc.safetensors"), "{e}");
    // cut inside the header
    std::fs::write(&p, &full[..20]).unwrap();
    let e = err_text(SafeTensors::open(&p));
    assert!(e.contains("header length"), "{e}");
    // shorter than the length prefix
    std::fs::write(&p, &full[..3]).unwrap();
    assert!(err_text(SafeTensors::open(&p)).contains("shorter than the 8-byte"));
    std::fs::write(&p, b"").unwrap();
    assert!(err_text(SafeTensors::open(&p)).contains("0 bytes"));
}

#[test]
fn corrupt_header_is_an_error() {
    let p = tmp("corrupt.safetensors");
    let mut bytes = 10u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{not json}");
    std::fs::write(&p, &bytes).unwrap();
    assert!(err_text(SafeTensors::open(&p)).contains("not valid JSON"));
    // a PNG (or any other file) given as weights
    let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    png.extend_from_slice(&[0u8; 64]);
    std::fs::write(&p, &png).unwrap();
    assert!(err_text(SafeTensors::open(&p)).contains("not a safetensors file"));
    // offsets that do not match the shape
    let q = raw_file("offsets.safetensors", "F32", &[3], &[0u8; 8]);
    let e = err_text(SafeTensors::open(&q));
    assert!(e.contains("`w`") && e.contains("needs 12"), "{e}");
}

#[test]
fn unknown_dtype_missing_tensor_wrong_shape_and_nan() {
    let p = raw_file("bool.safetensors", "BOOL", &[8], &[0u8; 8]);
    let e = err_text(SafeTensors::open(&p));
    assert!(e.contains("BOOL") && e.contains("`w`"), "{e}");
    // integer tensors of reference files (timesteps, labels) read as f32
    let p = raw_file("i64.safetensors", "I64", &[2], &[5u8, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(SafeTensors::open(&p).unwrap().get("w").unwrap().1, vec![5.0, -1.0]);

    let p = tmp("ok.safetensors");
    write_f32(&p, &[("conv.weight", &[2, 3], &[0.0; 6])], &BTreeMap::new()).unwrap();
    let f = SafeTensors::open(&p).unwrap();
    let e = err_text(f.get("conv.bias"));
    assert!(e.contains("conv.bias") && e.contains("missing"), "{e}");
    let e = err_text(f.get_shaped("conv.weight", &[3, 2]));
    assert!(e.contains("conv.weight") && e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");

    let p = tmp("nan.safetensors");
    write_f32(&p, &[("w", &[3], &[1.0, f32::NAN, 2.0])], &BTreeMap::new()).unwrap();
    let e = err_text(SafeTensors::open(&p).unwrap().get("w"));
    assert!(e.contains("NaN") && e.contains("`w`"), "{e}");

    let e = err_text(SafeTensors::open(tmp("does-not-exist.safetensors")));
    assert!(e.contains("does-not-exist.safetensors"), "{e}");
}

/// The fixture file itself was written by the Python `safetensors` package: reading it is an
/// interoperability check of our reader against the reference writer.
#[test]
fn reads_files_written_by_python_safetensors() {
    let p = paths::fixture_path("ops.safetensors");
    let f = SafeTensors::open(&p).unwrap();
    assert!(f.names().count() > 200);
    assert!(f.metadata().contains_key("__generator__"));
    let (shape, v) = f.get("mean_std.y").unwrap();
    assert_eq!(shape, vec![2]);
    assert!(v[1] > 1.0, "std of 2·N(0,1) data");
}
