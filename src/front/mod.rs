//! Fronts: the wire formats other than the line protocol that reach the
//! one engine (docs/PROTOCOL.md §14).
//!
//! A front owns the framing, limits and errors of its wire format and
//! nothing else: what a request *means* is decided by
//! [`crate::engine::Engine`], exactly as for a line on a client port. An
//! OsmAnd report becomes the IAMAT that says the same thing; a `/v1/lines`
//! body and a WebSocket message are lines; `GET /v1/clients/ID/places` is a
//! WHATSAT. The loop reads and writes the sockets; the fronts turn bytes
//! into engine calls and the engine's replies into responses and frames.

pub mod token;

pub use token::Token;
