//! Image decoding and the official preprocessing against Pillow (tests/fixtures/preprocess.safetensors
//! and tests/fixtures/images/, made by tools/reference/make_image_fixtures.py): every resize and
//! every center_crop_arr must be bit-exact, for RGB, grayscale and RGBA inputs and for masks.

mod common;
use common::fixture_path;
use ran::io::image::{center_crop_arr, load_gray, load_rgb, resize, Filter, Image8};
use ran::io::safetensors::SafeTensors;

fn want(fx: &SafeTensors, k: &str) -> (Vec<usize>, Vec<u8>) {
    let (s, v) = fx.get(k).unwrap_or_else(|e| panic!("{e}"));
    (s, v.iter().map(|&x| x as u8).collect())
}

fn img(name: &str) -> Image8 {
    load_rgb(&fixture_path(&format!("images/{name}.png"))).unwrap()
}

#[test]
fn resize_is_bit_exact_with_pillow() {
    let fx = SafeTensors::open(fixture_path("preprocess.safetensors")).unwrap();
    let mut n = 0;
    for key in fx.names().filter(|k| k.starts_with("resize.")).map(String::from).collect::<Vec<_>>() {
        let parts: Vec<&str> = key.split('.').collect();
        let (w, h) = parts[3].split_once('x').map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())).unwrap();
        let f = if parts[2] == "box" { Filter::Box } else { Filter::Bicubic };
        let got = resize(&img(parts[1]), w, h, f);
        let (s, v) = want(&fx, &key);
        assert_eq!((got.h, got.w, got.c), (s[0], s[1], s[2]), "{key}");
        let diff = got.data.iter().zip(&v).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{key}: {diff} of {} bytes differ", v.len());
        n += 1;
    }
    assert_eq!(n, 16);
}

#[test]
fn center_crop_arr_is_bit_exact_with_pillow() {
    let fx = SafeTensors::open(fixture_path("preprocess.safetensors")).unwrap();
    for (name, sizes) in [("a", &[32usize, 64, 100][..]), ("b", &[32, 64, 100]), ("a_gray", &[64, 100]), ("a_rgba", &[64, 100])] {
        for &size in sizes {
            let got = center_crop_arr(&img(name), size);
            let (_, v) = want(&fx, &format!("crop.{name}.{size}"));
            assert_eq!(got.data, v, "crop.{name}.{size}");
        }
    }
    // masks: same geometry, then only exact 255 is positive
    let m = load_gray(&fixture_path("images/a_mask.png")).unwrap();
    for size in [64, 100] {
        let got: Vec<u8> = center_crop_arr(&m, size).data.iter().map(|&v| (v == 255) as u8).collect();
        assert_eq!(got, want(&fx, &format!("maskcrop.{size}")).1, "maskcrop.{size}");
    }
}

#[test]
fn bad_images_are_named_errors() {
    let dir = std::env::temp_dir().join(format!("ran-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("broken.png");
    let full = std::fs::read(fixture_path("images/b.png")).unwrap();
    std::fs::write(&p, &full[..full.len() / 3]).unwrap();
    let e = load_rgb(&p).unwrap_err().to_string();
    assert!(e.contains("broken.png") && e.contains("cannot decode"), "{e}");
    std::fs::write(&p, b"hello, not an image").unwrap();
    assert!(load_rgb(&p).unwrap_err().to_string().contains("broken.png"));
    assert!(load_rgb(&dir.join("missing.png")).unwrap_err().to_string().contains("missing.png"));
}
