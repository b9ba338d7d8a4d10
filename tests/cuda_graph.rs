//! CUDA graphs of whole forwards on the emulator (backend/cuda/graph.rs): a replay with other
//! inputs gives the eager result bit for bit (and the CPU backend's within its tolerance) under the
//! three schedules; two shapes get two graphs; a buffer dropped during the capture stays the
//! graph's; an error inside the capture leaves nothing behind; a replay is a handful of driver
//! calls; the graph's memory goes when the backend does.

use ran::backend::cpu::Cpu;
use ran::backend::cuda::cached::CacheOptions;
use ran::backend::cuda::device::{Arg, Device, LaunchCfg, Node};
use ran::backend::cuda::emu::{self, EmuBuf, EmuDevice, Schedule};
use ran::backend::cuda::graph::GraphKey;
use ran::backend::cuda::{CudaBackend, EmulatedCuda};
use ran::backend::{new_graph_id, Backend};
use ran::bench::workloads::synthetic_unet;
use ran::io::flags::ModelFlags;
use ran::models::unet::UNet;
use ran::tensor::{Shape, Tensor};
use std::cell::RefCell;
use std::sync::atomic::{AtomicIsize, Ordering::SeqCst};
use std::sync::Arc;

/// Class-conditional, scale-shift, up/down ResBlocks, attention and the feature head (12 output
/// blocks: output_blocks[10] exists), small enough for the emulator.
const FLAGS: &str = "--image_size 16 --num_channels 32 --num_res_blocks 2 --channel_mult 1,1,1,1 --attention_resolutions 8 \
--num_head_channels 32 --resblock_updown True --use_scale_shift_norm True --learn_sigma True --class_cond True --num_classes 3 --feat_shape 4";

fn opts() -> CacheOptions {
    CacheOptions { release_threshold: 1 << 30, mem_limit: None, sync_each_launch: false }
}

fn flags() -> ModelFlags {
    ModelFlags::parse(FLAGS).unwrap()
}

/// Values in [-1, 1) from a seed (the project's generator, doubled; nothing here depends on
/// their distribution).
fn values(seed: u64, n: usize) -> Vec<f32> {
    ran::optable::sizes::uniform(n, seed).into_iter().map(|v| 2.0 * v).collect()
}

/// One call's inputs: images, timesteps, labels.
struct Call {
    x: Vec<f32>,
    t: Vec<f32>,
    y: Vec<usize>,
}

fn call(seed: u64, n: usize, t: f32, y: usize) -> Call {
    Call { x: values(seed, n * 3 * 16 * 16), t: (0..n).map(|i| t + i as f32).collect(), y: (0..n).map(|i| (y + i) % 3).collect() }
}

/// (out, feat) of one forward, on the host.
fn run<B: Backend>(b: &B, m: &UNet<B>, c: &Call, graphed: bool) -> (Vec<f32>, Vec<f32>) {
    let n = c.t.len();
    let x = b.from_host(&[n, 3, 16, 16], &c.x).unwrap();
    let t = b.from_host(&[n], &c.t).unwrap();
    let o = if graphed { m.forward_graphed(b, &x, &t, Some(&c.y)) } else { m.forward(b, &x, &t, Some(&c.y)) }.unwrap();
    (b.to_host(&o.out).unwrap(), b.to_host(o.feat.as_ref().expect("the model has the feature head")).unwrap())
}

/// |got − want| ≤ atol + rtol·|want| elementwise.
fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{what}: element {i} got {g} want {w}");
    }
}

/// The bug: a scalar baked into a kernel argument, or an input buffer not refreshed, would give
/// the first call's result again. Call 1 records with (x0, t = 37, y = 0); calls 2 and 3 replay
/// with other images, timesteps and classes; each must equal an eager forward bit for bit, and the
/// CPU backend within 2e-4 + 2e-4·|ref| (f32 summation orders differ: conv, attention, group norm;
/// observed about 1e-5). Under forward, reverse and random schedules.
#[test]
fn a_replay_with_other_inputs_gives_the_eager_result() {
    let cpu = Cpu;
    let mcpu = synthetic_unet(&cpu, &flags(), true, 3).unwrap();
    let calls = [call(1, 2, 37.0, 0), call(2, 2, 911.0, 1), call(3, 2, 5.0, 2)];
    let want: Vec<_> = calls.iter().map(|c| run(&cpu, &mcpu, c, false)).collect();
    assert_ne!(want[0].0, want[1].0, "the calls must differ for the test to tell");
    for s in Schedule::all(20231001) {
        emu::set_schedule(s);
        let b = EmulatedCuda::emulated();
        let m = synthetic_unet(&b, &flags(), true, 3).unwrap();
        for (j, c) in calls.iter().enumerate() {
            let eager = run(&b, &m, c, false);
            let graphed = run(&b, &m, c, true);
            assert_eq!(graphed.0, eager.0, "{s:?} call {j}: out of the graph vs eager");
            assert_eq!(graphed.1, eager.1, "{s:?} call {j}: feat of the graph vs eager");
            assert_close(&format!("{s:?} call {j} out vs CPU"), &graphed.0, &want[j].0, 2e-4, 2e-4);
            assert_close(&format!("{s:?} call {j} feat vs CPU"), &graphed.1, &want[j].1, 2e-4, 2e-4);
        }
        assert_eq!(b.graph_count(), 1, "one shape, one graph");
    }
    emu::set_schedule(Schedule::Forward);
}

/// The bug: a key without the shapes would replay batch 1's graph for batch 2 (or the two graphs
/// would share buffers). Interleaved calls at batch 1 and 2 each give the eager result, from two
/// graphs whose buffers are disjoint apart from the weights.
#[test]
fn two_shapes_get_two_graphs_that_do_not_alias() {
    let b = EmulatedCuda::emulated();
    let m = synthetic_unet(&b, &flags(), true, 4).unwrap();
    let calls = [call(11, 1, 20.0, 1), call(12, 2, 400.0, 0), call(13, 1, 700.0, 2), call(14, 2, 3.0, 1)];
    for (j, c) in calls.iter().enumerate() {
        assert_eq!(run(&b, &m, c, true), run(&b, &m, c, false), "call {j} (batch {})", c.t.len());
    }
    assert_eq!(b.graph_count(), 2);
    let key = |n: usize, id: u64| GraphKey { model: id, shapes: vec![Shape::new(&[n, 3, 16, 16]), Shape::new(&[n]), Shape::new(&[n, 128])], precision: b.precision() };
    // the model's id is private; find it by trying the ids handed out so far in this process
    let id = (1..new_graph_id()).find(|&id| b.graph_stats(&key(1, id)).is_some()).expect("the batch-1 graph");
    let (l1, _) = b.graph_stats(&key(1, id)).unwrap();
    let (l2, _) = b.graph_stats(&key(2, id)).expect("the batch-2 graph");
    assert_eq!(l1, l2, "the same forward at two batch sizes launches the same kernels");
}

fn addr(t: &Tensor<EmulatedCuda>) -> usize {
    t.storage().raw().addr()
}

/// The bug: a buffer the host drops during the capture goes back to the cache, the next
/// allocation (inside the capture or after it) gets it, and a replay overwrites that owner's data
/// (or reads it). Here `a` is dropped mid-capture and `c` asks for the same size: they must get
/// different buffers; after the capture, eager tensors of that size must get none of the graph's
/// buffers, and keep their values across replays.
#[test]
fn a_buffer_dropped_during_the_capture_stays_the_graphs() {
    let b = EmulatedCuda::emulated();
    let id = new_graph_id();
    let seen = RefCell::new(Vec::new());
    let f = |v: &[Tensor<EmulatedCuda>]| {
        let a = b.scale_add_scalar(&v[0], 2.0, 0.0)?;
        let s = b.add(&a, &v[0])?; // 3x
        seen.borrow_mut().extend([addr(&a), addr(&s)]);
        drop(a);
        let c = b.scale_add_scalar(&v[0], 4.0, 1.0)?; // same size as a
        seen.borrow_mut().push(addr(&c));
        Ok(vec![b.add(&s, &c)?]) // 7x + 1
    };
    let x0 = b.from_host(&[64], &values(5, 64)).unwrap();
    let y0 = b.to_host(&b.graph_forward(id, &[&x0], &f).unwrap()[0]).unwrap();
    let want0: Vec<f32> = b.to_host(&x0).unwrap().iter().map(|v| 3.0 * v + (4.0 * v + 1.0)).collect();
    assert_eq!(y0, want0);
    let seen = seen.borrow().clone();
    assert_ne!(seen[0], seen[2], "a buffer dropped inside the capture was handed out again inside it");
    // eager tensors of the same size after the capture: none of the graph's buffers, and their values survive replays
    let others: Vec<_> = (0..4).map(|k| b.from_host(&[64], &vec![k as f32 + 0.5; 64]).unwrap()).collect();
    for o in &others {
        assert!(!seen.contains(&addr(o)), "an eager tensor got a buffer the graph writes");
    }
    let x1 = b.from_host(&[64], &values(6, 64)).unwrap();
    let y1 = b.to_host(&b.graph_forward(id, &[&x1], &f).unwrap()[0]).unwrap();
    let want1: Vec<f32> = b.to_host(&x1).unwrap().iter().map(|v| 3.0 * v + (4.0 * v + 1.0)).collect();
    assert_eq!(y1, want1, "the replay with x1");
    for (k, o) in others.iter().enumerate() {
        assert_eq!(b.to_host(o).unwrap(), vec![k as f32 + 0.5; 64], "an eager tensor changed by a replay");
    }
}

/// The bug: an error inside the capture leaves the device recording (every later launch silently
/// dropped), a half graph cached, or the recording's buffers held forever. After a failing capture
/// eager ops run, nothing is cached, a second identical failure allocates nothing new (the first
/// one's buffers went back to the cache), and a transfer inside a capture is refused by name.
#[test]
fn an_error_inside_the_capture_aborts_it_cleanly() {
    let b = EmulatedCuda::emulated();
    let id = new_graph_id();
    let x = b.from_host(&[2, 8], &values(8, 16)).unwrap();
    let bad = |v: &[Tensor<EmulatedCuda>]| {
        let a = b.scale_add_scalar(&v[0], 2.0, 0.0)?;
        Ok(vec![b.add(&a, &b.reshape(&a, &[16, 1])?)?]) // [2, 8] + [16, 1]: a shape error
    };
    let e = b.graph_forward(id, &[&x], &bad).err().unwrap_or_else(|| panic!("a shape error"));
    assert!(e.to_string().contains("add"), "{e}");
    assert_eq!(b.graph_count(), 0, "nothing cached after a failed capture");
    let eager = b.to_host(&b.scale_add_scalar(&x, 1.0, 1.0).unwrap()).unwrap();
    let xs = b.to_host(&x).unwrap();
    assert_eq!(eager, xs.iter().map(|v| v + 1.0).collect::<Vec<_>>(), "eager ops run after the failed capture");
    let before = b.driver().counts();
    assert!(b.graph_forward(id, &[&x], &bad).is_err());
    assert_eq!(b.driver().counts().allocs, before.allocs, "the failed capture's buffers went back to the cache");

    let reads = |v: &[Tensor<EmulatedCuda>]| {
        let a = b.scale_add_scalar(&v[0], 2.0, 0.0)?;
        b.to_host(&a)?;
        Ok(vec![a])
    };
    let e = b.graph_forward(id, &[&x], &reads).err().unwrap_or_else(|| panic!("a read-back inside a capture"));
    assert!(e.to_string().contains("device-to-host copy inside a graph capture"), "{e}");
    let uploads = |v: &[Tensor<EmulatedCuda>]| Ok(vec![b.add(&v[0], &b.from_host(&[2, 8], &[1.0; 16])?)?]);
    let e = b.graph_forward(id, &[&x], &uploads).err().unwrap_or_else(|| panic!("an upload inside a capture"));
    assert!(e.to_string().contains("host-to-device copy inside a graph capture"), "{e}");
    // and then a good capture under the same id works
    let good = |v: &[Tensor<EmulatedCuda>]| Ok(vec![b.scale_add_scalar(&v[0], 3.0, 0.0)?]);
    let y = b.to_host(&b.graph_forward(id, &[&x], &good).unwrap()[0]).unwrap();
    assert_eq!(y, xs.iter().map(|v| 3.0 * v).collect::<Vec<_>>());
    assert_eq!(b.graph_count(), 1);
}

/// Catches: the UNet's stacked timestep projections (EmbPack), dropped by a parameter update,
/// being rebuilt inside the next forward's capture — recorded instead of made, so a capture that
/// fails leaves the model holding a stack never written (NaN in the emulator's fresh buffers) and
/// every later eager forward reads it. Here the capture fails at the output blocks' skip
/// concatenation (15² halves to 7², which upsamples to 14², not 15²).
#[test]
fn the_projection_stack_rebuilt_after_an_update_is_made_before_the_capture() {
    let b = EmulatedCuda::emulated();
    let mut m = synthetic_unet(&b, &flags(), true, 5).unwrap();
    let c = call(21, 1, 300.0, 1);
    let want = run(&b, &m, &c, false);
    m.visit_params_mut(&mut |_, _| Ok(())).unwrap(); // what an optimiser step does first
    let x = b.from_host(&[1, 3, 15, 15], &values(22, 3 * 15 * 15)).unwrap();
    let t = b.from_host(&[1], &[300.0]).unwrap();
    assert!(m.forward_graphed(&b, &x, &t, Some(&[1])).is_err(), "15² cannot pass the skip concatenations");
    let got = run(&b, &m, &c, false);
    assert!(got.0.iter().all(|v| v.is_finite()), "the stack kept from the failed capture was never written");
    assert_eq!(got, want, "the forward after the failed capture");
}

/// A replayed UNet forward is 8 driver calls, counted by hand: the class ids' upload and the
/// class-embedding gather (before the graph), three input copies (x, t, the class rows), one
/// graph launch, two output copies (out, feat); no allocation, memset or sync. The eager forward
/// makes one launch per kernel, as many as the graph holds plus the gather.
#[test]
fn a_replayed_forward_is_a_few_driver_calls() {
    let b = EmulatedCuda::emulated();
    let m = synthetic_unet(&b, &flags(), true, 5).unwrap();
    let c = call(21, 1, 50.0, 1);
    let x = b.from_host(&[1, 3, 16, 16], &c.x).unwrap();
    let t = b.from_host(&[1], &c.t).unwrap();
    m.forward(&b, &x, &t, Some(&c.y)).unwrap();
    let c0 = b.driver().counts();
    m.forward(&b, &x, &t, Some(&c.y)).unwrap();
    let eager = b.driver().counts() - c0;
    m.forward_graphed(&b, &x, &t, Some(&c.y)).unwrap(); // records
    m.forward_graphed(&b, &x, &t, Some(&c.y)).unwrap(); // the cache warms to the output copies
    let c1 = b.driver().counts();
    m.forward_graphed(&b, &x, &t, Some(&c.y)).unwrap();
    let replay = b.driver().counts() - c1;
    assert_eq!((replay.launches, replay.graph_launches, replay.copies), (1, 1, 6), "{replay}");
    assert_eq!((replay.allocs, replay.frees, replay.memsets, replay.syncs, replay.other), (0, 0, 0, 0, 0), "{replay}");
    assert!(replay.calls() <= 10, "{replay}");
    assert!(eager.launches > 100 && eager.graph_launches == 0, "{eager}");
    // the graph's own launch count: the eager forward's minus the gather
    let per_graph: Vec<usize> = (1..new_graph_id())
        .filter_map(|id| b.graph_stats(&GraphKey { model: id, shapes: vec![Shape::new(&[1, 3, 16, 16]), Shape::new(&[1]), Shape::new(&[1, 128])], precision: b.precision() }))
        .map(|(l, _)| l)
        .collect();
    assert_eq!(per_graph, vec![eager.launches as usize - 1], "{eager}");
}

/// Under RAN_CUDA_SYNC=1 (per-launch sync) graphs are off: graph_forward runs eagerly.
#[test]
fn per_launch_sync_turns_graphs_off() {
    let b = CudaBackend::with_options(EmuDevice, CacheOptions { sync_each_launch: true, ..opts() });
    assert!(!b.graphs_enabled());
    let x = b.from_host(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let y = b.graph_forward(new_graph_id(), &[&x], &|v| Ok(vec![b.scale_add_scalar(&v[0], 2.0, 0.0)?])).unwrap();
    assert_eq!(b.to_host(&y[0]).unwrap(), vec![2.0, 4.0, 6.0, 8.0]);
    assert_eq!((b.graph_count(), b.driver().counts().graph_launches), (0, 0));
}

/// The emulator with a count of live device buffers.
struct Counting {
    live: Arc<AtomicIsize>,
}

struct CountedBuf {
    buf: EmuBuf,
    live: Arc<AtomicIsize>,
}

impl Drop for CountedBuf {
    fn drop(&mut self) {
        self.live.fetch_sub(1, SeqCst);
    }
}

fn inner<'a>(args: &[Arg<'a, CountedBuf>]) -> Vec<Arg<'a, EmuBuf>> {
    args.iter()
        .map(|a| match a {
            Arg::Buf(b) => Arg::Buf(&b.buf),
            Arg::I32(v) => Arg::I32(*v),
            Arg::I64(v) => Arg::I64(*v),
            Arg::F32(v) => Arg::F32(*v),
            Arg::Pod(p) => Arg::Pod(p),
        })
        .collect()
}

impl Device for Counting {
    type Buf = CountedBuf;
    type Graph = ();
    fn kind(&self) -> &'static str {
        "cuda-emulator"
    }
    fn describe(&self) -> String {
        "counting emulator".into()
    }
    fn try_alloc(&self, bytes: usize) -> ran::Result<Option<CountedBuf>> {
        Ok(EmuDevice.try_alloc(bytes)?.map(|buf| {
            self.live.fetch_add(1, SeqCst);
            CountedBuf { buf, live: self.live.clone() }
        }))
    }
    fn buf_bytes(&self, b: &CountedBuf) -> usize {
        EmuDevice.buf_bytes(&b.buf)
    }
    fn memset_zeros(&self, b: &CountedBuf, bytes: usize) -> ran::Result<()> {
        EmuDevice.memset_zeros(&b.buf, bytes)
    }
    fn write(&self, b: &CountedBuf, bytes: &[u8]) -> ran::Result<()> {
        EmuDevice.write(&b.buf, bytes)
    }
    fn download(&self, b: &CountedBuf, out: &mut [u8]) -> ran::Result<()> {
        EmuDevice.download(&b.buf, out)
    }
    fn launch(&self, kernel: &'static str, cfg: &LaunchCfg, args: &[Arg<'_, CountedBuf>]) -> ran::Result<()> {
        EmuDevice.launch(kernel, cfg, &inner(args))
    }
    fn set_max_dynamic_smem(&self, kernel: &'static str, bytes: u32) -> ran::Result<()> {
        EmuDevice.set_max_dynamic_smem(kernel, bytes)
    }
    fn static_smem(&self, kernel: &'static str) -> ran::Result<u32> {
        EmuDevice.static_smem(kernel)
    }
    fn copy(&self, s: &CountedBuf, d: &CountedBuf, bytes: usize) -> ran::Result<()> {
        EmuDevice.copy(&s.buf, &d.buf, bytes)
    }
    fn build_graph(&self, _nodes: &[Node<'_, CountedBuf>]) -> ran::Result<()> {
        Ok(())
    }
    fn launch_graph(&self, _g: &(), nodes: &[Node<'_, CountedBuf>]) -> ran::Result<()> {
        for n in nodes {
            match n {
                Node::Launch { kernel, cfg, args } => self.launch(kernel, cfg, args)?,
                Node::Memset { buf, bytes } => self.memset_zeros(buf, *bytes)?,
            }
        }
        Ok(())
    }
    fn synchronize(&self) -> ran::Result<()> {
        Ok(())
    }
    fn mem_info(&self) -> Option<(usize, usize)> {
        None
    }
    fn poison(&self, b: &CountedBuf) {
        EmuDevice.poison(&b.buf)
    }
}

/// The bug: graphs (or the buffers they hold) outliving the backend, or a cleared graph keeping
/// its buffers. With the model and every output dropped, the graph alone still holds buffers
/// (its arena, inputs and the weights it reads) until `clear_graphs`; dropping the backend frees
/// every device buffer.
#[test]
fn graph_memory_goes_with_the_backend() {
    let live = Arc::new(AtomicIsize::new(0));
    {
        let b = CudaBackend::with_options(Counting { live: live.clone() }, opts());
        let m = synthetic_unet(&b, &flags(), true, 6).unwrap();
        let c = call(31, 1, 9.0, 0);
        let (x, t) = (b.from_host(&[1, 3, 16, 16], &c.x).unwrap(), b.from_host(&[1], &c.t).unwrap());
        let eager = m.forward(&b, &x, &t, Some(&c.y)).unwrap();
        let graphed = m.forward_graphed(&b, &x, &t, Some(&c.y)).unwrap();
        assert_eq!(b.to_host(&graphed.out).unwrap(), b.to_host(&eager.out).unwrap());
        drop((m, x, t, eager, graphed));
        b.driver().trim();
        assert!(live.load(SeqCst) > 50, "the graph holds its buffers: {}", live.load(SeqCst));
        b.clear_graphs();
        b.driver().trim();
        assert_eq!(live.load(SeqCst), 0, "a cleared graph's buffers go back");
        // a second graph, kept, and the backend dropped with it
        let m = synthetic_unet(&b, &flags(), true, 7).unwrap();
        let (x, t) = (b.from_host(&[1, 3, 16, 16], &c.x).unwrap(), b.from_host(&[1], &c.t).unwrap());
        m.forward_graphed(&b, &x, &t, Some(&c.y)).unwrap();
        assert_eq!(b.graph_count(), 1);
    }
    assert_eq!(live.load(SeqCst), 0, "every device buffer freed with the backend");
}
