//! What a user meets around the commands: completion scripts and man pages, plain progress in
//! logs, `NO_COLOR`, the memory guard, error lines without repetition, analysis-spec variables
//! and profiles, and the command lines that `probe`'s sub-steps record.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn modeconn() -> Command {
    Command::cargo_bin("modeconn").unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn stderr_of(args: &[&str]) -> String {
    let out = modeconn().args(args).assert().failure().code(1);
    String::from_utf8_lossy(&out.get_output().stderr).to_string()
}

#[test]
fn completions_and_man_pages_cover_every_command() {
    let out = modeconn().args(["completions", "bash"]).assert().success();
    let script = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for cmd in ["train", "connect", "vtrain", "run", "demo", "man"] {
        assert!(script.contains(cmd), "bash completion lacks {cmd}");
    }
    assert!(script.contains("--variance-layers"));
    let d = tempfile::tempdir().unwrap();
    modeconn()
        .args(["man", "--out"])
        .arg(d.path())
        .assert()
        .success();
    let page = std::fs::read_to_string(d.path().join("modeconn-vtrain.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "not roff");
    assert!(page.contains("variance\\-layers") || page.contains("variance-layers"));
    assert!(d.path().join("modeconn.1").exists());
}

#[test]
fn help_has_no_colour_under_no_color() {
    let out = modeconn()
        .env("NO_COLOR", "1")
        .env("CLICOLOR_FORCE", "1")
        .args(["train", "--help"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(!text.contains('\x1b'), "escape codes in help");
    assert!(text.contains("--lr"));
}

#[test]
fn progress_is_one_plain_line_per_epoch_when_stderr_is_not_a_terminal() {
    let d = tempfile::tempdir().unwrap();
    let out = modeconn()
        .args(["train", "--arch", "mlp:64-16-10", "--epochs", "3", "--out"])
        .arg(d.path().join("m"))
        .assert()
        .success();
    let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.contains(&format!("{}/3", i + 1)), "{l}");
    }
    assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
}

#[test]
fn too_large_an_architecture_is_refused_before_allocation() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x");
    let err = stderr_of(&[
        "train",
        "--arch",
        "mlp:64-2000000000-10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("mlp:64-2000000000-10") && err.contains("GiB"),
        "{err}"
    );
    let err = stderr_of(&[
        "vtrain",
        "--method",
        "sparse-vd",
        "--arch",
        "mlp:64-2000000000-10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("GiB"), "{err}");
}

#[test]
fn an_os_error_is_printed_once() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = stderr_of(&["train", "--epochs", "1", "--out", file.to_str().unwrap()]);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("a-file"), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

#[test]
fn spec_variables_profiles_and_set() {
    let d = tempfile::tempdir().unwrap();
    let spec = d.path().join("s.toml");
    std::fs::write(
        &spec,
        r#"
name = "s"
[vars]
epochs = "3"
[profile.short]
epochs = "1"
[[step]]
id = "w"
command = "train"
args = ["--arch", "mlp:64-8-10", "--epochs", "{epochs}", "-q"]
"#,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = d.path().join("out");
        modeconn()
            .arg("run")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .args(["-q", "--rerun"])
            .args(extra)
            .assert()
            .success();
        let log = std::fs::read_to_string(out.join("w/metrics.jsonl")).unwrap();
        log.lines().count()
    };
    assert_eq!(run(&[]), 3);
    assert_eq!(run(&["--profile", "short"]), 1);
    assert_eq!(run(&["--profile", "short", "--set", "epochs=2"]), 2);
    let s = spec.to_str().unwrap();
    let err = stderr_of(&["run", s, "--set", "epoch=2"]);
    assert!(
        err.contains("--set epoch") && err.contains("epochs"),
        "{err}"
    );
    let err = stderr_of(&["run", s, "--profile", "long"]);
    assert!(
        err.contains("--profile `long`") && err.contains("short"),
        "{err}"
    );
}

#[test]
fn probe_sub_steps_record_their_own_command_lines() {
    let d = tempfile::tempdir().unwrap();
    for s in ["1", "2"] {
        modeconn()
            .args(["train", "--arch", "mlp:64-16-10", "--epochs", "4", "-q"])
            .args(["--seed", s, "--out"])
            .arg(d.path().join(format!("w{s}")))
            .assert()
            .success();
    }
    let out = d.path().join("probe");
    modeconn()
        .args(["probe", "--epochs", "2", "--points", "5", "-q", "--a"])
        .arg(d.path().join("w1/model.safetensors"))
        .arg("--b")
        .arg(d.path().join("w2/model.safetensors"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let cmd = |sub: &str| -> Vec<String> {
        read_json(&out.join(sub).join("run.json"))["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(cmd("pi_w1")[1], "permute");
    assert_eq!(cmd("align_w2")[1], "align");
    let connect = cmd("w1-w2/chain");
    assert_eq!(connect[1], "connect");
    let at = connect.iter().position(|a| a == "--epochs").unwrap();
    assert_eq!(connect[at + 1], "2");
    assert_eq!(cmd("w1-w2/path")[1], "path");
    assert_eq!(cmd(".")[1], "probe");
    // The recorded connect command line reproduces the sub-step's curve bit for bit.
    let mut again: Vec<String> = connect[1..].to_vec();
    let o = again.iter().position(|a| a == "--out").unwrap();
    again[o + 1] = d.path().join("again").to_string_lossy().to_string();
    modeconn().args(&again).assert().success();
    assert_eq!(
        std::fs::read(out.join("w1-w2/chain/curve.safetensors")).unwrap(),
        std::fs::read(d.path().join("again/curve.safetensors")).unwrap()
    );
}
