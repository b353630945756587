//! The fronts' parsers with arbitrary bytes in arbitrary chunkings: the
//! HTTP request head, request bodies (by `Content-Length` and chunked),
//! OsmAnd reports (query, form and JSON) and WebSocket frames. The checks
//! live in the library (`herd::front::fuzzing`) so that the unit tests and
//! proptests run the same code on stable Rust; that module's header gives
//! the input layout and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    herd::front::fuzzing::check(data);
});
