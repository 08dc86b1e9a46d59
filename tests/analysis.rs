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

/// Two seeds swept, a curve per seed pair and the path: the spec the `--step`, `--jobs` and
/// export tests run.
const SWEEP: &str = r#"
name = "sweep"
[vars]
seeds = "1,2"
[[step]]
id = "w{seed}"
command = "train"
args = ["--arch", "mlp:64-16-10", "--epochs", "2", "--seed", "{seed}", "-q"]
sweep = { seed = "{seeds}" }
[[step]]
id = "chain"
command = "connect"
args = ["--a", "{w{a}}/model.safetensors", "--b", "{w{b}}/model.safetensors", "--epochs", "2", "-q"]
sweep = { a = [1], b = [2] }
[[step]]
id = "path"
command = "path"
args = ["--a", "{w1}/model.safetensors", "--b", "{w2}/model.safetensors", "--points", "{points}", "--curve", "{chain-1-2}/curve.safetensors"]
[vars.points]
"#;

fn sweep_spec(dir: &std::path::Path, points: &str) -> std::path::PathBuf {
    let spec = dir.join(format!("sweep-{points}.toml"));
    let text = SWEEP.replace("[vars.points]\n", "").replace(
        "seeds = \"1,2\"",
        &format!("seeds = \"1,2\"\npoints = \"{points}\""),
    );
    std::fs::write(&spec, text).unwrap();
    spec
}

fn modeconn_run(
    spec: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    Command::cargo_bin("modeconn")
        .unwrap()
        .arg("run")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

/// The files whose bytes must not depend on how the steps were run.
const RESULTS: [&str; 4] = [
    "w1/model.safetensors",
    "w2/model.safetensors",
    "chain-1-2/curve.safetensors",
    "path/path.csv",
];

#[test]
fn one_step_writes_its_marker_only_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep_spec(dir.path(), "5");
    let out = dir.path().join("out");
    // The curve reads w1 and w2, which have not run: refused, nothing written.
    let a = modeconn_run(&spec, &out, &["--step", "chain-1-2"])
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(
        err.contains("--step chain-1-2") && err.contains("`w1`"),
        "{err}"
    );
    assert!(!out.join("chain-1-2").exists());
    for id in ["w1", "w2", "chain-1-2"] {
        let a = modeconn_run(&spec, &out, &["--step", id]).success();
        assert!(String::from_utf8_lossy(&a.get_output().stdout).contains("\"ran\""));
        assert!(out.join(id).join("step.json").exists());
        assert!(!out.join(id).join("started.json").exists());
    }
    // A finished step is skipped.
    let model = out.join("w1/model.safetensors");
    let t1 = std::fs::metadata(&model).unwrap().modified().unwrap();
    let a = modeconn_run(&spec, &out, &["--step", "w1"]).success();
    assert!(String::from_utf8_lossy(&a.get_output().stdout).contains("\"cached\""));
    assert_eq!(std::fs::metadata(&model).unwrap().modified().unwrap(), t1);
    // A failing step exits 1 and leaves no marker.
    let bad = sweep_spec(dir.path(), "0");
    let a = modeconn_run(&bad, &out, &["--step", "path"])
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(
        err.contains("step `path`") && err.contains("--points"),
        "{err}"
    );
    assert!(!out.join("path/step.json").exists());
    // An unknown step names the steps there are.
    let a = modeconn_run(&spec, &out, &["--step", "w3"])
        .failure()
        .code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    assert!(
        err.contains("w3") && err.contains("w1, w2, chain-1-2, path"),
        "{err}"
    );
    // The whole spec then runs only what is left, with the bytes of a fresh run.
    let a = modeconn_run(&spec, &out, &[]).success();
    let stdout = String::from_utf8_lossy(&a.get_output().stdout).to_string();
    assert_eq!(stdout.matches("\"cached\"").count(), 3, "{stdout}");
    let fresh = dir.path().join("fresh");
    modeconn_run(&spec, &fresh, &["-q"]).success();
    for f in RESULTS {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(fresh.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn parallel_jobs_give_the_bytes_of_one_job_and_name_a_failing_step() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep_spec(dir.path(), "5");
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    modeconn_run(&spec, &one, &["-q"]).success();
    let a = modeconn_run(&spec, &two, &["--jobs", "2", "--threads", "1"]).success();
    let stdout = String::from_utf8_lossy(&a.get_output().stdout).to_string();
    assert_eq!(stdout.matches("\"ran\"").count(), 4, "{stdout}");
    for f in RESULTS {
        assert_eq!(
            std::fs::read(one.join(f)).unwrap(),
            std::fs::read(two.join(f)).unwrap(),
            "{f}"
        );
    }
    let a = modeconn_run(&spec, &two, &["--jobs", "2"]).success();
    let stdout = String::from_utf8_lossy(&a.get_output().stdout).to_string();
    assert_eq!(stdout.matches("\"cached\"").count(), 4, "{stdout}");
    // A failing child: one line naming the step, its error and its log; no marker.
    let bad = sweep_spec(dir.path(), "0");
    let a = modeconn_run(&bad, &two, &["--jobs", "2"]).failure().code(1);
    let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
    let last = err.trim().lines().last().unwrap();
    assert!(
        last.contains("step `path`") && last.contains("--points") && last.contains("step.log"),
        "{err}"
    );
    assert!(!two.join("path/step.json").exists());
    modeconn_run(&spec, &two, &["--jobs", "0"])
        .failure()
        .code(1);
}

#[test]
fn exports_render_the_step_graph_and_the_slurm_script_runs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = sweep_spec(dir.path(), "5");
    let out = dir.path().join("exp");
    modeconn_run(&spec, &out, &["--export", "snakemake", "--threads", "1"]).success();
    let snake = std::fs::read_to_string(out.join("Snakefile")).unwrap();
    // `rule all` and one rule per step; the curve's rule reads both networks' markers.
    assert_eq!(snake.matches("\nrule ").count(), 5, "{snake}");
    let chain = &snake[snake.find("rule s2_chain_1_2:").unwrap()..];
    let chain = &chain[..chain.find("shell:").unwrap()];
    let marker = |id: &str| format!("{:?}", out.join(id).join("step.json").to_string_lossy());
    assert!(
        chain.contains(&marker("w1")) && chain.contains(&marker("w2")),
        "{chain}"
    );
    assert!(
        chain.contains(&format!("output:\n        {},", marker("chain-1-2"))),
        "{chain}"
    );
    assert!(snake.contains("--step chain-1-2 --quiet"), "{snake}");
    assert!(!out.join("w1").exists(), "an export runs nothing");

    modeconn_run(&spec, &out, &["--export", "slurm", "--threads", "1"]).success();
    let script = out.join("submit-slurm.sh");
    let text = std::fs::read_to_string(&script).unwrap();
    // One job array per spec step; the sweep's two seeds are one array of two tasks.
    assert_eq!(text.matches("sbatch --parsable").count(), 3, "{text}");
    assert!(text.contains("--array=0-1 "), "{text}");
    assert!(text.contains("--dependency=afterok:$job0 "), "{text}");
    assert!(text.contains("--dependency=afterok:$job0:$job1 "), "{text}");
    // Run it with an `sbatch` that runs each array task at once (submission order respects
    // the dependencies): the results are those of `modeconn run`.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        r#"#!/usr/bin/env bash
set -e
n=0; wrap=""
while [ $# -gt 0 ]; do
  case "$1" in
    --array=*) n="${1#--array=0-}" ;;
    --wrap) wrap="$2"; shift ;;
  esac
  shift
done
for i in $(seq 0 "$n"); do SLURM_ARRAY_TASK_ID=$i SLURM_CPUS_PER_TASK=1 sh -c "$wrap" >/dev/null; done
echo "$RANDOM"
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let st = std::process::Command::new("bash")
        .arg(&script)
        .env("PATH", path)
        .status()
        .unwrap();
    assert!(st.success());
    let direct = dir.path().join("direct");
    modeconn_run(&spec, &direct, &["-q"]).success();
    for f in RESULTS {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(direct.join(f)).unwrap(),
            "{f}"
        );
    }
}
