//! Throughput benchmark through the same code the CLI uses (`train_step`, `evaluate`,
//! [`Family`]) on synthetic data (28×28, or 3×32×32 for the CIFAR nets). The MLP and LeNet-5
//! train cases mirror `scripts/torch_reference.py` (SGD momentum 0.9, lr 0.01, batch 128); eval
//! at batch 1000.
//!
//! - `mlp_train`, `lenet5_train`: plain train step (steps/s, samples/s);
//! - `vgg16bn_train`, `resnet20_train`, `vgg16bn_eval`, `resnet20_eval`: `vgg16:w=0.25` and
//!   `resnet20` (BatchNorm in train mode) on 3×32×32 inputs, mirrored in
//!   `scripts/torch_reference.py` (there with this step's weight decay 5e-4 as well);
//! - `mlp_curve_train`: one-bend PolyChain step on the MLP (point sampled per step);
//! - `mlp_vd_train`: sparse variational dropout (local reparameterisation) step on the MLP;
//!   `mlp_vdl_train` the same with one α per layer (Kingma et al. 2015), `mlp_gd_train` Gaussian
//!   dropout with a fixed α (the local reparameterisation alone, no KL);
//! - `mlp_eval`, `lenet5_eval`: forward at batch 1000 (samples/s);
//! - `mlp_path`: a 61-point path through 3 control points on 10k + 10k samples;
//! - `mlp_plane`: a 21×21 plane on 5k + 10k samples;
//!   both report seconds and GFLOP/s, executed and full-forward equivalent, against the
//!   measured GEMM peak;
//! - `curve_step_cost`, `vd_step_cost`, `vd_layerwise_step_cost`, `gd_step_cost`: step time of
//!   the chain and the three variational cases over the plain step's, the two run in
//!   alternating slices (with the case's name, or alone by their own);
//! - `gemm_peak`: GFLOP/s of one large fp32 matmul (2048³) through the backend, best of 5: the
//!   practical peak of this CPU with these kernels (the GEMM kernels are picked at run time,
//!   AVX2 or AVX-512, so a fixed nominal peak fits only one machine kind).
//!
//! `cargo bench --bench throughput -- [--only NAME[,NAME]] [--seconds S] [--repeats R] [--json PATH]
//! [--device cpu|wgpu|cuda]` (a GPU with `--features wgpu` / `cuda`).

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::curve::{Curve, CurveKind, CurveObjective};
use modeconn::data::Dataset;
use modeconn::eval::evaluate;
use modeconn::eval::family::Family;
use modeconn::params::ParamSet;
use modeconn::train::{
    Classification, Objective, OptimConfig, OptimKind, Optimizer, StepCtx, train_step,
};
use modeconn::variational::objective::{Elbo, EvalConfig, Warmup};
use modeconn::variational::{Method, VConfig, VModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// mimalloc: burn allocates and frees activation- and weight-sized buffers on every op; with
/// glibc's allocator those come from fresh `mmap`s and page faults (≈ 8–10% of a train step).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Opts {
    only: Option<String>,
    seconds: f64,
    repeats: usize,
    json: Option<String>,
    device: Option<String>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    Opts {
        only: get("--only"),
        seconds: get("--seconds").and_then(|s| s.parse().ok()).unwrap_or(3.0),
        repeats: get("--repeats").and_then(|s| s.parse().ok()).unwrap_or(1),
        json: get("--json"),
        device: get("--device"),
    }
}

/// `n` random images of `arch`'s input shape (28×28 for an MLP).
fn synthetic(arch: &Arch, n: usize, seed: u64) -> Dataset {
    let shape = arch.image_shape().unwrap_or([1, 28, 28]);
    let d: usize = shape.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Dataset {
        name: "synthetic".into(),
        x: (0..n * d).map(|_| rng.random::<f32>()).collect(),
        y: (0..n).map(|_| rng.random_range(0..10u8)).collect(),
        shape,
        classes: 10,
    }
}

/// Nominal fp32 peak of a reference CPU (2 Zen3 cores, AVX2), GFLOP/s; printed beside
/// the measured GEMM peak.
const ZEN3_PEAK_GFLOPS: f64 = 157.0;

/// GFLOP/s of a 2048 × 2048 by 2048 × 2048 fp32 matmul on the evaluation device, best of 5.
fn gemm_peak() -> f64 {
    let n = 2048;
    let device = backend::device();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut matrix = || {
        let v: Vec<f32> = (0..n * n).map(|_| rng.random::<f32>() - 0.5).collect();
        Tensor::<2>::from_data(TensorData::new(v, [n, n]), &device)
    };
    let (a, b) = (matrix(), matrix());
    let mut best = f64::INFINITY;
    for _ in 0..6 {
        let t = Instant::now();
        let c = a.clone().matmul(b.clone());
        // Reading the result waits for it on any backend.
        let first = backend::with_host(&c, |v| v[0]);
        std::hint::black_box(first);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// What a train case optimises.
#[derive(Clone, Copy)]
enum Step {
    Plain,
    Curve,
    /// A variational MLP (ELBO) under the local reparameterisation, by method.
    Vd(Method),
}

/// A train case ready to step: parameters, objective, optimiser and one fixed batch of 128.
struct TrainCase {
    /// `None` only while a step holds them.
    params: Option<ParamSet>,
    obj: Box<dyn Objective>,
    opt: Optimizer,
    lr: f64,
    x: Tensor<2>,
    y: Tensor<1, Int>,
    rng: ChaCha8Rng,
    steps: usize,
}

impl TrainCase {
    fn new(arch: &Arch, step: Step) -> Self {
        let device = backend::device();
        let ad = backend::train_device();
        // Leaked: objectives borrow their evaluation set for the life of the bench.
        let data: &'static Dataset = Box::leak(Box::new(synthetic(arch, 128, 1)));
        let (params, obj): (ParamSet, Box<dyn Objective>) = match step {
            Step::Plain => (
                arch.init(0, &device),
                Box::new(Classification::new(arch.clone(), data, device.clone())),
            ),
            Step::Curve => {
                let (a, b) = (arch.init(1, &device), arch.init(2, &device));
                let curve = Curve::init_linear(CurveKind::Polychain, 1, arch.clone(), &a, &b)
                    .expect("same layout");
                let idx = curve.trainable(false);
                (
                    curve.pack(&idx),
                    // As `connect`: ½·wd·‖w(t)‖² in the loss, no decay in the optimiser.
                    Box::new(CurveObjective::new(curve, idx, 5e-4, data, device.clone())),
                )
            }
            Step::Vd(method) => {
                let model = VModel::new(arch.clone(), VConfig::new(method)).expect("mlp");
                (
                    model.init(0, &device),
                    Box::new(Elbo::new(
                        model,
                        Warmup::None,
                        data,
                        EvalConfig {
                            ensembles: vec![],
                            seed: 0,
                            every: 1,
                        },
                        1,
                        device.clone(),
                    )),
                )
            }
        };
        // Weight decay 5e-4 as the CLI's default: in the optimiser for the plain step, in the
        // loss for the curve step, none for the ELBO.
        let wd = match step {
            Step::Plain => 5e-4,
            _ => 0.0,
        };
        let opt = Optimizer::new(OptimConfig::new(OptimKind::Sgd, 0.9, wd), &params);
        // The ELBO is N·CE + KL (N = 60,000): its step size is scaled to match.
        let lr = match step {
            Step::Vd(_) => 0.01 / 60_000.0,
            _ => 0.01,
        };
        let (xv, yv) = data.gather(&(0..128).collect::<Vec<_>>());
        let x = Tensor::<2>::from_data(TensorData::new(xv, [128, data.dim()]), &ad);
        let y = Tensor::<1, Int>::from_data(TensorData::new(yv, [128]), &ad);
        let mut case = Self {
            params: Some(params),
            obj,
            opt,
            lr,
            x,
            y,
            rng: ChaCha8Rng::seed_from_u64(0),
            steps: 0,
        };
        case.run(5); // warm-up
        case
    }

    /// `n` train steps.
    fn run(&mut self, n: usize) {
        for _ in 0..n {
            let mut ctx = StepCtx {
                epoch: 0,
                step: self.steps,
                rng: &mut self.rng,
                n_train: 60_000,
            };
            let (p, _, _) = train_step(
                self.params.take().expect("parameters between steps"),
                &mut self.opt,
                self.obj.as_mut(),
                self.x.clone(),
                self.y.clone(),
                &mut ctx,
                self.lr,
            )
            .expect("finite loss");
            self.params = Some(p);
            self.steps += 1;
        }
    }

    /// Seconds for `n` steps.
    fn time(&mut self, n: usize) -> f64 {
        let t0 = Instant::now();
        self.run(n);
        t0.elapsed().as_secs_f64()
    }
}

/// Train steps/s at batch 128 on one fixed batch.
fn bench_train(arch: &Arch, step: Step, seconds: f64) -> f64 {
    let mut case = TrainCase::new(arch, step);
    let t0 = Instant::now();
    let mut steps = 0;
    while t0.elapsed().as_secs_f64() < seconds || steps < 10 {
        case.run(5);
        steps += 5;
    }
    steps as f64 / t0.elapsed().as_secs_f64()
}

/// Step time of `step` over the plain step's, measured in alternating slices of about 50 ms
/// each for `seconds` in all, so that both see the same machine (on a shared host the speed
/// drifts from one second to the next; cases run one after the other compared badly).
fn cost_ratio(arch: &Arch, step: Step, seconds: f64) -> f64 {
    let (mut plain, mut other) = (
        TrainCase::new(arch, Step::Plain),
        TrainCase::new(arch, step),
    );
    // Steps per slice from one probe step each.
    let per = |c: &mut TrainCase| ((0.05 / c.time(1)).ceil() as usize).max(1);
    let (np, no) = (per(&mut plain), per(&mut other));
    let (mut tp, mut to, mut sp, mut so) = (0.0, 0.0, 0, 0);
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < seconds || sp < 10 {
        tp += plain.time(np);
        sp += np;
        to += other.time(no);
        so += no;
    }
    (to / so as f64) / (tp / sp as f64)
}

/// One evaluation sweep of a [`Family`]: `(seconds, executed GFLOP, full-forward GFLOP)`.
fn bench_family(arch: &Arch, plane: bool) -> (f64, f64, f64) {
    let device = backend::device();
    let (train, test) = if plane {
        (synthetic(arch, 5_000, 3), synthetic(arch, 10_000, 4))
    } else {
        (synthetic(arch, 10_000, 3), synthetic(arch, 10_000, 4))
    };
    let basis: Vec<Vec<f32>> = (0..3).map(|s| arch.init(s, &device).to_flat()).collect();
    let t0 = Instant::now();
    let fam = Family::new(arch, arch.layout(), basis, &[&train, &test], &device);
    let coeffs: Vec<Vec<f64>> = if plane {
        let ax: Vec<f64> = (0..21).map(|i| -0.2 + 1.4 * i as f64 / 20.0).collect();
        ax.iter()
            .flat_map(|&y| ax.iter().map(move |&x| vec![1.0, x, y]))
            .collect()
    } else {
        (0..61)
            .map(|i| CurveKind::Polychain.coeffs(3, i as f64 / 60.0))
            .collect()
    };
    let _ = fam.metrics_all(&coeffs);
    let secs = t0.elapsed().as_secs_f64();
    let (mut exec, mut full) = (0.0, 0.0);
    for c in &coeffs {
        let (e, f) = fam.flops_per_member(c.iter().filter(|c| **c != 0.0).count());
        exec += e;
        full += f;
    }
    // The cached products themselves: one first-layer pass per basis vector.
    let rows = (train.len() + test.len()) as f64;
    if fam.cached() {
        exec += 3.0 * 2.0 * arch.first_layer_macs() as f64 * rows;
    }
    (secs, exec / 1e9, full / 1e9)
}

/// Eval samples/s at batch 1000 over 5,000 samples.
fn bench_eval(arch: &Arch, seconds: f64) -> f64 {
    let device = backend::device();
    let data = synthetic(arch, 5000, 2);
    let params = arch.init(0, &device);
    evaluate(arch, &params, &data, 1000, &device);
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed().as_secs_f64() < seconds || n == 0 {
        evaluate(arch, &params, &data, 1000, &device);
        n += data.len();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let o = opts();
    if let Some(name) = o.device.as_deref() {
        let choice = backend::DeviceChoice::from_name(name)
            .unwrap_or_else(|| panic!("--device {name}: not compiled into this build"));
        backend::choose_device(choice).expect("the first choice");
    }
    let mlp: Arch = "mlp:784-300-100-10".parse().unwrap();
    let lenet: Arch = "lenet5".parse().unwrap();
    let vgg: Arch = "vgg16:w=0.25".parse().unwrap();
    let resnet: Arch = "resnet20".parse().unwrap();
    let wanted = |name: &str| {
        o.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|x| x == name))
    };
    let mut results = Vec::new();
    println!("{:<16} {:>10} {:>12}", "name", "steps/s", "samples/s");
    let train_cases = [
        ("mlp_train", &mlp, Step::Plain),
        ("mlp_curve_train", &mlp, Step::Curve),
        ("mlp_vd_train", &mlp, Step::Vd(Method::SparseVd)),
        ("mlp_vdl_train", &mlp, Step::Vd(Method::LayerwiseAlpha)),
        ("mlp_gd_train", &mlp, Step::Vd(Method::Gaussian)),
        ("lenet5_train", &lenet, Step::Plain),
        ("vgg16bn_train", &vgg, Step::Plain),
        ("resnet20_train", &resnet, Step::Plain),
    ];
    for (name, arch, step) in train_cases {
        if !wanted(name) {
            continue;
        }
        let r = median(
            (0..o.repeats.max(1))
                .map(|_| backend::on_workers(|| bench_train(arch, step, o.seconds)))
                .collect(),
        );
        println!("{name:<16} {r:>10.1} {:>12.0}", r * 128.0);
        results.push(json!({"name": name, "steps_per_s": r, "samples_per_s": r * 128.0}));
    }
    for (name, arch) in [
        ("mlp_eval", &mlp),
        ("lenet5_eval", &lenet),
        ("vgg16bn_eval", &vgg),
        ("resnet20_eval", &resnet),
    ] {
        if !wanted(name) {
            continue;
        }
        let r = median(
            (0..o.repeats.max(1))
                .map(|_| backend::on_workers(|| bench_eval(arch, o.seconds)))
                .collect(),
        );
        println!("{name:<16} {:>10} {r:>12.0}", "-");
        results.push(json!({"name": name, "samples_per_s": r}));
    }
    let peak = (wanted("gemm_peak") || wanted("mlp_path") || wanted("mlp_plane"))
        .then(|| backend::on_workers(gemm_peak));
    if let Some(peak) = peak {
        println!(
            "gemm_peak        {peak:>9.0} GFLOP/s (2048³ matmul; nominal 2-core Zen3 peak {ZEN3_PEAK_GFLOPS:.0})"
        );
        results.push(json!({"name": "gemm_peak", "gflops": peak}));
    }
    for (name, plane) in [("mlp_path", false), ("mlp_plane", true)] {
        if !wanted(name) {
            continue;
        }
        let peak = peak.expect("measured above");
        let runs: Vec<(f64, f64, f64)> = (0..o.repeats.max(1))
            .map(|_| backend::on_workers(|| bench_family(&mlp, plane)))
            .collect();
        let secs = median(runs.iter().map(|r| r.0).collect());
        let (exec, full) = (runs[0].1, runs[0].2);
        println!(
            "{name:<16} {secs:>9.2}s   executed {:.0} GFLOP/s ({:.0}% of the GEMM peak), \
             full-forward equivalent {:.0} GFLOP/s",
            exec / secs,
            100.0 * exec / secs / peak,
            full / secs
        );
        results.push(json!({
            "name": name, "seconds": secs, "gflop_executed": exec, "gflop_full": full,
            "gflops_executed": exec / secs, "gflops_full": full / secs,
            "peak_fraction": exec / secs / peak,
        }));
    }
    for (case, what, step) in [
        ("mlp_curve_train", "curve_step_cost", Step::Curve),
        ("mlp_vd_train", "vd_step_cost", Step::Vd(Method::SparseVd)),
        (
            "mlp_vdl_train",
            "vd_layerwise_step_cost",
            Step::Vd(Method::LayerwiseAlpha),
        ),
        ("mlp_gd_train", "gd_step_cost", Step::Vd(Method::Gaussian)),
    ] {
        if !wanted(what) && !wanted(case) {
            continue;
        }
        let r = median(
            (0..o.repeats.max(1))
                .map(|_| backend::on_workers(|| cost_ratio(&mlp, step, o.seconds)))
                .collect(),
        );
        println!(
            "{what} ratio={r:.2}   ({case} step time / mlp_train step time, alternating slices)"
        );
        results.push(json!({"name": what, "cost_ratio": r}));
    }
    if let Some(p) = o.json {
        let v = json!({"impl": "modeconn (burn flex)", "results": results});
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).expect("write json");
    }
}
