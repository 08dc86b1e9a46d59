//! Sharpness (`modeconn hessian`, `path --hessian`): Hessian-vector products against the closed
//! form of a linear softmax model; power iteration and Hutchinson's trace against the dense
//! Hessian of a digits MLP; the CLI end to end, and bad flags refused in one line.

mod common;

use common::{json, modeconn, refused_in_one_line};
use faer::Mat;
use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::data::{DataConfig, Source, load};
use modeconn::eval::hessian::{Hessian, hutchinson_trace, top_eigenvalues};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// For logits `z = Wx + b` the Hessian of the mean cross-entropy is
/// `(1/n)·Σ_i A_iᵀ(diag p_i − p_i p_iᵀ)A_i` with `∂z_k/∂W_kj = x_j`, `∂z_k/∂b_k = 1`: the
/// central-difference products match it.
#[test]
fn hessian_vector_products_match_the_linear_softmax_closed_form() {
    let device = backend::device();
    let arch: Arch = "mlp:6-3".parse().unwrap();
    let data = common::tiny_data(16);
    let params = arch.init(3, &device).scale(3.0);
    let h = Hessian::new(&arch, &params, &data).unwrap();
    let d = h.len();
    assert_eq!(d, 21);
    let theta: Vec<f64> = params.to_flat().into_iter().map(f64::from).collect();
    let (k, din) = (3, 6);
    let mut dense = vec![vec![0.0f64; d]; d];
    for i in 0..data.len() {
        let x: Vec<f64> = data.x[i * din..(i + 1) * din]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let z: Vec<f64> = (0..k)
            .map(|r| theta[18 + r] + (0..din).map(|j| theta[r * din + j] * x[j]).sum::<f64>())
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let p: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
        // A_i: row r has x at W_r and 1 at b_r.
        let a = |r: usize, c: usize| -> f64 {
            if c < 18 {
                if c / din == r { x[c % din] } else { 0.0 }
            } else if c - 18 == r {
                1.0
            } else {
                0.0
            }
        };
        for r in 0..k {
            for s in 0..k {
                let w = if r == s { p[r] } else { 0.0 } - p[r] * p[s];
                for (c1, row) in dense.iter_mut().enumerate() {
                    let a1 = a(r, c1);
                    if a1 == 0.0 {
                        continue;
                    }
                    for (c2, h) in row.iter_mut().enumerate() {
                        *h += a1 * w * a(s, c2) / data.len() as f64;
                    }
                }
            }
        }
    }
    // Exact products (R-operator, f64) to rounding; central differences of f32 gradients
    // (no kinks in a linear model) to 1e-3.
    let diff = Hessian::by_differences(&arch, &params, &data).unwrap();
    assert_eq!((h.method(), diff.method()), ("exact", "central-difference"));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (hess, tol) in [(&h, 1e-10), (&diff, 1e-3)] {
        for _ in 0..3 {
            let v = hess.random_direction(&mut rng);
            let hv = hess.hvp(&v);
            let want: Vec<f64> = (0..d)
                .map(|i| (0..d).map(|j| dense[i][j] * v[j]).sum())
                .collect();
            let err: f64 = hv
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            let scale: f64 = want.iter().map(|a| a * a).sum::<f64>().sqrt();
            assert!(
                err < tol * scale,
                "{}: ‖Hv − closed form‖ = {err}, ‖Hv‖ = {scale}",
                hess.method()
            );
        }
    }
    assert!(diff.step_error(&diff.random_direction(&mut rng)) < 1e-2);
}

/// On a digits MLP (D = 1210): the dense Hessian from D products, symmetrised, has the top
/// eigenvalues power iteration finds, and a trace within three standard errors of Hutchinson's.
#[test]
fn power_iteration_and_hutchinson_match_the_dense_hessian_of_a_digits_mlp() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::train_digits(tmp.path(), "mlp:64-16-10", "10", &[]);
    let device = backend::device();
    let (arch, params) = modeconn::network_file::load_model(&model, &device).unwrap();
    let split = load(&DataConfig::new(Source::Digits)).unwrap();
    let data = split.train.random_subset(300, 0);
    let h = Hessian::new(&arch, &params, &data).unwrap();
    let d = h.len();
    assert_eq!(d, 1210);
    let cols: Vec<Vec<f64>> = (0..d)
        .map(|j| {
            let mut e = vec![0.0; d];
            e[j] = 1.0;
            h.hvp(&e)
        })
        .collect();
    let dense = Mat::from_fn(d, d, |i, j| 0.5 * (cols[j][i] + cols[i][j]));
    let mut eig: Vec<f64> = dense
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .unwrap()
        .into_iter()
        .collect();
    eig.sort_by(|a, b| b.abs().total_cmp(&a.abs()));
    let trace: f64 = (0..d).map(|i| dense[(i, i)]).sum();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let pairs = top_eigenvalues(
        |v| h.hvp(v),
        |r| h.random_direction(r),
        2,
        100,
        1e-4,
        &mut rng,
    );
    for (p, want) in pairs.iter().zip(&eig) {
        assert!(
            (p.value - want).abs() < 1e-3 * want.abs(),
            "power iteration {} vs dense {want}",
            p.value
        );
    }
    let (tr, se) = hutchinson_trace(|v| h.hvp(v), |r| h.rademacher(r), 100, &mut rng);
    assert!((tr - trace).abs() < 3.0 * se, "{tr} ± {se} vs {trace}");
    assert!(eig[0] > 0.0 && trace > 0.0);
}

#[test]
fn hessian_cli_on_digits() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = common::train_digits(&d.join("w"), "mlp:64-32-10", "10", &[]);
    let hessian = |out: &std::path::Path| {
        modeconn()
            .args(["hessian", "--model"])
            .arg(&model)
            .args([
                "--top",
                "2",
                "--trace-samples",
                "10",
                "--hessian-samples",
                "500",
            ])
            .arg("--out")
            .arg(out)
            .assert()
            .success();
    };
    let out = d.join("h");
    hessian(&out);
    let v = json(&out.join("hessian.json"));
    let eig = v["eigenvalues"].as_array().unwrap();
    assert_eq!(eig.len(), 2);
    assert!(eig[0].as_f64().unwrap().abs() >= eig[1].as_f64().unwrap().abs() * 0.99);
    assert_eq!(v["samples"], 500);
    assert_eq!(v["params"], 2410);
    assert!(v["trace"].as_f64().unwrap() > 0.0 && v["trace_se"].as_f64().unwrap() > 0.0);
    assert!(out.join("run.json").exists());
    // The same seeds give the same numbers.
    let again = d.join("again");
    hessian(&again);
    assert_eq!(json(&again.join("hessian.json")), v);
    let m = model.to_str().unwrap();
    let bad = d.join("bad");
    refused_in_one_line("hessian", &["--model", m, "--top", "0"], &bad, "--top");
    refused_in_one_line(
        "hessian",
        &["--model", m, "--trace-samples", "1"],
        &bad,
        "--trace-samples",
    );
    refused_in_one_line(
        "hessian",
        &["--model", m, "--hessian-samples", "0"],
        &bad,
        "--hessian-samples",
    );
}

/// `path --hessian`: the sharpness at every point of the line and of a chain, the line's ends
/// equal to `hessian` at the endpoints (same subset and seeds), the figure, and `plot` redraws
/// it.
#[test]
fn path_hessian_along_the_line_and_a_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (a, b, _) = common::two_minima_and_chain(
        d,
        &[
            "--data",
            "digits",
            "--arch",
            "mlp:64-16-10",
            "--epochs",
            "8",
        ],
        &["--data", "digits", "--epochs", "4"],
        &["--data", "digits", "--points", "5"],
    );
    let flags = [
        "--hessian-points",
        "3",
        "--trace-samples",
        "4",
        "--hessian-samples",
        "200",
    ];
    let out = d.join("ph");
    modeconn()
        .args([
            "path",
            "--data",
            "digits",
            "--points",
            "5",
            "--hessian",
            "--a",
        ])
        .arg(&a)
        .arg("--b")
        .arg(&b)
        .arg("--curve")
        .arg(format!(
            "chain={}",
            d.join("chain/curve.safetensors").display()
        ))
        .args(flags)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let rows = common::csv_rows(&out.join("hessian.csv"));
    assert_eq!(rows.len(), 6);
    assert!(out.join("hessian.png").exists() && out.join("hessian.svg").exists());
    let at_a = d.join("ha");
    modeconn()
        .args(["hessian", "--data", "digits", "--model"])
        .arg(&a)
        .args(&flags[2..])
        .arg("--out")
        .arg(&at_a)
        .assert()
        .success();
    let v = json(&at_a.join("hessian.json"));
    let line0 = rows
        .iter()
        .find(|r| r["path"] == "line" && r["t"] == "0")
        .unwrap();
    let chain0 = rows
        .iter()
        .find(|r| r["path"] == "chain" && r["t"] == "0")
        .unwrap();
    let top = |r: &std::collections::HashMap<String, String>| -> f64 {
        r["top_eigenvalue"].parse().unwrap()
    };
    assert_eq!(top(line0), v["eigenvalues"][0].as_f64().unwrap());
    assert_eq!(top(chain0), top(line0));
    assert_eq!(
        line0["trace"].parse::<f64>().unwrap(),
        v["trace"].as_f64().unwrap()
    );
    std::fs::remove_file(out.join("hessian.png")).unwrap();
    modeconn().arg("plot").arg(&out).assert().success();
    assert!(out.join("hessian.png").exists());
    let bad = d.join("bad");
    refused_in_one_line(
        "path",
        &[
            "--a",
            a.to_str().unwrap(),
            "--b",
            b.to_str().unwrap(),
            "--hessian",
            "--top",
            "0",
        ],
        &bad,
        "--top",
    );
}
