//! The CPU backend reuses freed buffers (src/backend/cpu/buffers.rs) and hands whole-written
//! outputs out without zeroing. A model run again on recycled buffers must give the same bits:
//! with poisoning on (every such buffer NaN-filled first) an op that leaves an element unwritten
//! shows as a non-finite output, and with poisoning off as a run that differs from the first.

use ran::backend::cpu::buffers::set_poison;
use ran::bench::workloads;
use ran::io::flags::ModelFlags;
use ran::{Backend, Cpu};

/// Large enough that every activation is pooled (≥ 16 Ki values): 64 channels at 32².
const FLAGS: &str = "--image_size 32 --num_channels 64 --num_res_blocks 1 --attention_resolutions 16 --num_head_channels 32 \
--resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 3 --channel_mult 1,2";

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn a_forward_on_recycled_buffers_gives_the_same_bits() {
    let flags = ModelFlags::parse(FLAGS).unwrap();
    // the head taps output_blocks[10]: needs 11 output blocks, so use a deeper variant for it
    let head_flags = ModelFlags::parse(&FLAGS.replace("--num_res_blocks 1", "--num_res_blocks 2").replace("--channel_mult 1,2", "--channel_mult 1,1,2,2")).unwrap();
    for (f, head) in [(&flags, false), (&head_flags, true)] {
        let model = workloads::synthetic_unet(&Cpu, f, head, 1).unwrap();
        let inp = workloads::unet_inputs(&Cpu, f, 2).unwrap();
        let fwd = || {
            let o = model.forward(&Cpu, &inp.x, &inp.t, inp.y.as_deref()).unwrap();
            let feat = o.feat.as_ref().map(|t| Cpu.to_host(t).unwrap()).unwrap_or_default();
            (Cpu.to_host(&o.out).unwrap(), feat)
        };
        let first = fwd();
        set_poison(true);
        let poisoned = [fwd(), fwd()];
        set_poison(false);
        let again = fwd();
        assert!(first.0.iter().chain(&first.1).all(|v| v.is_finite()), "non-finite output");
        for (i, o) in poisoned.iter().chain([&again]).enumerate() {
            assert!(same_bits(&o.0, &first.0) && same_bits(&o.1, &first.1), "head {head}: run {} differs from the first", i + 2);
        }
        assert_eq!(head, !first.1.is_empty());
    }
}
