#![no_main]
// The harness is fleetgate_core::fuzzing::ws_frame (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/ws_frame and fuzz/regressions/ws_frame through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::ws_frame(data));
