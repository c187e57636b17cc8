#![no_main]
// The harness is fleetgate_core::fuzzing::ws_handshake (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/ws_handshake and fuzz/regressions/ws_handshake through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::ws_handshake(data));
