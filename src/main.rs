//! The `modeconn` binary: parse the command line, run, print the error chain on one line and
//! exit with code 1 on failure.

use anyhow::Result;
use clap::Parser;
use modeconn::cli::{Cli, Command};
use modeconn::commands;

fn run(cli: Cli, argv: Vec<String>) -> Result<()> {
    match cli.command {
        Command::Train(a) => {
            let opts = a.resolve()?;
            let m = commands::train::run(&opts, argv)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        Command::Connect(a) => {
            let opts = a.resolve()?;
            let v = commands::connect::run(&opts, argv)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Path(a) => {
            let opts = a.resolve()?;
            let v = commands::path::run(&opts, argv)?;
            print!("{}", modeconn::commands::path::summary_table(&v));
        }
        Command::Probe(a) => {
            let opts = a.resolve()?;
            let v = commands::probe::run(&opts, argv)?;
            print!("{}", commands::probe::table(&v));
        }
        Command::Plane(a) => {
            let opts = a.resolve()?;
            let v = commands::plane::run(&opts, argv)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Command::Plot(a) => {
            let opts = a.resolve()?;
            let v = commands::plot::run(&opts)?;
            for f in v.as_array().into_iter().flatten() {
                println!(
                    "{}  {}",
                    f["png"].as_str().unwrap_or(""),
                    f["svg"].as_str().unwrap_or("")
                );
            }
        }
        Command::Eval(a) => {
            let opts = a.resolve()?;
            let m = commands::eval::run(&opts)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        Command::Vtrain(a) => {
            let opts = a.resolve()?;
            let m = commands::vtrain::run(&opts, argv)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        Command::Permute(a) => {
            let opts = a.resolve()?;
            let m = commands::permute::run(&opts, argv)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        Command::Align(a) => {
            let opts = a.resolve()?;
            let m = commands::align::run(&opts, argv)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
    }
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
    if let Err(e) = run(cli, argv) {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
