//! `fleetgate doctor` from flags to exit status: read the machine, judge it, print the report.
//!
//! Exit status: 0 when no finding is FAIL (OKs and WARNs only), 1 when at least one is FAIL.
//! Usage errors exit 2 (clap).

use std::process::ExitCode;

use super::args::DoctorArgs;
use super::finding::exit_code;
use super::plan::Plan;
use super::{judge, probe, report};

pub fn run(args: &DoctorArgs) -> ExitCode {
    let plan = Plan::of(&args.machine);
    let readings = probe::read_machine(
        &probe::Paths::real(),
        &args.machine.data_dir,
        &plan,
        args.fsync_samples as usize,
    );
    let findings = judge::judge_all(&readings, &plan);
    let out = if args.json {
        report::render_json(&plan, &args.machine, &findings)
    } else {
        report::render_text(&plan, &args.machine, &findings)
    };
    print!("{out}");
    ExitCode::from(exit_code(&findings))
}
