use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = parlance::cli::Cli::parse();
    ExitCode::from(parlance::cli::run(cli))
}
