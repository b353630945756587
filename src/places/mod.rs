//! The Places client: WHATSAT's HTTPS calls, inside the server's poll loop.
//!
//! STUB: until the real client lands, every request fails at once with the
//! failure framing of SPEC §3. The interface below is the one the server
//! loop uses and stays as it is.

use std::sync::Arc;
use std::time::Instant;

use mio::event::Event;
use mio::{Registry, Token, Waker};

use crate::config::PlacesConfig;

/// Tokens at or above this value (and below the server's fixed tokens) belong
/// to the Places client's connections.
pub const TOKEN_BASE: usize = 1 << 40;

/// The server's handle for one WHATSAT's Places call.
pub type RequestId = u64;

/// What to ask Places for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Latitude in plain decimal degrees, no `+`: `34.068930`.
    pub lat: String,
    /// Longitude in plain decimal degrees, no `+`: `-118.445127`.
    pub lng: String,
    /// Radius in metres, plain decimal: `10000`, `1234.5`.
    pub radius_m: String,
    /// How many results to keep (1..=20).
    pub bound: usize,
}

/// A finished request: the JSON exactly as it goes on the wire after the AT
/// line, ending in exactly two newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: RequestId,
    pub body: Vec<u8>,
}

/// Why the Places client could not be set up (a bad `places_ca` file, a bad URL).
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// One server's Places client.
pub struct Places {
    server: String,
}

impl Places {
    /// `key` is the API key (None: every request fails with a "no key" error).
    /// `waker` wakes the server's loop (for results from helper threads);
    /// `server` is the server's name, the `log` target.
    pub fn new(
        config: &PlacesConfig,
        key: Option<String>,
        waker: Arc<Waker>,
        server: &str,
    ) -> Result<Places, SetupError> {
        let _ = (config, key, waker);
        Ok(Places {
            server: server.to_string(),
        })
    }

    /// True if `token` is one of this client's connections.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= TOKEN_BASE && token.0 < TOKEN_BASE + (1 << 20)
    }

    /// Starts a request; finished replies (possibly this one, at once) are pushed to `done`.
    pub fn submit(
        &mut self,
        registry: &Registry,
        id: RequestId,
        query: Query,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        let _ = (registry, query, now);
        log::info!(target: &self.server, "places request {id} failed: no Places client is configured");
        done.push(Reply {
            id,
            body: failure_body("REQUEST_DENIED", "no Places client is configured"),
        });
    }

    /// Handles readiness on one of this client's tokens.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        event: &Event,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        let _ = (registry, event, now, done);
    }

    /// Called when the server's waker fired (helper threads may have results).
    pub fn on_wake(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Reply>) {
        let _ = (registry, now, done);
    }

    /// The earliest instant at which `on_timeout` has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Fails requests whose deadline passed, closes idle connections.
    pub fn on_timeout(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Reply>) {
        let _ = (registry, now, done);
    }
}

/// The failure framing of SPEC §3 in Google's layout, ending in two newlines:
///
/// ```text
/// {
///    "error_message" : "...",
///    "html_attributions" : [],
///    "results" : [],
///    "status" : "..."
/// }
/// ```
pub fn failure_body(status: &str, message: &str) -> Vec<u8> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    format!(
        "{{\n   \"error_message\" : {},\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : {}\n}}\n\n",
        quote(message),
        quote(status)
    )
    .into_bytes()
}
