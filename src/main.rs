//! The `modeconn` binary: parse the command line, run, print the error chain on one line and
//! exit with code 1 on failure.

use anyhow::Result;
use clap::Parser;
use modeconn::cli::Cli;

/// mimalloc: burn allocates and frees activation- and weight-sized buffers on every op; with
/// glibc's allocator those come from fresh `mmap`s and page faults (≈ 8–10% of a train step).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(cli: Cli, argv: Vec<String>) -> Result<()> {
    let (_, text) = modeconn::cli::execute(cli.command, argv)?;
    print!("{text}");
    Ok(())
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, exit code 1, like every other error.
            let msg = e.to_string();
            let text: Vec<&str> = msg
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see `modeconn --help`)", text.join(" "));
            std::process::exit(1);
        }
    };
    if let Err(e) = modeconn::backend::on_workers(|| run(cli, argv)) {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
