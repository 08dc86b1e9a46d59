//! Every figure kind renders from a small result fixture to a non-empty PNG and SVG of the
//! requested size, through the library and through `modeconn plot` (which detects the kind).

use std::path::Path;

use assert_cmd::Command;
use modeconn::arch::Arch;
use modeconn::eval::plane::PlaneResult;
use modeconn::plot::detect::{PlotConfig, plot_path};
use modeconn::plot::{Size, png_size};
use modeconn::report::write_json;
use modeconn::variational::{Method, VConfig, VModel, save_vmodel};

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

const PATH_CSV: &str = "path,t,train_loss,train_err,test_loss,test_err,dl\n";

/// A path.csv with a line (barrier) and a chain (flat), 11 points each.
fn path_fixture(dir: &Path) {
    let mut s = String::from(PATH_CSV);
    for (name, bump) in [("line", 1.5), ("chain", 0.05), ("aligned", 0.2)] {
        for i in 0..11 {
            let t = i as f64 / 10.0;
            let b = bump * (std::f64::consts::PI * t).sin();
            s.push_str(&format!(
                "{name},{t},{},{},{},{},{}\n",
                0.05 + b,
                0.01 + b / 10.0,
                0.08 + b,
                0.02 + b / 8.0,
                if i == 0 { 0.0 } else { 1.0 }
            ));
        }
    }
    std::fs::write(dir.join("path.csv"), s).unwrap();
}

/// A 9×7 plane.json of a quadratic bowl with a valley along the curve.
fn plane_fixture(dir: &Path) {
    let (nx, ny) = (9, 7);
    let x: Vec<f64> = (0..nx).map(|i| -1.0 + 7.0 * i as f64 / (nx - 1) as f64).collect();
    let y: Vec<f64> = (0..ny).map(|j| -0.5 + 3.0 * j as f64 / (ny - 1) as f64).collect();
    let f = |xx: f64, yy: f64| 0.02 + ((yy - 0.3 * xx * (5.0 - xx) / 3.0).powi(2) + 0.01).ln_1p();
    let grid = |scale: f64| -> Vec<Vec<f64>> {
        y.iter()
            .map(|&yy| x.iter().map(|&xx| scale * f(xx, yy)).collect())
            .collect()
    };
    let ts: Vec<f64> = (0..21).map(|i| i as f64 / 20.0).collect();
    let p = PlaneResult {
        arch: "mlp:64-128-10".into(),
        curve_kind: "polychain".into(),
        grid: nx,
        margin: 0.2,
        dx: 5.0,
        dy: 2.0,
        x: x.clone(),
        y: y.clone(),
        train_loss: grid(1.0),
        train_err: grid(0.1),
        test_loss: grid(1.2),
        test_err: grid(0.12),
        a: [0.0, 0.0],
        b: [5.0, 0.0],
        bend: [2.5, 2.0],
        curve: ts
            .iter()
            .map(|&t| {
                if t <= 0.5 {
                    [5.0 * t, 4.0 * t]
                } else {
                    [5.0 * t, 4.0 * (1.0 - t)]
                }
            })
            .collect(),
        curve_t: ts,
        curve_off_plane: 0.0,
        train_samples: 100,
        test_samples: 50,
    };
    write_json(&dir.join("plane.json"), &p).unwrap();
}

/// A metrics.jsonl of a 5-epoch variational run with two layers and two ensemble sizes.
fn metrics_fixture(dir: &Path) {
    let mut s = String::new();
    for e in 1..=5 {
        let f = e as f64 / 5.0;
        let mut r = serde_json::json!({
            "epoch": e,
            "test_mode_acc": 0.5 + 0.4 * f,
            "sparsity": {"fc1": 0.8 * f, "fc2": 0.5 * f},
            "log_alpha_mean": {"fc1": -4.0 + 7.0 * f, "fc2": -4.0 + 4.0 * f},
            "compression": 1.0 + 5.0 * f,
        });
        if e % 2 == 1 || e == 5 {
            r["test_sample_acc"] = serde_json::json!(0.45 + 0.4 * f);
            r["test_ensemble_acc"] = serde_json::json!({"10": 0.52 + 0.4 * f, "20": 0.53 + 0.4 * f});
        }
        s.push_str(&format!("{r}\n"));
    }
    std::fs::write(dir.join("metrics.jsonl"), s).unwrap();
}

/// A freshly initialised sparse-VD model (log α ≈ −10 + spread) as variational.safetensors.
fn variational_fixture(dir: &Path) {
    let arch: Arch = "mlp:64-32-10".parse().unwrap();
    let model = VModel::new(arch, VConfig::new(Method::SparseVd)).unwrap();
    let device = modeconn::backend::device();
    let params = model.init(3, &device);
    save_vmodel(
        &dir.join("variational.safetensors"),
        &model,
        &params,
        serde_json::json!({}),
    )
    .unwrap();
}

fn check_pair(png: &Path, svg: &Path, size: Size) {
    let bytes = std::fs::read(png).unwrap();
    assert!(bytes.len() > 1000, "{} is nearly empty", png.display());
    assert_eq!(
        png_size(&bytes),
        Some((size.width, size.height)),
        "{}",
        png.display()
    );
    let text = std::fs::read_to_string(svg).unwrap();
    assert!(
        text.starts_with(&format!(
            "<svg width=\"{}\" height=\"{}\"",
            size.width, size.height
        )),
        "{}",
        svg.display()
    );
    assert!(text.contains("<text") && text.trim_end().ends_with("</svg>"));
}

#[test]
fn every_kind_renders_at_the_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let res = dir.path().join("results");
    std::fs::create_dir_all(&res).unwrap();
    path_fixture(&res);
    plane_fixture(&res);
    metrics_fixture(&res);
    variational_fixture(&res);
    std::fs::write(res.join("kl.csv"), modeconn::plot::kl::kl_table()).unwrap();
    let size = Size::new(720, 480);
    let out = dir.path().join("figs");
    let written = plot_path(
        &res,
        &out,
        &PlotConfig {
            size: Some(size),
            title: None,
        },
    )
    .unwrap();
    let mut kinds: Vec<&str> = written.iter().map(|w| w.kind).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["accuracy", "kl", "layers", "log-alpha-hist", "path", "plane"]
    );
    for w in &written {
        check_pair(&w.files.png, &w.files.svg, size);
    }
}

#[test]
fn plot_cli_detects_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    // Result directories two levels deep, as `modeconn run` lays them out.
    let a = dir.path().join("run/w1-w2");
    let b = dir.path().join("run/svd");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    path_fixture(&a);
    metrics_fixture(&b);
    modeconn()
        .arg("plot")
        .arg(dir.path().join("run"))
        .args(["--size", "800x500", "--out"])
        .arg(dir.path().join("figs"))
        .assert()
        .success();
    let size = Size::new(800, 500);
    for stem in ["w1-w2-path", "svd-accuracy", "svd-layers"] {
        let f = dir.path().join("figs").join(stem);
        check_pair(&f.with_extension("png"), &f.with_extension("svg"), size);
    }
    // A single file, default size and output directory (figures/ beside it).
    modeconn()
        .arg("plot")
        .arg(a.join("path.csv"))
        .assert()
        .success();
    let png = std::fs::read(a.join("figures/path.png")).unwrap();
    assert_eq!(png_size(&png), Some((1400, 600)));
    // The KL table is computed on request.
    modeconn()
        .args(["plot", "--kl", "--size", "640x480", "--out"])
        .arg(dir.path().join("kl"))
        .assert()
        .success();
    assert!(dir.path().join("kl/kl.csv").exists());
    check_pair(
        &dir.path().join("kl/kl.png"),
        &dir.path().join("kl/kl.svg"),
        Size::new(640, 480),
    );
}

#[test]
fn plot_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.csv"), "a,b\n1,2\n").unwrap();
    let out = modeconn()
        .arg("plot")
        .arg(dir.path().join("x.csv"))
        .assert()
        .failure()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let msg = String::from_utf8(out).unwrap();
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
    assert!(msg.contains("x.csv") && msg.contains("cannot plot"), "{msg}");
    let out = modeconn()
        .arg("plot")
        .arg(dir.path())
        .args(["--size", "10x10"])
        .assert()
        .failure()
        .code(1)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8(out).unwrap().contains("--size"));
    modeconn()
        .arg("plot")
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicates::str::contains("nothing to plot"));
}
