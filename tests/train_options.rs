//! The training step's options for the demo recipe (tools/demo/train_head.py, train_joint.py):
//! `feat_max_t` (the feature term only on samples with t < T) and `TrainOnly::Head` (the UNet
//! frozen, only the head's gradients, no UNet backward). On the model and batch of the
//! train_step fixture (t = [0, 613]); the references are the same step's pieces run another way
//! (a sub-batch of the kept samples, the full backward), not the code under test.

mod common;
use common::{check_close, fixture_path};
use ran::backend::AdamwParams;
use ran::diffusion::{BetaSchedule, Diffusion};
use ran::io::flags::ModelFlags;
use ran::io::safetensors::SafeTensors;
use ran::models::unet::UNet;
use ran::models::weights::Loader;
use ran::tensor::Tensor;
use ran::train::loss::LossTerms;
use ran::train::step::{loss_and_gradients, train_step, StepInputs, TrainOnly, TrainState};
use ran::{Backend, Cpu};
use std::collections::BTreeMap;

struct Fx {
    model: UNet<Cpu>,
    d: Diffusion,
    /// x0, ε [2, 3, 16, 16], feature target [2, 272, 4, 4], on the host
    x0: (Vec<usize>, Vec<f32>),
    eps: (Vec<usize>, Vec<f32>),
    ft: (Vec<usize>, Vec<f32>),
    t: Vec<usize>,
    y: Vec<usize>,
}

fn fixture() -> Fx {
    let fx = SafeTensors::open(fixture_path("train_step.safetensors")).unwrap();
    let flags = ModelFlags::parse(&fx.metadata()["model_flags"]).unwrap();
    let l = Loader::new(&fx, &Cpu).ignoring(&["x0", "eps", "t", "y", "feat_target", "mse", "vb", "feat_mse", "loss"]).ignoring_prefixes(&["idx.", "after.", "ema.", "grad."]);
    let model = UNet::load(&flags, &l).unwrap();
    l.finish().unwrap();
    let ints = |k: &str| fx.get(k).unwrap().1.iter().map(|&v| v as usize).collect::<Vec<_>>();
    let t = ints("t");
    assert_eq!(t, [0, 613], "the cases below are chosen for these timesteps");
    Fx {
        model,
        d: Diffusion::new(BetaSchedule::parse("linear").unwrap(), 1000, "").unwrap(),
        x0: fx.get("x0").unwrap(),
        eps: fx.get("eps").unwrap(),
        ft: fx.get("feat_target").unwrap(),
        t,
        y: ints("y"),
    }
}

/// Samples `keep` of a host tensor whose first axis is the batch.
fn pick(t: &(Vec<usize>, Vec<f32>), keep: &[usize]) -> (Vec<usize>, Vec<f32>) {
    let per = t.1.len() / t.0[0];
    let mut dims = t.0.clone();
    dims[0] = keep.len();
    (dims, keep.iter().flat_map(|&i| t.1[i * per..(i + 1) * per].iter().copied()).collect())
}

fn up(t: &(Vec<usize>, Vec<f32>)) -> Tensor<Cpu> {
    Cpu.from_host(&t.0, &t.1).unwrap()
}

type Grads = BTreeMap<String, Tensor<Cpu>>;

/// loss_and_gradients of samples `keep` of the fixture batch.
fn run(f: &Fx, keep: &[usize], target: bool, feat_max_t: Option<usize>, only: TrainOnly) -> (LossTerms, Grads) {
    let (x0, eps, ft) = (up(&pick(&f.x0, keep)), up(&pick(&f.eps, keep)), up(&pick(&f.ft, keep)));
    let t: Vec<usize> = keep.iter().map(|&i| f.t[i]).collect();
    let y: Vec<usize> = keep.iter().map(|&i| f.y[i]).collect();
    let inp = StepInputs { x0: &x0, eps: &eps, t: &t, y: Some(&y), feat_target: target.then_some(&ft), feat_max_t, only };
    loss_and_gradients(&Cpu, &f.model, &f.d, &inp).unwrap()
}

fn host(g: &Grads, k: &str) -> Vec<f32> {
    Cpu.to_host(&g[k]).unwrap()
}

fn same_grads(a: &Grads, b: &Grads, what: &str) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: other parameters");
    for k in a.keys() {
        assert!(host(a, k) == host(b, k), "{what}: {k} differs");
    }
}

const HEAD: [&str; 4] = ["feat_rec1.0.bias", "feat_rec1.0.weight", "feat_rec1.2.bias", "feat_rec1.2.weight"];

/// T above every t is the unrestricted step, bit for bit (a mask that drops or rescales
/// samples when it keeps them all shows here).
#[test]
fn feature_max_t_above_every_t_changes_nothing() {
    let f = fixture();
    let (a, ga) = run(&f, &[0, 1], true, None, TrainOnly::All);
    let (b, gb) = run(&f, &[0, 1], true, Some(614), TrainOnly::All);
    assert_eq!(a, b);
    same_grads(&ga, &gb, "T = 614");
}

/// T = 400 keeps sample 0 (t = 0) only: the feature term and the head's gradients are those of
/// the one-sample batch of sample 0 (a mask averaging over the whole batch, or putting the
/// gradient on the wrong sample, fails), the diffusion terms still those of both samples.
#[test]
fn feature_max_t_keeps_the_feature_term_to_the_samples_below_it() {
    let f = fixture();
    let (full, _) = run(&f, &[0, 1], true, None, TrainOnly::All);
    let (masked, gm) = run(&f, &[0, 1], true, Some(400), TrainOnly::All);
    let (sub, gs) = run(&f, &[0], true, None, TrainOnly::All);
    assert_eq!((&masked.mse, &masked.vb), (&full.mse, &full.vb));
    let (fm, fs) = (masked.feat_mse.unwrap(), sub.feat_mse.unwrap());
    // per-sample ops: the one-sample batch computes the same values (observed |Δ| ~1e-9)
    assert!((fm - fs).abs() <= 1e-7 * fs, "feat_mse {fm} vs the sub-batch's {fs}");
    assert!((fm - full.feat_mse.unwrap()).abs() > 1e-3 * fm, "the masked term should differ from the whole batch's");
    for k in HEAD {
        // the head's backward on 1 sample against the same in a batch of 2 (f32 sums in another
        // order: observed ≤ 3e-7 relative); 1e-6·max|ref| + 1e-5·|ref|
        let (got, want) = (host(&gm, k), host(&gs, k));
        let scale = want.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
        check_close(k, &got, &want, 1e-6 * scale, 1e-5).unwrap();
    }
}

/// A batch with no sample below T has no feature term: the head gets no gradient (AdamW skips
/// it, as torch does with a None .grad) and the rest is the step without a feature target.
#[test]
fn feature_max_t_below_every_t_leaves_the_head_without_a_gradient() {
    let f = fixture();
    let (none, gn) = run(&f, &[0, 1], true, Some(0), TrainOnly::All);
    let (plain, gp) = run(&f, &[0, 1], false, None, TrainOnly::All);
    assert_eq!(none.feat_mse, None);
    assert_eq!(none, plain);
    assert!(HEAD.iter().all(|k| !gn.contains_key(*k)));
    same_grads(&gn, &gp, "no sample below T");
}

/// Training the head alone: the loss terms of the full step, the head's gradients exactly the
/// full backward's, and no other parameter's; one step moves the head and nothing else.
#[test]
fn training_the_head_alone_freezes_the_unet() {
    let mut f = fixture();
    for t in [None, Some(400)] {
        let (a, ga) = run(&f, &[0, 1], true, t, TrainOnly::All);
        let (h, gh) = run(&f, &[0, 1], true, t, TrainOnly::Head);
        assert_eq!(a, h, "T {t:?}");
        assert_eq!(gh.keys().cloned().collect::<Vec<_>>(), HEAD.map(String::from).to_vec(), "T {t:?}");
        for k in HEAD {
            assert!(host(&ga, k) == host(&gh, k), "T {t:?}: {k} differs from the full backward's");
        }
    }
    // a step: the UNet's tensors keep their bytes, the head's move
    let before: BTreeMap<String, Vec<f32>> = f.model.params().unwrap().into_iter().map(|(n, p)| (n, Cpu.to_host(&p).unwrap())).collect();
    let mut state = TrainState::new(&Cpu, &mut f.model).unwrap();
    let (x0, eps, ft) = (up(&f.x0), up(&f.eps), up(&f.ft));
    let inp = StepInputs { x0: &x0, eps: &eps, t: &f.t, y: Some(&f.y), feat_target: Some(&ft), feat_max_t: Some(400), only: TrainOnly::Head };
    train_step(&Cpu, &mut f.model, &mut state, &f.d, &inp, &AdamwParams { lr: 1e-3, ..AdamwParams::default() }, 0.0).unwrap();
    let mut moved = 0;
    for (n, p) in f.model.params().unwrap() {
        let now = Cpu.to_host(&p).unwrap();
        if n.starts_with("feat_rec1.") {
            // every head tensor gets a gradient; AdamW's first step moves each element by ~lr
            assert!(now.iter().zip(&before[&n]).any(|(a, b)| a != b), "{n} did not move");
            moved += 1;
        } else {
            assert!(now == before[&n], "{n} of the frozen UNet changed");
        }
        // EMA rate 0: the EMA is the weights
        assert!(Cpu.to_host(&state.ema[&n]).unwrap() == now, "{n}: EMA 0 should equal the weights");
    }
    assert_eq!(moved, 4);
    // without a head target the head cannot be trained alone: said so
    let inp = StepInputs { feat_target: None, ..inp };
    let e = match loss_and_gradients(&Cpu, &f.model, &f.d, &inp) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a batch without samples below --feature-max-t must be refused"),
    };
    assert!(e.contains("feature head alone"), "{e}");
}
