#![no_main]
// The harness is fleetgate_core::fuzzing::http_request (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/http_request and fuzz/regressions/http_request through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::http_request(data));
