//! VGG with and without batch normalisation, and ResNet-20: the spec strings, function-preserving
//! permutations of conv channels, BN statistics, the flattening into `fc1` and the residual
//! streams, weight and activation matching that undo them, and `train` / `connect` / `path`
//! end to end on the digits and on an MNIST subset.

use modeconn::arch::Arch;
use modeconn::data::Dataset;
use modeconn::eval::state::{StateSample, recompute};
use modeconn::params::host_vec;
use modeconn::permute::{
    Correlation, Permutation, activation_matching, activation_stats, apply, weight_matching,
};

mod common;
use common::{json, perturbed};

#[test]
fn specs_parse_print_and_reject_bad_options() {
    for s in [
        "vgg16",
        "vgg11:w=0.5",
        "vgg16:w=0.25:norm=none",
        "vgg11:w=0.125:in=1x28x28",
    ] {
        let a: Arch = s.parse().unwrap();
        assert_eq!(a.to_string(), s);
        assert_eq!(a.to_string().parse::<Arch>().unwrap(), a);
    }
    let a: Arch = "vgg16".parse().unwrap();
    // Garipov et al.'s VGG16 (BN, no dropout): 13 convolutions, 512-512-10 classifier.
    let convs = a
        .layout()
        .entries()
        .iter()
        .filter(|e| e.name.starts_with("conv"))
        .count();
    assert_eq!(convs, 13);
    assert_eq!(
        a.layout().entry("fc1.weight").unwrap().shape,
        vec![512, 512]
    );
    let mnist: Arch = "vgg11:in=1x28x28".parse().unwrap();
    assert_eq!(
        mnist.layout().entry("conv1.weight").unwrap().shape,
        vec![64, 1, 3, 3]
    );
    for bad in [
        "vgg13",
        "vgg16:w=0",
        "vgg16:w=x",
        "vgg16:norm=ln",
        "vgg16:in=3x8x9",
        "vgg16:in=1x27x27",
        "vgg16:depth=3",
    ] {
        let e = bad.parse::<Arch>().unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn resnet20_specs_and_size() {
    // ResNet-20 (He et al. 2016): 19 convolutions on the main path and two projection
    // shortcuts, about 0.27M parameters at width 1.
    let r: Arch = "resnet20".parse().unwrap();
    assert_eq!(r.to_string(), "resnet20");
    let convs = r
        .layout()
        .entries()
        .iter()
        .filter(|e| e.shape.len() == 4)
        .count();
    assert_eq!(convs, 19 + 2);
    let params = r.param_count();
    assert!((260_000..285_000).contains(&params), "{params}");
    for s in ["resnet20:w=4", "resnet20:in=1x28x28"] {
        assert_eq!(s.parse::<Arch>().unwrap().to_string(), s);
    }
    for bad in [
        "resnet20:w=0",
        "resnet20:w=1.5",
        "resnet20:in=1x2x2",
        "resnet20:norm=none",
    ] {
        let e = bad.parse::<Arch>().unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn permutations_keep_eval_logits_and_weight_and_activation_matching_undo_them() {
    for spec_str in [
        "vgg11:w=0.0625:in=1x8x8",
        "vgg11:w=0.0625:norm=none:in=1x8x8",
        "vgg16:w=0.0625:in=3x32x32",
        "resnet20:in=1x8x8",
        "resnet20:w=2:in=3x12x12",
    ] {
        let arch: Arch = spec_str.parse().unwrap();
        let spec = arch.perm_spec();
        let p = perturbed(&arch, 5);
        let n = 3;
        let x = common::inputs(&arch, n);
        let perm = Permutation::random(&spec, 17);
        let q = apply(&spec, &perm, &p).unwrap();
        let (a, b) = (
            host_vec(&arch.forward(&p, x.clone())),
            host_vec(&arch.forward(&q, x)),
        );
        let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = common::max_abs_diff(&a, &b);
        assert!(worst <= 1e-5 * scale, "{spec_str}: logits moved by {worst}");
        let m = weight_matching(&spec, &p, &q, &Default::default()).unwrap();
        let back = apply(&spec, &m.perm, &q).unwrap();
        assert_eq!(
            back.to_vecs(),
            p.to_vecs(),
            "{spec_str}: matching did not undo it"
        );
        // Activation matching (per-channel post-activation correlations over images and
        // positions) undoes it too: each unit correlates perfectly with its own image. The
        // statistics of a BN net are first recomputed on the images, so that its channels are
        // normalised there rather than dead. (An untrained VGG without normalisation is left
        // out: its deep activations shrink to nearly collinear features, between which
        // correlations cannot tell units apart.)
        if spec_str.contains("norm=none") {
            continue;
        }
        let data = random_images(&arch, 64);
        let dev = modeconn::backend::device();
        let p = recompute(&arch, &p, &data, &StateSample::ALL, &dev);
        let q = apply(&spec, &perm, &p).unwrap();
        let stats = activation_stats(&arch, &p, &q, &data, 32, &dev).unwrap();
        let am = activation_matching(&spec, &stats, Correlation::Pearson).unwrap();
        // Units dead on every input (constant post-activations) have no correlation to match
        // by; every live unit must be paired as weight matching pairs it.
        let mut live = 0;
        for (k, name) in am.perm.names.iter().enumerate() {
            let st = stats.iter().find(|s| &s.name == name).unwrap();
            let n = st.samples as f64;
            for (i, (&s1, &s2)) in st.sum_a.iter().zip(&st.sq_a).enumerate() {
                if s2 / n - (s1 / n).powi(2) > 1e-9 {
                    live += 1;
                    assert_eq!(
                        am.perm.maps[k][i], m.perm.maps[k][i],
                        "{spec_str}: {name} unit {i}"
                    );
                }
            }
        }
        assert!(live > 0, "{spec_str}: no live unit");
    }
}

/// `n` images of `arch`'s input shape with values uniform in [0, 1) (seeded).
fn random_images(arch: &Arch, n: usize) -> Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let d = arch.input_dim();
    let shape = arch.image_shape().expect("a conv net");
    Dataset {
        name: "random".into(),
        x: (0..n * d).map(|_| rng.random::<f32>()).collect(),
        y: (0..n).map(|i| (i % 10) as u8).collect(),
        shape,
        classes: 10,
    }
}

#[test]
fn a_vgg_bn_trains_and_its_curve_beats_the_line() {
    let d = tempfile::tempdir().unwrap();
    let arch = "vgg11:w=0.0625:in=1x8x8";
    let (_, _, s) = common::two_minima_and_chain(
        d.path(),
        &[
            "--arch",
            arch,
            "--epochs",
            "10",
            "--lr",
            "0.05",
            "--train-subset",
            "1200",
        ],
        &["--epochs", "4", "--lr", "0.05"],
        &["--points", "5", "--train-subset", "400"],
    );
    for w in ["w1", "w2"] {
        let m = json(&d.path().join(w).join("metrics.json"));
        assert!(m["test_acc"].as_f64().unwrap() > 0.85, "{w}: {m}");
    }
    let run = json(&d.path().join("w1/run.json"));
    assert_eq!(run["config"]["train_subset"], 1200);
    common::assert_chain_below_line(&s);
    // The plane and the figures work unchanged for a BN net: every grid point's statistics are
    // recomputed (and recorded), the bend and the endpoints sit on the plane.
    let p = |f: &str| d.path().join(f);
    common::modeconn()
        .args([
            "plane",
            "--grid",
            "3",
            "--train-subset",
            "200",
            "--bn-batches",
            "1",
        ])
        .arg("--a")
        .arg(p("w1/model.safetensors"))
        .arg("--b")
        .arg(p("w2/model.safetensors"))
        .arg("--curve")
        .arg(p("chain/curve.safetensors"))
        .arg("--out")
        .arg(p("plane"))
        .assert()
        .success();
    let plane = json(&p("plane/plane.json"));
    let grid = plane["train_loss"].as_array().unwrap();
    assert_eq!(grid.len(), 3);
    assert!(
        grid.iter()
            .flat_map(|r| r.as_array().unwrap())
            .all(|v| v.as_f64().unwrap().is_finite())
    );
    let rec = &plane["state_recomputed"];
    assert_eq!(rec["samples"], 128, "{rec}");
    for dir in ["plane", "path"] {
        common::modeconn()
            .arg("plot")
            .arg(p(dir))
            .assert()
            .success();
    }
    assert!(p("plane/plane_train_loss.png").exists() && p("path/path.png").exists());
}

/// MNIST under the crate root (`bash scripts/fetch-data.sh mnist`): `None` (with a skip note)
/// when absent, a failure under `CI=true`, where `.ci/run` fetches it.
fn mnist_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    if dir.join("train-images-idx3-ubyte").exists()
        || dir.join("train-images-idx3-ubyte.gz").exists()
    {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} not present under CI=true",
        dir.display()
    );
    eprintln!("skipping: {} not present", dir.display());
    None
}

/// The whole BN pipeline on real 28×28 images: a VGG-BN trained for 252 steps on an MNIST
/// subset, a chain fitted in train mode on the same subset, and the path with the statistics
/// recomputed at every point (on a seeded subset), whose chain stays below the line.
#[test]
fn a_vgg_bn_on_an_mnist_subset_its_curve_beats_the_line() {
    let Some(dir) = mnist_dir() else { return };
    let d = tempfile::tempdir().unwrap();
    let data = ["--data", "mnist", "--data-dir", dir.to_str().unwrap()];
    let arch = "vgg11:w=0.0625:in=1x28x28";
    let train = [
        &data[..],
        &[
            "--arch",
            arch,
            "--epochs",
            "4",
            "--batch-size",
            "32",
            "--lr",
            "0.05",
        ],
        &["--train-subset", "2000"],
    ]
    .concat();
    let connect = [
        &data[..],
        &["--epochs", "2", "--batch-size", "32", "--lr", "0.05"],
        &["--train-subset", "2000"],
    ]
    .concat();
    let path = [
        &data[..],
        &[
            "--points",
            "5",
            "--train-subset",
            "2000",
            "--bn-batches",
            "4",
        ],
    ]
    .concat();
    let (_, _, s) = common::two_minima_and_chain(d.path(), &train, &connect, &path);
    for w in ["w1", "w2"] {
        let m = json(&d.path().join(w).join("metrics.json"));
        assert!(m["test_acc"].as_f64().unwrap() > 0.9, "{w}: {m}");
    }
    let rec = json(&d.path().join("path/run.json"))["result"]["state_recomputed"].clone();
    assert_eq!(
        (rec["samples"].as_u64(), rec["subset"].as_str()),
        (Some(512), Some("seeded"))
    );
    common::assert_chain_below_line(&s);
}
