#![no_main]
// The harness is fleetgate_core::fuzzing::smackbio (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/smackbio and fuzz/regressions/smackbio through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::smackbio(data));
