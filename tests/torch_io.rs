//! PyTorch state dicts in and out, against fixtures a real PyTorch made
//! (`scripts/make-torch-fixtures.py`): imported networks give the logits PyTorch computed,
//! wrong files are refused naming the tensor, and an export holds the fixture's tensors.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use modeconn::backend;
use modeconn::network_file::load_model;
use modeconn::params::host_vec;

use common::modeconn;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch")
        .join(name)
}

/// A float32 tensor of a safetensors file, with its shape.
fn tensor(file: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
    let values = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (values, v.shape().to_vec())
}

fn import(file: &str, arch: &str, out: &Path, extra: &[&str]) -> PathBuf {
    modeconn()
        .arg("import")
        .arg(fixture(file))
        .args(["--from", "torch", "--arch", arch, "--out"])
        .arg(out)
        .args(extra)
        .assert()
        .success();
    out.join("model.safetensors")
}

/// The imported network's logits on PyTorch's inputs, against PyTorch's logits.
fn logits_match(model: &Path, input: &str, expected: &str) {
    let want_file = fixture("expected.safetensors");
    let (x, shape) = tensor(&want_file, input);
    let (want, _) = tensor(&want_file, expected);
    let device = backend::device();
    let (arch, params) = load_model(model, &device).unwrap();
    let x = Tensor::<2>::from_data(TensorData::new(x, [shape[0], shape[1]]), &device);
    let got = host_vec(&arch.forward(&params, x));
    assert_eq!(got.len(), want.len());
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-5,
        "{expected}: logits differ from PyTorch's by {worst}"
    );
}

#[test]
fn imported_networks_give_pytorchs_logits() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // (file, architecture, input, expected logits)
        ("mlp_named.pt", "mlp:64-16-10", "x64", "mlp_named"),
        ("mlp_named.safetensors", "mlp:64-16-10", "x64", "mlp_named"),
        // nn.Sequential numbering behind DataParallel's `module.`, by the shape chain.
        ("mlp_sequential.pt", "mlp:64-16-10", "x64", "mlp_sequential"),
        (
            "mlp_sequential.safetensors",
            "mlp:64-16-10",
            "x64",
            "mlp_sequential",
        ),
        // float16 converted to float32.
        (
            "mlp_sequential_f16.safetensors",
            "mlp:64-16-10",
            "x64",
            "mlp_sequential_f16",
        ),
        // BatchNorm with its running statistics; num_batches_tracked dropped.
        (
            "mlp_bn_sequential.pt",
            "mlp:64-16-16-10:norm=bn",
            "x64",
            "mlp_bn_sequential",
        ),
        ("lenet5.pt", "lenet5", "x784", "lenet5"),
    ];
    for (i, (file, arch, x, want)) in cases.iter().enumerate() {
        let model = import(file, arch, &dir.path().join(i.to_string()), &[]);
        logits_match(&model, x, want);
    }
    // Explicit rules: the named MLP under other names, renamed back.
    let renamed = dir.path().join("renamed.safetensors");
    let src = fixture("mlp_named.safetensors");
    let bytes = std::fs::read(&src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n.replace("fc", "net.layer"), v))
        .collect();
    std::fs::write(&renamed, safetensors::serialize(views, None).unwrap()).unwrap();
    let out = dir.path().join("r");
    modeconn()
        .arg("import")
        .arg(&renamed)
        .args([
            "--arch",
            "mlp:64-16-10",
            "--rename",
            r"^net\.layer(\d)=fc$1",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    logits_match(&out.join("model.safetensors"), "x64", "mlp_named");
    // Without the rule, the unknown prefix is named.
    let out = dir.path().join("unknown");
    let a = modeconn()
        .arg("import")
        .arg(&renamed)
        .args(["--arch", "mlp:64-16-10", "--out"])
        .arg(&out)
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(
        err.contains("`net.layer1.weight`") && err.contains("--rename"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists());
}

#[test]
fn wrong_files_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], &str); 6] = [
        // A tensor the architecture needs is missing.
        (
            "mlp_named.pt",
            &["--arch", "mlp:64-16-16-10"],
            "no tensors `fc3.weight`, `fc3.bias`",
        ),
        // A wrong shape.
        (
            "mlp_named.pt",
            &["--arch", "mlp:64-32-10"],
            "`fc1.weight` has shape [16, 64]",
        ),
        // An nn.Sequential of another depth.
        (
            "mlp_sequential.pt",
            &["--arch", "mlp:64-16-16-10"],
            "2 modules",
        ),
        // A BatchNorm net read as a net without.
        (
            "mlp_bn_sequential.pt",
            &["--arch", "mlp:64-16-16-10"],
            "5 modules with tensors (0, 1, 3, 4, 6)",
        ),
        // Not a state dict at all.
        (
            "expected.safetensors",
            &["--arch", "mlp:64-16-10", "--key", "x"],
            "--key",
        ),
        ("missing.pt", &["--arch", "mlp:64-16-10"], "missing.pt"),
    ];
    for (i, (file, args, needle)) in cases.iter().enumerate() {
        let out = dir.path().join(i.to_string());
        let a = modeconn()
            .arg("import")
            .arg(fixture(file))
            .args(*args)
            .arg("--out")
            .arg(&out)
            .assert()
            .failure()
            .code(1);
        let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
        assert!(err.contains(needle), "{file} {args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!out.exists(), "{file}: wrote {}", out.display());
    }
}

#[test]
fn an_export_holds_the_pytorch_tensors_it_was_imported_from() {
    let dir = tempfile::tempdir().unwrap();
    for (file, arch) in [
        ("mlp_named.safetensors", "mlp:64-16-10"),
        ("mlp_bn_sequential.pt", "mlp:64-16-16-10:norm=bn"),
    ] {
        let model = import(file, arch, &dir.path().join(file), &[]);
        let out = dir.path().join(format!("{file}-export"));
        modeconn()
            .args(["export", "--to", "torch", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let exported = out.join("state_dict.safetensors");
        let bytes = std::fs::read(&exported).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names().into_iter().map(String::from).collect::<Vec<_>>();
        names.sort();
        if file.ends_with(".safetensors") {
            // The named module's own names and bytes.
            let src = std::fs::read(fixture(file)).unwrap();
            let src = safetensors::SafeTensors::deserialize(&src).unwrap();
            let mut want = src
                .names()
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
            want.sort();
            assert_eq!(names, want);
            for n in &names {
                assert_eq!(
                    st.tensor(n).unwrap().data(),
                    src.tensor(n).unwrap().data(),
                    "{n}"
                );
                assert_eq!(
                    st.tensor(n).unwrap().shape(),
                    src.tensor(n).unwrap().shape(),
                    "{n}"
                );
            }
        } else {
            // BatchNorm: PyTorch's buffer names, num_batches_tracked included (strict loading).
            for n in [
                "bn1.running_mean",
                "bn1.running_var",
                "bn2.weight",
                "fc3.bias",
            ] {
                assert!(names.contains(&n.to_string()), "{names:?}");
            }
            let t = st.tensor("bn1.num_batches_tracked").unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::I64);
            assert!(t.shape().is_empty());
            // Re-imported, the export is the same network.
            let again = import_path(&exported, arch, &dir.path().join("again"));
            logits_match(&again, "x64", "mlp_bn_sequential");
        }
    }
    // Only plain network files.
    let out = dir.path().join("bad");
    let a = modeconn()
        .args(["export", "--model"])
        .arg(fixture("mlp_named.pt"))
        .arg("--out")
        .arg(&out)
        .assert()
        .failure()
        .code(1);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("--model"));
    assert!(!out.exists());
}

fn import_path(file: &Path, arch: &str, out: &Path) -> PathBuf {
    modeconn()
        .arg("import")
        .arg(file)
        .args(["--arch", arch, "--out"])
        .arg(out)
        .assert()
        .success();
    out.join("model.safetensors")
}
