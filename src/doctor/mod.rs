//! `fleetgate doctor`: checks the machine it runs on against `tuning/README.md` and says what to
//! change.
//!
//! Two halves, kept apart so the judgement is testable without the machine: `probe` reads the
//! machine (every read that can fail is a `Result` holding what could not be read), and `judge`
//! turns the readings and the `serve` configuration judged (`plan`) into findings (`finding`) with
//! pure functions. What `tuning/` recommends comes from its files (`tuning`). `run` goes from the
//! flags (`args`) to the `report` and the exit status.

pub mod args;
pub mod finding;
pub mod judge;
pub mod plan;
pub mod probe;
pub mod report;
pub mod run;
pub mod tuning;
