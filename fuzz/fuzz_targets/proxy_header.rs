#![no_main]
// The harness is fleetgate_core::fuzzing::proxy_header (core/src/fuzzing.rs); core/tests/fuzz_regressions.rs
// replays fuzz/seeds/proxy_header and fuzz/regressions/proxy_header through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetgate_core::fuzzing::proxy_header(data));
