//! Throughput benchmark: train steps/s and eval samples/s for MLP 784-300-100-10 and LeNet-5 on
//! synthetic 28×28 data, through the same `train_step` and `evaluate` code the CLI uses. The loop
//! mirrors `scripts/torch_reference.py` (SGD momentum 0.9, lr 0.01, batch 128; eval batch 1000).
//!
//! `cargo bench --bench throughput -- [--only NAME] [--seconds S] [--repeats R] [--json PATH]`
//! with NAME one of `mlp_train`, `mlp_eval`, `lenet5_train`, `lenet5_eval`.

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::data::Dataset;
use modeconn::eval::evaluate;
use modeconn::train::{Classification, OptimConfig, OptimKind, Optimizer, StepCtx, train_step};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

struct Opts {
    only: Option<String>,
    seconds: f64,
    repeats: usize,
    json: Option<String>,
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
    }
}

fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Dataset {
        name: "synthetic".into(),
        x: (0..n * 784).map(|_| rng.random::<f32>()).collect(),
        y: (0..n).map(|_| rng.random_range(0..10u8)).collect(),
        shape: [1, 28, 28],
        classes: 10,
    }
}

/// Train steps/s at batch 128 on one fixed batch.
fn bench_train(arch: &Arch, seconds: f64) -> f64 {
    let device = backend::device();
    let ad = backend::train_device();
    let data = synthetic(128, 1);
    let mut params = arch.init(0, &device);
    let mut opt = Optimizer::new(OptimConfig::new(OptimKind::Sgd, 0.9, 0.0), &params);
    let mut obj = Classification {
        arch: arch.clone(),
        test: &data,
        device: device.clone(),
    };
    let (xv, yv) = data.gather(&(0..128).collect::<Vec<_>>());
    let x = Tensor::<2>::from_data(TensorData::new(xv, [128, 784]), &ad);
    let y = Tensor::<1, Int>::from_data(TensorData::new(yv, [128]), &ad);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut run = |steps: usize, params: &mut modeconn::params::ParamSet| {
        for step in 0..steps {
            let mut ctx = StepCtx {
                epoch: 0,
                step,
                rng: &mut rng,
                n_train: 128,
            };
            let (p, _, _) = train_step(
                params,
                &mut opt,
                &mut obj,
                x.clone(),
                y.clone(),
                &mut ctx,
                0.01,
            )
            .expect("finite loss");
            *params = p;
        }
    };
    run(5, &mut params); // warm-up
    let t0 = Instant::now();
    let mut steps = 0;
    while t0.elapsed().as_secs_f64() < seconds || steps < 10 {
        run(5, &mut params);
        steps += 5;
    }
    steps as f64 / t0.elapsed().as_secs_f64()
}

/// Eval samples/s at batch 1000 over 5,000 samples.
fn bench_eval(arch: &Arch, seconds: f64) -> f64 {
    let device = backend::device();
    let data = synthetic(5000, 2);
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
    let mlp: Arch = "mlp:784-300-100-10".parse().unwrap();
    let lenet: Arch = "lenet5".parse().unwrap();
    let cases: Vec<(&str, &Arch, bool)> = vec![
        ("mlp_train", &mlp, true),
        ("mlp_eval", &mlp, false),
        ("lenet5_train", &lenet, true),
        ("lenet5_eval", &lenet, false),
    ];
    let mut results = Vec::new();
    println!("{:<14} {:>12} {:>14}", "name", "steps/s", "samples/s");
    for (name, arch, train) in cases {
        if o.only.as_deref().is_some_and(|x| x != name) {
            continue;
        }
        let runs: Vec<f64> = (0..o.repeats.max(1))
            .map(|_| {
                if train {
                    bench_train(arch, o.seconds)
                } else {
                    bench_eval(arch, o.seconds)
                }
            })
            .collect();
        let r = median(runs);
        if train {
            println!("{name:<14} {r:>12.1} {:>14.0}", r * 128.0);
            results.push(json!({"name": name, "steps_per_s": r, "samples_per_s": r * 128.0}));
        } else {
            println!("{name:<14} {:>12} {r:>14.0}", "-");
            results.push(json!({"name": name, "samples_per_s": r}));
        }
    }
    if let Some(p) = o.json {
        let v = json!({"impl": "modeconn (burn flex)", "results": results});
        std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).expect("write json");
    }
}
