#![no_main]
// The harness is fleetgate_core::fuzzing::aiface (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/aiface and fuzz/regressions/aiface through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::aiface(data));
