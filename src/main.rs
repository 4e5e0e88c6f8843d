use clap::Parser;
use std::process::ExitCode;

// Loading a bot allocates many small values (YAML trees, JSON, templates); mimalloc
// handles that markedly faster than the system allocator (see docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = parlance::cli::Cli::parse();
    ExitCode::from(parlance::cli::run(cli))
}
