#![no_main]
// The harness is fleetgate_core::fuzzing::generic (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/generic and fuzz/regressions/generic through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::generic(data));
