use clap::Parser;
use fleetgate::cli::{self, Cli, Command};

// mimalloc: per-thread free lists suit the shard threads, each allocating and freeing its own frames.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Serve(cfg) => fleetgate::serve::run(cfg.clone()),
        Command::Device { api, action } => cli::run_device(api, action),
        Command::Command { api, action } => cli::run_command(api, action),
        Command::Backup(args) => cli::run_backup(args),
        Command::Restore(args) => cli::run_restore(args),
        Command::Export(args) => cli::run_export(args),
        // The doctor's exit status is its verdict (1: a check FAILed), not an error.
        Command::Doctor(args) => return fleetgate::doctor::run::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetgate: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
