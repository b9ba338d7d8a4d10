//! The .pt reader (zip + pickle VM): any bytes give tensors or an error, never a panic, a stack
//! overflow or an allocation beyond the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ran::models::weights::Weights;
include!("common.rs");

fuzz_target!(|data: &[u8]| {
    let p = scratch_file("pt", data);
    if let Ok(pt) = ran::io::pt::PtFile::open(&p) {
        for n in pt.names() {
            let _ = pt.shape(&n);
            let _ = pt.get(&n);
        }
    }
});
