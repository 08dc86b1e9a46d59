//! Cluster exports: the step graph of an analysis rendered for the engines research clusters
//! run. Each step becomes one job that calls `modeconn run SPEC --out DIR --step ID`, whose
//! success marker (`DIR/ID/step.json`) is the job's output and its dependants' input.
//!
//! - Snakemake (<https://snakemake.readthedocs.io>): one rule per step (inputs = upstream
//!   markers, output = its marker, threads, `mem_mb` and `runtime` resources), runnable with
//!   `snakemake --cores N` and on SLURM through Snakemake's SLURM executor or a profile.
//! - SLURM (<https://slurm.schedmd.com/sbatch.html>): a bash script of `sbatch` calls, one job
//!   array per spec step (a swept step's points are the array's tasks), each waiting on the
//!   arrays it reads with `--dependency=afterok`.

use std::path::PathBuf;

use super::runner::Prepared;

/// How a job calls one step: the binary, the spec, the output directory and the variable
/// flags of the export (`--profile`, `--set`), all passed on verbatim.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The modeconn binary (absolute).
    pub exe: PathBuf,
    /// The spec file (absolute).
    pub spec: PathBuf,
    /// The analysis's output directory (absolute).
    pub out: PathBuf,
    /// `--profile NAME` / `--set NAME=VALUE` flags.
    pub flags: Vec<String>,
    /// Threads of each step.
    pub threads: usize,
}

/// `s` quoted for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl Invocation {
    /// The words of the command that runs step `id` (the binary first).
    pub fn words(&self, id: &str) -> Vec<String> {
        let mut words = vec![
            self.exe.to_string_lossy().to_string(),
            "run".into(),
            self.spec.to_string_lossy().to_string(),
            "--out".into(),
            self.out.to_string_lossy().to_string(),
        ];
        words.extend(self.flags.iter().cloned());
        words.extend(["--step".into(), id.to_string(), "--quiet".into()]);
        words
    }

    /// The shell command that runs step `id`.
    pub fn command(&self, id: &str) -> String {
        self.words(id)
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A Python string literal.
fn py(s: &str) -> String {
    format!("{s:?}")
}

/// A Snakemake rule name for step `i` with id `id` (ids may hold `-`).
fn rule_name(i: usize, id: &str) -> String {
    format!("s{i}_{}", id.replace('-', "_"))
}

/// The Snakefile of `steps` for analysis `name`.
pub fn snakefile(name: &str, steps: &[Prepared], inv: &Invocation) -> String {
    let marker = |p: &Prepared| py(&p.marker().to_string_lossy());
    let mut s = format!(
        "# Snakefile of analysis `{name}`, written by `modeconn run {} --export snakemake`:\n\
         # one rule per step; a rule's output is the step's success marker.\n\
         #   snakemake -s {} --cores 2\n\
         # On SLURM: add `--executor slurm` (snakemake-executor-plugin-slurm) or a profile.\n\n",
        inv.spec.display(),
        inv.out.join("Snakefile").display()
    );
    s.push_str("rule all:\n    input:\n");
    for p in steps {
        s.push_str(&format!("        {},\n", marker(p)));
    }
    for (i, p) in steps.iter().enumerate() {
        s.push_str(&format!("\nrule {}:\n", rule_name(i, &p.step.id)));
        s.push_str("    input:\n");
        for d in &p.step.deps {
            let up = steps
                .iter()
                .find(|q| &q.step.id == d)
                .expect("planned dependency");
            s.push_str(&format!("        {},\n", marker(up)));
        }
        s.push_str(&format!("    output:\n        {},\n", marker(p)));
        s.push_str(&format!("    threads: {}\n", inv.threads));
        s.push_str(&format!(
            "    resources:\n        mem_mb={},\n        runtime={},\n",
            p.step.mem_mb, p.step.minutes
        ));
        // Braces are Snakemake's format fields: `{threads}` is the rule's thread count.
        let cmd = inv
            .command(&p.step.id)
            .replace('{', "{{")
            .replace('}', "}}");
        s.push_str(&format!(
            "    shell:\n        {}\n",
            py(&format!("RAYON_NUM_THREADS={{threads}} {cmd}"))
        ));
    }
    s
}

/// The SLURM submission script of `steps` for analysis `name`: one job array per spec step.
pub fn slurm_script(name: &str, steps: &[Prepared], inv: &Invocation) -> String {
    let mut s = format!(
        "#!/usr/bin/env bash\n\
         # SLURM submission of analysis `{name}`, written by `modeconn run {} --export slurm`:\n\
         # one job array per spec step (a swept step's points are its tasks), each waiting on the\n\
         # arrays it reads (--dependency=afterok). Submit with: bash {}\n\
         # Extra sbatch flags (partition, account, ...) may be given in $SBATCH_FLAGS.\n\
         set -euo pipefail\n\
         mkdir -p {}\n",
        inv.spec.display(),
        inv.out.join("submit-slurm.sh").display(),
        shell_quote(&inv.out.join("slurm").to_string_lossy()),
    );
    let mut templates: Vec<usize> = steps.iter().map(|p| p.step.template).collect();
    templates.dedup();
    let job_of = |template: usize| format!("job{template}");
    for t in templates {
        let group: Vec<&Prepared> = steps.iter().filter(|p| p.step.template == t).collect();
        let mut after: Vec<usize> = Vec::new();
        for p in &group {
            for d in &p.step.deps {
                let up = steps
                    .iter()
                    .find(|q| &q.step.id == d)
                    .expect("planned dependency");
                if !after.contains(&up.step.template) {
                    after.push(up.step.template);
                }
            }
        }
        let mut wrap = String::from("case $SLURM_ARRAY_TASK_ID in");
        for (k, p) in group.iter().enumerate() {
            wrap.push_str(&format!(" {k}) id={};;", p.step.id));
        }
        wrap.push_str(" esac; exec ");
        wrap.push_str(&inv.command("__ID__").replace("__ID__", "\"$id\""));
        let first = group[0];
        let dep = if after.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = after.iter().map(|&u| format!("${}", job_of(u))).collect();
            format!(" --dependency=afterok:{}", ids.join(":"))
        };
        s.push_str(&format!(
            "{}=$(sbatch --parsable ${{SBATCH_FLAGS:-}} --job-name={} --array=0-{} --cpus-per-task={} --mem={}M --time={} --output={}{} --wrap {})\n",
            job_of(t),
            shell_quote(&format!("{name}:{}", first.step.id)),
            group.len() - 1,
            inv.threads,
            group.iter().map(|p| p.step.mem_mb).max().unwrap_or(4096),
            group.iter().map(|p| p.step.minutes).max().unwrap_or(120),
            shell_quote(&inv.out.join("slurm").join(format!("{}-%a.log", first.step.id)).to_string_lossy()),
            dep,
            shell_quote(&wrap),
        ));
        s.push_str(&format!(
            "echo \"submitted {} as ${}\"\n",
            first.step.id,
            job_of(t)
        ));
    }
    s
}
