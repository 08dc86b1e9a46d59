//! `modeconn demo`: the analysis spec `analyses/demo.toml`, embedded in the binary and executed by
//! the same runner as `modeconn run`, then a summary of its results (`summary.json`) and a table
//! rendered from that summary.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::spec::Analysis;
use crate::error::{Error, Result};
use crate::report::write_json;

/// The demo's spec text (`analyses/demo.toml`).
pub const SPEC: &str = include_str!("../../analyses/demo.toml");

/// The parsed demo spec.
pub fn analysis() -> Analysis {
    Analysis::parse(SPEC, Path::new("analyses/demo.toml")).expect("the embedded demo spec is valid")
}

fn read_json(p: &Path) -> Result<Value> {
    let t = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    serde_json::from_str(&t).map_err(|e| Error::data(p, e.to_string()))
}

/// Collects the results of a finished demo run in `dir` into `dir/summary.json`; returns it.
pub fn summarise(dir: &Path, quick: bool) -> Result<Value> {
    let r = |step: &str, file: &str| read_json(&dir.join(step).join(file));
    let path = r("path", "summary.json")?;
    let mut paths = Map::new();
    for name in ["line", "chain", "bezier"] {
        paths.insert(name.into(), path[name].clone());
    }
    paths.insert(
        "aligned line".into(),
        r("path_aligned", "summary.json")?["line"].clone(),
    );
    paths.insert(
        "line to π(w1)".into(),
        r("path_permuted", "summary.json")?["line"].clone(),
    );
    let files = crate::report::files_with_extension(&dir.join("figures"), &["png", "svg"]);
    let v = json!({
        "quick": quick,
        "w1": r("w1", "metrics.json")?,
        "w2": r("w2", "metrics.json")?,
        "paths": paths,
        "permute": r("pi_w1", "summary.json")?,
        "align": r("align_w2", "summary.json")?,
        "sparse_vd": r("sparse_vd", "summary.json")?,
        "variance": r("variance", "summary.json")?,
        "figures": files,
    });
    write_json(&dir.join("summary.json"), &v)?;
    Ok(v)
}

fn pct(x: &Value) -> String {
    x.as_f64()
        .map(|x| format!("{:.2}%", 100.0 * x))
        .unwrap_or("-".into())
}

fn num(x: &Value) -> String {
    x.as_f64().map(|x| format!("{x:.4}")).unwrap_or("-".into())
}

/// `{"fc1": 0.904663…, …}` as `fc1 0.9047, …` (four decimals), or `{"10": 0.91, …}` as
/// percentages when `percent`.
fn per_key(v: &Value, percent: bool) -> String {
    let Some(m) = v.as_object() else {
        return "-".into();
    };
    m.iter()
        .map(|(k, x)| {
            let x = if percent { pct(x) } else { num(x) };
            format!("{k} {x}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The printed summary table.
pub fn table(v: &Value) -> String {
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
        "\nsparse VD: mode accuracy {}, sparsity {}, compression {:.1}×\n",
        pct(&sv["mode_acc"]),
        per_key(&sv["sparsity"], false),
        sv["compression"].as_f64().unwrap_or(f64::NAN)
    ));
    let va = &v["variance"];
    t.push_str(&format!(
        "variance network (zero-mean fc1): mode {}, one sample {}, ensembles {}\n",
        pct(&va["mode_acc"]),
        pct(&va["sample_acc"]),
        per_key(&va["ensemble_acc"], true)
    ));
    t.push_str(&format!(
        "\n{} figure files under the output's figures/ folder; summary.json beside them\n",
        v["figures"].as_array().map_or(0, |f| f.len())
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_spec_parses_and_quick_overrides_sizes() {
        let a = analysis();
        assert_eq!(a.name, "demo");
        let quick = a.resolve_vars(Some("quick"), &[]).unwrap();
        assert_eq!(quick["epochs"], "8");
        assert_eq!(a.resolve_vars(None, &[]).unwrap()["epochs"], "30");
    }

    #[test]
    fn table_rounds_numbers() {
        let v = json!({
            "w1": {"test_err": 0.0423}, "w2": {"test_err": 0.05},
            "paths": {"line": {"test_err": {"max": 0.2, "b_lin": 0.15}, "test_loss": {"b_lin": 0.123456}}},
            "sparse_vd": {"mode_acc": 0.9, "sparsity": {"fc1": 0.9046630859375, "fc2": 0.1}, "compression": 3.06},
            "variance": {"mode_acc": 0.1, "sample_acc": 0.8, "ensemble_acc": {"10": 0.8864142538975501}},
            "figures": [],
        });
        let t = table(&v);
        assert!(t.contains("fc1 0.9047") && t.contains("3.1×"), "{t}");
        assert!(t.contains("10 88.64%") && t.contains("0.1235"), "{t}");
        assert!(
            !t.contains("0.9046630859375") && !t.contains("0.8864142538975501"),
            "{t}"
        );
    }
}
