//! Image decoding and the official preprocessing: any bytes give an image (then a centre crop
//! of the size the first byte picks) or an error naming the file, within a small pixel limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
include!("common.rs");

fuzz_target!(|data: &[u8]| {
    let Some((&size, bytes)) = data.split_first() else { return };
    let p = scratch_file("img", bytes);
    let lim = ran::io::image::ImageLimits { max_pixels: 1 << 20 };
    if let Ok(img) = ran::io::image::load_rgb_limited(&p, &lim) {
        let size = 1 + size as usize % 64;
        let out = ran::io::image::center_crop_arr(&img, size);
        assert_eq!((out.w, out.h, out.data.len()), (size, size, size * size * 3));
        let _ = ran::io::image::to_chw(&out);
    }
    let _ = ran::io::image::load_gray_limited(&p, &lim);
});
