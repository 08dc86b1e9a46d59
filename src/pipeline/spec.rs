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
//! output directory (an argument that is `{run}` alone reads every earlier step) and `{name}` for the value of a variable of `[vars]`; a profile
//! (`[profile.NAME]`, chosen with `modeconn run --profile NAME`) and `--set NAME=VALUE` override
//! variables. A step gets `--out {run}/{id}` unless its args name `--out` themselves.
//!
//! A step with a `sweep` table expands into one step per value (per combination, for several
//! swept names; `sweep_mode = "zip"` pairs the lists element by element instead):
//! ```toml
//! [[step]]
//! id = "w{seed}"
//! command = "train"
//! args = ["--seed", "{seed}"]
//! sweep = { seed = [1, 2, 3] }       # or seed = "{seeds}", a comma-separated variable
//! ```
//! The swept names are placeholders in the id and the arguments (`{w{seed}}` names the step of
//! that value); a swept name missing from the id is appended to it (`id = "w"` gives `w-1`...).
//! `mem_mb` and `minutes` state what a step needs, for cluster exports.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Subcommands a step may run (every one but `run`, `demo`, `completions` and `man`).
pub const COMMANDS: [&str; 22] = [
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
    "import",
    "export",
    "plot",
    "report",
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
    /// Swept names and their values.
    #[serde(default)]
    pub sweep: BTreeMap<String, SweepValues>,
    /// How several swept lists combine.
    #[serde(default)]
    pub sweep_mode: SweepMode,
    /// Memory the step needs, in MiB (cluster exports; default 4096).
    pub mem_mb: Option<u64>,
    /// Wall time the step needs, in minutes (cluster exports; default 120).
    pub minutes: Option<u64>,
}

/// The values of one swept name: a list, or one string of comma-separated values (after
/// `{var}` substitution, so that `--set` can choose them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SweepValues {
    /// `[1, 2, 3]` or `["a", "b"]`.
    List(Vec<Scalar>),
    /// `"1,2,3"` or `"{seeds}"`.
    Text(String),
}

/// A TOML scalar used as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string.
    Text(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Text(s) => f.write_str(s),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
        }
    }
}

/// How the lists of several swept names combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepMode {
    /// Every combination (the Cartesian product over the names in alphabetical order, the last
    /// varying fastest).
    #[default]
    Grid,
    /// The i-th values of every list together (the lists must have one length).
    Zip,
}

/// One step after sweeps are expanded and variables substituted: its arguments keep only the
/// `{id}` (earlier steps) and `{run}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStep {
    /// The (generated) identifier.
    pub id: String,
    /// Index of the spec step it came from.
    pub template: usize,
    /// The subcommand.
    pub command: String,
    /// Arguments with `{id}` / `{run}` placeholders.
    pub args: Vec<String>,
    /// The earlier steps it reads, in order of first use.
    pub deps: Vec<String>,
    /// Memory (MiB) and wall time (minutes) for cluster exports.
    pub mem_mb: u64,
    /// Wall time in minutes.
    pub minutes: u64,
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
        for s in &a.steps {
            if !COMMANDS.contains(&s.command.as_str()) {
                return Err(bad(format!(
                    "step `{}`: unknown command `{}` (expected one of {})",
                    s.id,
                    s.command,
                    COMMANDS.join(", ")
                )));
            }
            for name in s.sweep.keys() {
                if a.vars.contains_key(name) || name == "run" || !valid_id(name) {
                    return Err(bad(format!(
                        "step `{}`: sweep name `{name}` is reserved, invalid or a variable of [vars]",
                        s.id
                    )));
                }
            }
        }
        a.plan(&a.vars).map_err(bad)?;
        Ok(a)
    }

    /// The steps with sweeps expanded and `vars` substituted, in spec order; errors (as text,
    /// for the caller to prefix with the file) name the step.
    pub fn plan(
        &self,
        vars: &BTreeMap<String, String>,
    ) -> std::result::Result<Vec<PlannedStep>, String> {
        let mut out: Vec<PlannedStep> = Vec::new();
        for (template, s) in self.steps.iter().enumerate() {
            for point in sweep_points(s, vars)? {
                let mut lookup = vars.clone();
                lookup.extend(point.iter().cloned());
                // Swept values in ids: characters outside [A-Za-z0-9_-] become `_`.
                let clean = |v: &str| -> String {
                    v.chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect()
                };
                let mut id_lookup = vars.clone();
                id_lookup.extend(point.iter().map(|(n, v)| (n.clone(), clean(v))));
                let mut id = substitute(&s.id, &id_lookup);
                for (name, value) in &point {
                    if !s.id.contains(&format!("{{{name}}}")) {
                        id = format!("{id}-{}", clean(value));
                    }
                }
                if id.is_empty() || !valid_id(&id) {
                    return Err(format!(
                        "step id `{id}`: use letters, digits, `-` and `_` only"
                    ));
                }
                if out.iter().any(|p| p.id == id) || id == "run" || vars.contains_key(&id) {
                    return Err(format!(
                        "step id `{id}` is used twice, reserved or the name of a variable"
                    ));
                }
                let args: Vec<String> = s.args.iter().map(|a| substitute(a, &lookup)).collect();
                let mut deps: Vec<String> = Vec::new();
                // An argument that is the whole run directory (a report of it) reads every
                // earlier step.
                if args.iter().any(|a| a == "{run}") {
                    deps.extend(out.iter().map(|q| q.id.clone()));
                }
                for arg in &args {
                    for p in placeholders(arg) {
                        if p == "run" {
                            continue;
                        }
                        if !out.iter().any(|q| q.id == p) {
                            return Err(format!(
                                "step `{id}`: `{{{p}}}` names neither an earlier step nor a variable"
                            ));
                        }
                        if !deps.iter().any(|d| d == p) {
                            deps.push(p.to_string());
                        }
                    }
                }
                out.push(PlannedStep {
                    id,
                    template,
                    command: s.command.clone(),
                    args,
                    deps,
                    mem_mb: s.mem_mb.unwrap_or(4096),
                    minutes: s.minutes.unwrap_or(120),
                });
            }
        }
        Ok(out)
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

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `text` with every `{name}` whose name `lookup` has replaced by its value, innermost first
/// (so `{w{seed}}` becomes `{w1}`); other placeholders are kept.
pub fn substitute(text: &str, lookup: &BTreeMap<String, String>) -> String {
    let mut s = text.to_string();
    let mut from = 0;
    while let Some(close) = s[from..].find('}').map(|j| from + j) {
        let Some(open) = s[..close].rfind('{') else {
            from = close + 1;
            continue;
        };
        match lookup.get(&s[open + 1..close]) {
            Some(v) => {
                s.replace_range(open..=close, v);
                from = 0;
            }
            None => from = close + 1,
        }
    }
    s
}

/// The combinations of swept values of step `s` (one empty combination when it sweeps nothing).
fn sweep_points(
    s: &Step,
    vars: &BTreeMap<String, String>,
) -> std::result::Result<Vec<Vec<(String, String)>>, String> {
    let mut lists: Vec<(String, Vec<String>)> = Vec::new();
    for (name, values) in &s.sweep {
        let vals: Vec<String> = match values {
            SweepValues::List(v) => v.iter().map(|x| x.to_string()).collect(),
            SweepValues::Text(t) => substitute(t, vars)
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
        };
        if vals.is_empty() {
            return Err(format!("step `{}`: sweep `{name}` has no values", s.id));
        }
        lists.push((name.clone(), vals));
    }
    let mut points: Vec<Vec<(String, String)>> = vec![Vec::new()];
    match s.sweep_mode {
        SweepMode::Grid => {
            for (name, vals) in &lists {
                points = points
                    .iter()
                    .flat_map(|p| {
                        vals.iter().map(move |v| {
                            let mut q = p.clone();
                            q.push((name.clone(), v.clone()));
                            q
                        })
                    })
                    .collect();
            }
        }
        SweepMode::Zip => {
            if let Some((_, first)) = lists.first() {
                if let Some((name, v)) = lists.iter().find(|(_, v)| v.len() != first.len()) {
                    return Err(format!(
                        "step `{}`: sweep_mode = \"zip\" needs lists of one length (`{name}` has {}, `{}` {})",
                        s.id,
                        v.len(),
                        lists[0].0,
                        first.len()
                    ));
                }
                points = (0..first.len())
                    .map(|i| {
                        lists
                            .iter()
                            .map(|(n, v)| (n.clone(), v[i].clone()))
                            .collect()
                    })
                    .collect();
            }
        }
    }
    Ok(points)
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

    const SWEEP: &str = r#"
name = "s"
[vars]
seeds = "1,2,3"
[[step]]
id = "w{seed}"
command = "train"
args = ["--seed", "{seed}"]
sweep = { seed = "{seeds}" }
[[step]]
id = "c"
command = "connect"
args = ["--a", "{w{a}}/m", "--b", "{w{b}}/m", "--curve", "{kind}"]
sweep = { a = [1, 2], b = [2, 3], kind = ["polychain", "bezier"] }
[[step]]
id = "p"
command = "path"
args = ["--a", "{w{a}}/m", "--b", "{w{b}}/m", "--curve", "{c-{a}-{b}-bezier}/c", "--x", "{run}/x"]
sweep = { a = [1, 2], b = [2, 3] }
sweep_mode = "zip"
"#;

    fn ids(steps: &[PlannedStep]) -> Vec<&str> {
        steps.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn sweeps_expand_into_steps_with_generated_ids_and_dependencies() {
        let a = Analysis::parse(SWEEP, Path::new("s.toml")).unwrap();
        let plan = a.plan(&a.vars).unwrap();
        // A grid over a × b × kind (names in alphabetical order, the last fastest; values in
        // their order), then a zip.
        let mut want = vec!["w1", "w2", "w3"];
        for (x, y) in [(1, 2), (1, 3), (2, 2), (2, 3)] {
            for k in ["polychain", "bezier"] {
                want.push(Box::leak(format!("c-{x}-{y}-{k}").into_boxed_str()));
            }
        }
        want.extend(["p-1-2", "p-2-3"]);
        assert_eq!(ids(&plan), want);
        let c = plan.iter().find(|p| p.id == "c-1-3-polychain").unwrap();
        assert_eq!(
            c.args,
            ["--a", "{w1}/m", "--b", "{w3}/m", "--curve", "polychain"]
        );
        assert_eq!(c.deps, ["w1", "w3"]);
        assert_eq!(c.template, 1);
        let p = plan.iter().find(|p| p.id == "p-2-3").unwrap();
        assert_eq!(p.deps, ["w2", "w3", "c-2-3-bezier"]);
        assert!(p.args.contains(&"{run}/x".to_string()));
        // A step reading the whole run depends on every earlier step.
        let text =
            format!("{SWEEP}[[step]]\nid = \"r\"\ncommand = \"report\"\nargs = [\"{{run}}\"]\n");
        let all = Analysis::parse(&text, Path::new("s.toml")).unwrap();
        let plan = all.plan(&all.vars).unwrap();
        let r = plan.last().unwrap();
        assert_eq!(r.deps.len(), plan.len() - 1);
        // A sweep over a variable's value follows --set.
        let mut vars = a.vars.clone();
        vars.insert("seeds".into(), "1, 2, 3, 7".into());
        assert_eq!(ids(&a.plan(&vars).unwrap())[..4], ["w1", "w2", "w3", "w7"]);
        // Values that are not id characters become `_` in ids, not in arguments.
        let t = r#"
name = "t"
[[step]]
id = "v"
command = "train"
args = ["--arch", "vgg11:w={w}"]
sweep = { w = [0.25, 0.5] }
"#;
        let plan = Analysis::parse(t, Path::new("t.toml"))
            .unwrap()
            .plan(&BTreeMap::new())
            .unwrap();
        assert_eq!(ids(&plan), ["v-0_25", "v-0_5"]);
        assert_eq!(plan[0].args[1], "vgg11:w=0.25");
    }

    #[test]
    fn bad_sweeps_are_refused_naming_the_step() {
        let p = Path::new("s.toml");
        let bad = |text: String| Analysis::parse(&text, p).unwrap_err().to_string();
        // Zipped lists of different lengths.
        let e = bad(SWEEP.replace(
            "a = [1, 2], b = [2, 3] }\nsweep_mode",
            "a = [1], b = [2, 3] }\nsweep_mode",
        ));
        assert!(
            e.contains("s.toml") && e.contains("step `p`") && e.contains("zip"),
            "{e}"
        );
        // A sweep over nothing (a variable set to no values).
        let e = bad(SWEEP.replace("seeds = \"1,2,3\"", "seeds = \"\""));
        assert!(e.contains("sweep `seed` has no values"), "{e}");
        // A swept name missing from the id is appended to it.
        let text = SWEEP
            .replace("id = \"w{seed}\"", "id = \"w\"")
            .replace("{w{a}}", "{w-{a}}")
            .replace("{w{b}}", "{w-{b}}");
        let a = Analysis::parse(&text, p).unwrap();
        assert_eq!(ids(&a.plan(&a.vars).unwrap())[..3], ["w-1", "w-2", "w-3"]);
        // A generated id that another step already has.
        let e = bad(format!(
            "{SWEEP}[[step]]\nid = \"w2\"\ncommand = \"train\"\n"
        ));
        assert!(e.contains("step id `w2`") && e.contains("twice"), "{e}");
        // A reference to a step of the sweep that does not exist.
        let e = bad(SWEEP.replace("b = [2, 3] }\nsweep_mode", "b = [2, 4] }\nsweep_mode"));
        assert!(e.contains("step `p-2-4`") && e.contains("{w4}"), "{e}");
        // A swept name that shadows a variable.
        let e = bad(SWEEP.replace("seed = \"{seeds}\"", "seeds = \"1\""));
        assert!(e.contains("sweep name `seeds`"), "{e}");
    }

    #[test]
    fn substitution_is_innermost_first_and_keeps_unknown_names() {
        let m: BTreeMap<String, String> =
            [("a".to_string(), "1".to_string()), ("b".into(), "x".into())].into();
        assert_eq!(substitute("{w{a}}/{run}/{b}{b}", &m), "{w1}/{run}/xx");
        assert_eq!(substitute("{{a}}", &m), "{1}");
        assert_eq!(substitute("no braces } {", &m), "no braces } {");
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), "cbf29ce484222325");
        assert_eq!(fnv1a(b"a"), "af63dc4c8601ec8c");
    }
}
