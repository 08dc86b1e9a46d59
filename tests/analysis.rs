//! Analysis specs: validation errors name the key and the file; a spec run twice does not
//! retrain (steps are cached by the hash of their resolved command line).

use assert_cmd::Command;

const SPEC: &str = r#"
name = "tiny"
[[step]]
id = "w1"
command = "train"
args = ["--arch", "mlp:64-16-10", "--epochs", "2", "--seed", "1", "-q"]
[[step]]
id = "w2"
command = "train"
args = ["--arch", "mlp:64-16-10", "--epochs", "2", "--seed", "2", "-q"]
[[step]]
id = "path"
command = "path"
args = ["--a", "{w1}/model.safetensors", "--b", "{w2}/model.safetensors", "--points", "5"]
[[step]]
id = "fig"
command = "plot"
args = ["{path}", "--out", "{run}/figures"]
"#;

#[test]
fn analysis_runs_once_then_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = dir.path().join("out");
    let run = || {
        let a = Command::cargo_bin("modeconn")
            .unwrap()
            .arg("run")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        String::from_utf8_lossy(&a.get_output().stdout).to_string()
    };
    let first = run();
    assert_eq!(first.matches("\"ran\"").count(), 4, "{first}");
    assert!(out.join("figures/path.png").exists());
    let model = out.join("w1/model.safetensors");
    let t1 = std::fs::metadata(&model).unwrap().modified().unwrap();
    let second = run();
    assert_eq!(second.matches("\"cached\"").count(), 4, "{second}");
    assert_eq!(std::fs::metadata(&model).unwrap().modified().unwrap(), t1);
    std::fs::write(
        &spec,
        SPEC.replace("\"--points\", \"5\"", "\"--points\", \"7\""),
    )
    .unwrap();
    // Changing one step's flags reruns that step and the figure drawn from it.
    let third = run();
    assert_eq!(third.matches("\"ran\"").count(), 2, "{third}");
    // Changing an upstream step reruns it and everything that reads it, not its siblings.
    std::fs::write(
        &spec,
        SPEC.replace("\"--points\", \"5\"", "\"--points\", \"7\"")
            .replace(
                "\"--epochs\", \"2\", \"--seed\", \"1\"",
                "\"--epochs\", \"3\", \"--seed\", \"1\"",
            ),
    )
    .unwrap();
    let fourth = run();
    assert_eq!(fourth.matches("\"ran\"").count(), 3, "{fourth}");
    assert_eq!(fourth.matches("\"cached\"").count(), 1, "{fourth}");
    assert_ne!(std::fs::metadata(&model).unwrap().modified().unwrap(), t1);
    // --rerun ignores the cache: every step runs again.
    let a = Command::cargo_bin("modeconn")
        .unwrap()
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--rerun")
        .assert()
        .success();
    let fifth = String::from_utf8_lossy(&a.get_output().stdout).to_string();
    assert_eq!(fifth.matches("\"ran\"").count(), 4, "{fifth}");
}

#[test]
fn spec_errors_name_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("broken.toml");
    std::fs::write(
        &spec,
        SPEC.replace(
            "args = [\"--arch\", \"mlp:64-16-10\", \"--epochs\", \"2\", \"--seed\", \"1\"",
            "arguments = [\"--arch\", \"mlp:64-16-10\", \"--epochs\", \"2\", \"--seed\", \"1\"",
        ),
    )
    .unwrap();
    let a = Command::cargo_bin("modeconn")
        .unwrap()
        .arg("run")
        .arg(&spec)
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(
        err.contains("broken.toml") && err.contains("arguments"),
        "{err}"
    );
    // A flag error inside a step names the file and the step.
    std::fs::write(
        &spec,
        SPEC.replace("\"--points\", \"5\"", "\"--pointz\", \"5\""),
    )
    .unwrap();
    let a = Command::cargo_bin("modeconn")
        .unwrap()
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(dir.path().join("o"))
        .assert()
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(
        err.contains("broken.toml") && err.contains("path") && err.contains("--pointz"),
        "{err}"
    );
}
