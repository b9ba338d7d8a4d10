//! The safetensors reader and the weight-file dispatch: any bytes give tensors or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
include!("common.rs");

fuzz_target!(|data: &[u8]| {
    let p = scratch_file("safetensors", data);
    if let Ok(st) = ran::io::safetensors::SafeTensors::open(&p) {
        let names: Vec<String> = st.names().map(String::from).collect();
        for n in names {
            let _ = st.get(&n);
            let _ = st.get_f64(&n);
        }
        let _ = st.metadata().get("model_flags").map(|f| ran::io::flags::ModelFlags::parse(f));
    }
    let _ = ran::models::open_weights(&p);
});
