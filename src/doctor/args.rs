//! `fleetgate doctor`'s flags.

use crate::config::MachineConfig;

#[derive(Clone, Debug, clap::Args)]
pub struct DoctorArgs {
    // The `serve` flags the machine is judged for: serve's own flags, environment variables and
    // defaults, so the two cannot drift apart.
    #[command(flatten)]
    pub machine: MachineConfig,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Appending writes, each followed by fdatasync, timed in the data directory.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub fsync_samples: u32,
}
