//! Analysis specs (`analyses/*.toml`): a named pipeline of modeconn subcommands, typed and
//! validated once (unknown keys are errors naming the key and the file).
//!
//! ```toml
//! name = "digits-connectivity"
//! description = "..."
//! [vars]
//! epochs = "30"
//! [profile.quick]
//! epochs = "4"
//! [[step]]
//! id = "w1"
//! command = "train"
//! args = ["--arch", "mlp:64-128-10", "--epochs", "{epochs}", "--seed", "1"]
//! [[step]]
//! id = "chain"
//! command = "connect"
//! args = ["--a", "{w1}/model.safetensors", "--b", "{w2}/model.safetensors"]
//! ```
//! `{id}` stands for the output directory of an earlier step, `{run}` for the analysis's own
//! output directory and `{name}` for the value of a variable of `[vars]`; a profile
//! (`[profile.NAME]`, chosen with `modeconn run --profile NAME`) and `--set NAME=VALUE` override
//! variables. A step gets `--out {run}/{id}` unless its args name `--out` themselves.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Subcommands a step may run (every one but `run`, `demo`, `completions` and `man`).
pub const COMMANDS: [&str; 19] = [
    "train",
    "eval",
    "connect",
    "path",
    "permute",
    "align",
    "probe",
    "vtrain",
    "prune",
    "plane",
    "dimension",
    "project",
    "intrinsic-dim",
    "simplex",
    "hessian",
    "landscape",
    "fge",
    "instability",
    "plot",
];

/// One step of an analysis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Identifier, also the step's output directory name.
    pub id: String,
    /// The modeconn subcommand.
    pub command: String,
    /// Its arguments, with `{id}` / `{run}` placeholders.
    #[serde(default)]
    pub args: Vec<String>,
}

/// A whole analysis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// Name.
    pub name: String,
    /// What it reproduces.
    #[serde(default)]
    pub description: String,
    /// Variables, `{name}` in step arguments, with their default values.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Named sets of variable overrides.
    #[serde(default)]
    pub profile: BTreeMap<String, BTreeMap<String, String>>,
    /// The steps, in order.
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
}

/// The `{name}` placeholders of an argument, in order.
pub fn placeholders(arg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push(&rest[i + 1..i + j]);
        rest = &rest[i + j + 1..];
    }
    out
}

impl Analysis {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates spec text; errors name `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::Config(format!("{}: {msg}", path.display()));
        let a: Analysis =
            toml::from_str(text).map_err(|e| bad(e.to_string().trim().replace('\n', " ")))?;
        if a.steps.is_empty() {
            return Err(bad("no [[step]] entries".into()));
        }
        for (name, over) in &a.profile {
            for k in over.keys() {
                if !a.vars.contains_key(k) {
                    return Err(bad(format!(
                        "profile `{name}`: `{k}` is not a variable of [vars]"
                    )));
                }
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for s in &a.steps {
            if s.id.is_empty()
                || !s
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(format!(
                    "step id `{}`: use letters, digits, `-` and `_` only",
                    s.id
                )));
            }
            if seen.contains(&s.id.as_str()) || s.id == "run" || a.vars.contains_key(&s.id) {
                return Err(bad(format!(
                    "step id `{}` is used twice, reserved or the name of a variable",
                    s.id
                )));
            }
            if !COMMANDS.contains(&s.command.as_str()) {
                return Err(bad(format!(
                    "step `{}`: unknown command `{}` (expected one of {})",
                    s.id,
                    s.command,
                    COMMANDS.join(", ")
                )));
            }
            for arg in &s.args {
                for p in placeholders(arg) {
                    if p != "run" && !seen.contains(&p) && !a.vars.contains_key(p) {
                        return Err(bad(format!(
                            "step `{}`: `{{{p}}}` names neither an earlier step nor a variable",
                            s.id
                        )));
                    }
                }
            }
            seen.push(&s.id);
        }
        Ok(a)
    }

    /// The variables with `profile`'s values and then `set` (`NAME=VALUE` pairs) applied;
    /// errors name the unknown profile or variable.
    pub fn resolve_vars(
        &self,
        profile: Option<&str>,
        set: &[(String, String)],
    ) -> Result<BTreeMap<String, String>> {
        let mut vars = self.vars.clone();
        if let Some(p) = profile {
            let over = self.profile.get(p).ok_or_else(|| {
                let names: Vec<&str> = self.profile.keys().map(String::as_str).collect();
                Error::Config(format!(
                    "--profile `{p}`: analysis `{}` has {}",
                    self.name,
                    if names.is_empty() {
                        "no profiles".to_string()
                    } else {
                        format!("profiles {}", names.join(", "))
                    }
                ))
            })?;
            vars.extend(over.clone());
        }
        for (k, v) in set {
            if !vars.contains_key(k) {
                let names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
                return Err(Error::Config(format!(
                    "--set {k}: not a variable of analysis `{}` (variables: {})",
                    self.name,
                    names.join(", ")
                )));
            }
            vars.insert(k.clone(), v.clone());
        }
        Ok(vars)
    }
}

/// FNV-1a 64-bit hash (stable across builds and platforms) of `bytes`, as 16 hex digits.
pub fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "x"
[[step]]
id = "w1"
command = "train"
args = ["--epochs", "1"]
[[step]]
id = "c"
command = "connect"
args = ["--a", "{w1}/model.safetensors", "--out", "{run}/c"]
"#;

    #[test]
    fn valid_spec_parses() {
        let a = Analysis::parse(OK, Path::new("a.toml")).unwrap();
        assert_eq!(a.steps.len(), 2);
        assert_eq!(placeholders("{w1}/m-{run}"), vec!["w1", "run"]);
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let p = Path::new("analyses/bad.toml");
        let e = Analysis::parse(
            &OK.replace("args = [\"--epochs\"", "argz = [\"--epochs\""),
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("analyses/bad.toml") && e.contains("argz"), "{e}");
        let e = Analysis::parse(&OK.replace("name = \"x\"", "name = \"x\"\ncolour = 1"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = Analysis::parse(&OK.replace("{w1}", "{w9}"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("w9") && e.contains("bad.toml"), "{e}");
        let e = Analysis::parse(&OK.replace("\"connect\"", "\"conect\""), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("conect"), "{e}");
        let e = Analysis::parse(&OK.replace("id = \"c\"", "id = \"w1\""), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
        let e = Analysis::parse(
            &OK.replace("name = \"x\"", "name = \"x\"\n[profile.q]\nep = \"1\""),
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("profile `q`") && e.contains("ep"), "{e}");
    }

    #[test]
    fn variables_take_profile_and_set_values() {
        let text = OK
            .replace(
                "name = \"x\"",
                "name = \"x\"\n[vars]\nep = \"30\"\n[profile.quick]\nep = \"4\"",
            )
            .replace("[\"--epochs\", \"1\"]", "[\"--epochs\", \"{ep}\"]");
        let a = Analysis::parse(&text, Path::new("a.toml")).unwrap();
        assert_eq!(a.resolve_vars(None, &[]).unwrap()["ep"], "30");
        assert_eq!(a.resolve_vars(Some("quick"), &[]).unwrap()["ep"], "4");
        let set = [("ep".to_string(), "7".to_string())];
        assert_eq!(a.resolve_vars(Some("quick"), &set).unwrap()["ep"], "7");
        let e = a.resolve_vars(Some("slow"), &[]).unwrap_err().to_string();
        assert!(e.contains("--profile `slow`") && e.contains("quick"), "{e}");
        let bad = [("epochs".to_string(), "7".to_string())];
        let e = a.resolve_vars(None, &bad).unwrap_err().to_string();
        assert!(e.contains("--set epochs") && e.contains("ep"), "{e}");
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), "cbf29ce484222325");
        assert_eq!(fnv1a(b"a"), "af63dc4c8601ec8c");
    }
}
