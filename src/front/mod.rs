//! The fronts: wire formats other than the line protocol (SPEC §14), each
//! turning its requests into engine input and the engine's answers into its
//! own format. What a request *means* stays in the engine.
//!
//! The parsing and formatting halves are pure and live here, one module per
//! format, each with its tests: [`request`] (HTTP/1.x request heads, bodies,
//! form decoding), [`osmand`] (the OsmAnd / Traccar Client location reports,
//! turned into IAMAT lines), [`ws`] (RFC 6455 handshake and frames).
//! [`fuzzing`] holds the checks the `fronts` fuzz target and the unit tests
//! share.

pub mod fuzzing;
pub mod osmand;
pub mod request;
pub mod ws;
