#![no_main]
// The harness is fleetgate_core::fuzzing::zkteco (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/zkteco and fuzz/regressions/zkteco through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::zkteco(data));
