#![no_main]
// The harness is fleetgate_core::fuzzing::http_response (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/http_response and fuzz/regressions/http_response through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::http_response(data));
