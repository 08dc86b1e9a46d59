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

/// The error chain on one line, each cause once: a cause whose text its parent already shows
/// (an I/O error inside "FILE: error") is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
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
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            eprintln!("{} (see `modeconn --help`)", text.join(" "));
            std::process::exit(1);
        }
    };
    let device = cli.device.unwrap_or(modeconn::cli::DeviceArg::Cpu).choice();
    let result = modeconn::backend::choose_device(device)
        .map_err(anyhow::Error::from)
        .and_then(|()| modeconn::backend::on_workers(|| run(cli, argv)));
    if let Err(e) = result {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}
