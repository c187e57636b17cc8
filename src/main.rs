use clap::Parser;
use fleetgate::cli::{self, Cli, Command};

// mimalloc: per-thread free lists suit the shard threads, each allocating and freeing its own frames.
// Its `override` feature (Cargo.toml) makes it malloc for RocksDB's C++ as well: under glibc's
// malloc, the blocks the cache evicts stayed in glibc's arenas as free memory that grew for as
// long as the soak ran (docs/benchmarks.md, "Soak with the memory bound").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages for this process: mimalloc asks for them on its arenas, and once a
    // 2 MiB page has been collapsed the kernel keeps all of it resident however little of it is in
    // use, so the blocks the store's cache frees kept RSS climbing for as long as the soak ran
    // (docs/benchmarks.md, "Soak with the memory bound"). The flag covers RocksDB's memory too.
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
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
