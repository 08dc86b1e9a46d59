//! `modeconn report`: one self-contained HTML file per run directory, holding its figures,
//! commands, result tables and provenance.

mod common;

use assert_cmd::Command;

const SPEC: &str = r#"
name = "tiny-report"
description = "Two <b>tiny</b> MLPs & their path"
[[step]]
id = "w"
command = "train"
args = ["--arch", "mlp:64-16-10", "--epochs", "2", "--seed", "{seed}", "-q"]
sweep = { seed = [1, 2] }
[[step]]
id = "path"
command = "path"
args = ["--a", "{w-1}/model.safetensors", "--b", "{w-2}/model.safetensors", "--points", "5"]
[[step]]
id = "fig"
command = "plot"
args = ["{path}", "--out", "{run}/figures"]
[[step]]
id = "report"
command = "report"
args = ["{run}", "--out", "{run}/report.html"]
"#;

#[test]
fn a_report_is_one_self_contained_page_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = dir.path().join("out");
    Command::cargo_bin("modeconn")
        .unwrap()
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("-q")
        .assert()
        .success();
    // The spec's last step wrote a page of the steps before it; `report` rewrites it with all.
    common::modeconn()
        .arg("report")
        .arg(&out)
        .assert()
        .success();
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    // Figures inlined, every step with its command line and its results.
    let figures = std::fs::read_dir(out.join("figures"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "svg")
        })
        .count();
    assert!(figures > 0);
    assert_eq!(
        page.matches("<svg").count(),
        figures,
        "one inline <svg> per figure"
    );
    for id in ["w-1", "w-2", "path", "fig", "report"] {
        assert!(page.contains(&format!("id=\"step-{id}\"")), "step {id}");
    }
    assert!(page.contains("modeconn train --arch mlp:64-16-10 --epochs 2 --seed 2 -q --out"));
    assert!(page.contains("test_acc"), "train's metrics.json");
    assert!(
        page.contains("<h3>summary.json</h3>"),
        "path's summary.json"
    );
    assert!(page.contains("wall_time_s"), "provenance");
    // Text from files is escaped, not markup.
    assert!(
        page.contains("Two &lt;b&gt;tiny&lt;&#x2f;b&gt; MLPs &amp; their path"),
        "escaped"
    );
    // Nothing outside the file: no scripts, stylesheets, images or frames fetched.
    for needle in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", "src=\"",
    ] {
        assert!(!page.contains(needle), "the page holds {needle}");
    }
    for href in page.split("href=\"").skip(1) {
        assert!(
            href.starts_with('#'),
            "a link out of the page: {}",
            &href[..40.min(href.len())]
        );
    }
    // --pdf: every figure also as a one-page vector PDF with the font embedded.
    common::modeconn()
        .arg("report")
        .arg(&out)
        .arg("--pdf")
        .assert()
        .success();
    for svg in std::fs::read_dir(out.join("figures")).unwrap() {
        let svg = svg.unwrap().path();
        if svg.extension().is_none_or(|x| x != "svg") {
            continue;
        }
        let pdf = std::fs::read(svg.with_extension("pdf")).unwrap();
        let text = String::from_utf8_lossy(&pdf);
        assert!(pdf.starts_with(b"%PDF-"), "{}", svg.display());
        assert!(
            text.contains("DejaVuSans") && text.contains("/FontFile2"),
            "font embedded"
        );
        assert!(text.contains("/Count 1"), "one page");
    }
    // One command's directory is a one-step report, written where --out says.
    let one = dir.path().join("w1.html");
    common::modeconn()
        .arg("report")
        .arg(out.join("w-1"))
        .arg("--out")
        .arg(&one)
        .assert()
        .success();
    let page = std::fs::read_to_string(&one).unwrap();
    assert!(page.contains("metrics.json") && page.contains("train_loss"));
}

#[test]
fn a_report_of_no_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (target, needle) in [
        (dir.path().join("nothing"), "not a directory"),
        (dir.path().to_path_buf(), "neither analysis.json"),
    ] {
        let a = common::modeconn()
            .arg("report")
            .arg(&target)
            .assert()
            .failure()
            .code(1);
        let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1);
    }
    assert!(!dir.path().join("report.html").exists());
}
