#![no_main]
// The harness is fleetgate_core::fuzzing::generic_session (core/src/fuzzing.rs);
// core/tests/fuzz_regressions.rs replays fuzz/seeds/generic_session and
// fuzz/regressions/generic_session through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::generic_session(data));
