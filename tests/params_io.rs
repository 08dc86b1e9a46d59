//! ParamSet algebra and safetensors files: exact round trips and clear errors by name.

use modeconn::arch::Arch;
use modeconn::backend;
use modeconn::network_file::{load_model, save_model};
use modeconn::params::ParamSet;

#[test]
fn model_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let device = backend::device();
    for spec in ["mlp:64-32-16-10", "lenet5"] {
        let arch: Arch = spec.parse().unwrap();
        let p = arch.init(7, &device);
        let path = dir.path().join("m.safetensors");
        save_model(&path, &arch, &p).unwrap();
        let bytes1 = std::fs::read(&path).unwrap();
        let (a2, p2) = load_model(&path, &device).unwrap();
        assert_eq!(a2, arch);
        let (v1, v2) = (p.to_flat(), p2.to_flat());
        assert!(v1.iter().zip(&v2).all(|(a, b)| a.to_bits() == b.to_bits()));
        save_model(&path, &a2, &p2).unwrap();
        assert_eq!(
            bytes1,
            std::fs::read(&path).unwrap(),
            "re-saving changes bytes"
        );
    }
}

#[test]
fn wrong_shape_and_missing_names_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let device = backend::device();
    let a: Arch = "mlp:64-32-10".parse().unwrap();
    let p = a.init(1, &device);
    // A file claiming a different architecture: shapes no longer match.
    let path = dir.path().join("bad.safetensors");
    let meta = modeconn::params::io::FileMeta::new("model", "mlp:64-33-10");
    modeconn::params::io::save(&path, &meta, &[("", &p)]).unwrap();
    let err = load_model(&path, &device).unwrap_err().to_string();
    assert!(
        err.contains("fc1.weight") && err.contains("bad.safetensors"),
        "{err}"
    );
    assert!(
        err.contains("[33, 64]") && err.contains("[32, 64]"),
        "{err}"
    );
    // A deeper architecture: a name is missing.
    let meta = modeconn::params::io::FileMeta::new("model", "mlp:64-32-10-10");
    modeconn::params::io::save(&path, &meta, &[("", &p)]).unwrap();
    let err = load_model(&path, &device).unwrap_err().to_string();
    assert!(err.contains("missing parameter `fc3.weight`"), "{err}");
    // Not a safetensors file at all.
    std::fs::write(&path, b"garbage").unwrap();
    let err = load_model(&path, &device).unwrap_err().to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
}

#[test]
fn weight_space_algebra() {
    let device = backend::device();
    let a: Arch = "mlp:5-4-3".parse().unwrap();
    let p = a.init(1, &device);
    let q = a.init(2, &device);
    let mid = p.lerp(&q, 0.5).unwrap();
    let comb = ParamSet::combination(&[&p, &q], &[0.5, 0.5]).unwrap();
    let d = mid.sub(&comb).unwrap().norm();
    assert!(d < 1e-6);
    let pf = p.to_flat();
    let qf = q.to_flat();
    let dot: f64 = pf.iter().zip(&qf).map(|(x, y)| *x as f64 * *y as f64).sum();
    assert!((p.dot(&q).unwrap() - dot).abs() < 1e-9);
    assert!((p.norm().powi(2) - p.dot(&p).unwrap()).abs() < 1e-6);
    let r = p.axpy(2.0, &q).unwrap().to_flat();
    assert!(
        r.iter()
            .zip(pf.iter().zip(&qf))
            .all(|(r, (x, y))| (r - (x + 2.0 * y)).abs() < 1e-6)
    );
    let back = ParamSet::from_flat(p.layout().clone(), &pf, &device).unwrap();
    assert_eq!(back.to_flat(), pf);
    let sq = p.sq_norm_tensor().into_scalar::<f32>() as f64;
    assert!((sq - p.norm().powi(2)).abs() < 1e-3);
    // The host combination (curve training) is bit-identical to the tensor one.
    let r = a.init(3, &device);
    for c in [
        [0.3f32, 0.0, 0.7],
        [1.0, 0.5, 0.0],
        [0.0, 0.0, 0.0],
        [-0.25, 1.0, 0.6],
    ] {
        let want = ParamSet::combination(&[&p, &q, &r], &c).unwrap().to_vecs();
        let got = ParamSet::combination_vecs(&[&p, &q, &r], &c).unwrap();
        assert_eq!(got, want, "{c:?}");
    }
    // Four non-zero terms (a cubic Bezier).
    let s = a.init(4, &device);
    let c = [0.1f32, 0.2, -0.3, 1.0];
    let want = ParamSet::combination(&[&p, &q, &r, &s], &c)
        .unwrap()
        .to_vecs();
    let got = ParamSet::combination_vecs(&[&p, &q, &r, &s], &c).unwrap();
    assert_eq!(got, want);
    let other = "mlp:64-16-10".parse::<Arch>().unwrap().init(1, &device);
    assert!(ParamSet::combination_vecs(&[&p, &other], &[0.5, 0.5]).is_err());
}
