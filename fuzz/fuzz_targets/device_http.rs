#![no_main]
// The harness is fleetgate_core::fuzzing::device_http (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/device_http and fuzz/regressions/device_http through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::device_http(data));
