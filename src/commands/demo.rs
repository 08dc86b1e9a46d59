//! `modeconn demo`: the main job on the embedded digits data, end to end in seconds on two
//! cores (after the build). Every step is an ordinary subcommand run in-process with the same flags a user
//! would type, so the demo's outputs are those commands' outputs.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::{Value, json};

use crate::cli::{Cli, execute};
use crate::error::{Error, Result};
use crate::params::io::write_atomic;
use crate::report::write_json;

/// Options of `modeconn demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Output directory.
    pub out: PathBuf,
    /// Reduced sizes (tests).
    pub quick: bool,
}

fn step(args: &[String]) -> Result<Value> {
    let argv: Vec<String> = std::iter::once("modeconn".to_string())
        .chain(args.iter().cloned())
        .collect();
    eprintln!("demo: modeconn {}", args.join(" "));
    let cli = Cli::try_parse_from(&argv).map_err(|e| Error::Config(e.to_string()))?;
    Ok(execute(cli.command, argv)?.0)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

fn read_json(p: &Path) -> Result<Value> {
    let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    serde_json::from_str(&t).map_err(|e| Error::data(p, e.to_string()))
}

/// Runs the demo; writes `out/summary.json` and the figures under `out/figures`.
pub fn run(opts: &DemoOptions) -> Result<Value> {
    let o = &opts.out;
    let q = opts.quick;
    let (ep, cep, vep, grid, pts) = if q {
        ("8", "4", "4", "7", "11")
    } else {
        ("30", "30", "40", "21", "41")
    };
    let arch = "mlp:64-128-10";
    let p = |x: &str| s(&o.join(x));
    let sv = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut summary = json!({"quick": q});
    for seed in ["1", "2"] {
        let m = step(&sv(&[
            "train",
            "--arch",
            arch,
            "--epochs",
            ep,
            "--seed",
            seed,
            "-q",
            "--out",
            &p(&format!("w{seed}")),
        ]))?;
        summary[format!("w{seed}")] = m;
    }
    let (a, b) = (p("w1/model.safetensors"), p("w2/model.safetensors"));
    for kind in ["polychain", "bezier"] {
        step(&sv(&[
            "connect",
            "--curve",
            kind,
            "--epochs",
            cep,
            "--seed",
            "0",
            "-q",
            "--a",
            &a,
            "--b",
            &b,
            "--out",
            &p(kind),
        ]))?;
    }
    summary["permute"] = step(&sv(&[
        "permute",
        "--model",
        &a,
        "--seed",
        "7",
        "--out",
        &p("pi_w1"),
    ]))?;
    summary["align"] = step(&sv(&[
        "align",
        "--model",
        &b,
        "--to",
        &a,
        "--method",
        "weights",
        "--out",
        &p("align_w2"),
    ]))?;
    let paths = step(&sv(&[
        "path",
        "--points",
        pts,
        "--a",
        &a,
        "--b",
        &b,
        "--curve",
        &format!("chain={}", p("polychain/curve.safetensors")),
        "--curve",
        &format!("bezier={}", p("bezier/curve.safetensors")),
        "--out",
        &p("path"),
    ]))?;
    let aligned = step(&sv(&[
        "path",
        "--points",
        pts,
        "--a",
        &a,
        "--b",
        &p("align_w2/model.safetensors"),
        "--out",
        &p("path_aligned"),
    ]))?;
    let permuted = step(&sv(&[
        "path",
        "--points",
        pts,
        "--a",
        &a,
        "--b",
        &p("pi_w1/model.safetensors"),
        "--out",
        &p("path_permuted"),
    ]))?;
    // One table of every path for the figure: rename the extra lines.
    let mut csv = std::fs::read_to_string(o.join("path/path.csv")).map_err(|e| Error::io(o, e))?;
    for (dir, name) in [
        ("path_aligned", "aligned line"),
        ("path_permuted", "line to π(w1)"),
    ] {
        let f = o.join(dir).join("path.csv");
        let t = std::fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
        for l in t.lines().skip(1) {
            csv.push_str(&l.replacen("line,", &format!("{name},"), 1));
            csv.push('\n');
        }
    }
    write_atomic(&o.join("paths/path.csv"), csv.as_bytes())?;
    summary["paths"] = json!({"line": paths["line"], "chain": paths["chain"],
        "bezier": paths["bezier"], "aligned line": aligned["line"],
        "line to π(w1)": permuted["line"]});
    step(&sv(&[
        "plane",
        "--grid",
        grid,
        "--a",
        &a,
        "--b",
        &b,
        "--curve",
        &p("polychain/curve.safetensors"),
        "--out",
        &p("plane"),
    ]))?;
    summary["sparse_vd"] = step(&sv(&[
        "vtrain",
        "--method",
        "sparse-vd",
        "--arch",
        arch,
        "--epochs",
        vep,
        "--seed",
        "1",
        "-q",
        "--out",
        &p("sparse_vd"),
    ]))?;
    summary["variance"] = step(&sv(&[
        "vtrain",
        "--method",
        "variance",
        "--variance-layers",
        "fc1",
        "--arch",
        arch,
        "--lr",
        "1e-2",
        "--epochs",
        vep,
        "--seed",
        "1",
        "-q",
        "--out",
        &p("variance"),
    ]))?;
    let figs = p("figures");
    let mut files = Vec::new();
    for (input, sub) in [
        (p("paths"), "connectivity"),
        (p("plane"), "plane"),
        (p("sparse_vd"), "sparse_vd"),
        (p("variance"), "variance"),
    ] {
        let v = step(&sv(&["plot", &input, "--out", &format!("{figs}/{sub}")]))?;
        files.extend(v.as_array().cloned().unwrap_or_default());
    }
    files.extend(
        step(&sv(&["plot", "kl", "--out", &format!("{figs}/kl")]))?
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    summary["figures"] = json!(files);
    summary["align"]["summary"] =
        read_json(&o.join("align_w2/summary.json")).unwrap_or(Value::Null);
    write_json(&o.join("summary.json"), &summary)?;
    Ok(summary)
}

/// The printed summary table.
pub fn table(v: &Value) -> String {
    let pct = |x: &Value| {
        x.as_f64()
            .map(|x| format!("{:.2}%", 100.0 * x))
            .unwrap_or("-".into())
    };
    let num = |x: &Value| x.as_f64().map(|x| format!("{x:.4}")).unwrap_or("-".into());
    let mut t = String::from("\nmodeconn demo (digits)\n\n");
    t.push_str(&format!(
        "endpoints: test error {} and {}\n\n",
        pct(&v["w1"]["test_err"]),
        pct(&v["w2"]["test_err"])
    ));
    t.push_str(&format!(
        "{:<16} {:>10} {:>11} {:>11}\n",
        "path", "max err", "B_lin loss", "B_lin err"
    ));
    for name in ["line", "chain", "bezier", "aligned line", "line to π(w1)"] {
        let p = &v["paths"][name];
        t.push_str(&format!(
            "{name:<16} {:>10} {:>11} {:>11}\n",
            pct(&p["test_err"]["max"]),
            num(&p["test_loss"]["b_lin"]),
            pct(&p["test_err"]["b_lin"])
        ));
    }
    let sv = &v["sparse_vd"];
    t.push_str(&format!(
        "\nsparse VD: mode accuracy {}, sparsity {}, compression {}×\n",
        pct(&sv["mode_acc"]),
        sv["sparsity"],
        num(&sv["compression"])
    ));
    let va = &v["variance"];
    t.push_str(&format!(
        "variance layer (fc1): mode {}, one sample {}, ensembles {}\n",
        pct(&va["mode_acc"]),
        pct(&va["sample_acc"]),
        va["ensemble_acc"]
    ));
    t.push_str(&format!(
        "\n{} figure files under the output's figures/ folder; summary.json beside them\n",
        v["figures"].as_array().map_or(0, |f| f.len())
    ));
    t
}
