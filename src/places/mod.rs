//! The Places client: WHATSAT's HTTPS calls, inside the server's poll loop.
//!
//! One [`Places`] per server, owned by its loop; it owns no thread and never
//! blocks. Its parts, each one concern:
//!
//! - `pool`: [`Places`] itself — the request queue, dispatch onto kept-alive
//!   connections, connect attempts, deadlines, idle close, the retry-once rule.
//! - `connection`: one connection to the API — its phase, the addresses it
//!   may still try, and the I/O step that drives it (TLS, then the parser).
//! - `request`: what goes to the API and what its answer comes to — the
//!   legacy GET and the New API POST, an HTTP status mapped to Google's
//!   status vocabulary (below), [`failure_body`]. Pure functions of bytes.
//! - `url`: the endpoint from `herd.conf` (`https://HOST[:PORT]/PATH`, read
//!   by [`crate::addr`], the parser `herd.conf` is checked with), the `Host`
//!   header, percent-encoding.
//! - `dns`: the host looked up on a helper thread that wakes the loop with
//!   the server's `Waker` (a literal IP needs none); cached, looked up again
//!   after connect failures and every five minutes (`dns::DNS_TTL`).
//! - `tls`: one mio `TcpStream` + `rustls::ClientConnection` driven by hand
//!   (webpki roots plus `places_ca`; SNI and verification always on).
//! - `http`: the response parser (httparse; `Content-Length`, chunked, or
//!   until close; a size cap).
//! - [`json`]: the cut of Google's bytes after the bound-th result, the
//!   newline collapse, Google's layout for the answers we write ourselves,
//!   and the Places API (New) → legacy translation (mapping in its header).
//!
//! # The pool
//!
//! A request is queued, then put on a connection: an idle kept-alive one
//! (the most recently used), else a new one while fewer than
//! [`MAX_IN_FLIGHT`] requests are in flight, else it waits in the queue (at
//! most [`MAX_QUEUED`]). One request at a time per connection, HTTP/1.1
//! keep-alive; idle connections are closed after [`IDLE_TIMEOUT`]. A new
//! connection tries the resolved addresses in turn (IPv4 first), each for at
//! most [`CONNECT_TIMEOUT`]. A request written on a reused connection that
//! then fails before any response byte (the server had closed it) is retried
//! once on a fresh connection. Every request is answered — with the Places
//! JSON or with [`failure_body`] — by its deadline ([`REQUEST_TIMEOUT`] after
//! `submit`), which `next_deadline`/`on_timeout` enforce.
//!
//! # Failure statuses
//!
//! Google's legacy `status` vocabulary, so clients need to know only one:
//!
//! | status             | when                                                      |
//! |--------------------|-----------------------------------------------------------|
//! | `REQUEST_DENIED`   | no API key; HTTP 401 or 403 from the API                  |
//! | `INVALID_REQUEST`  | HTTP 400 from the API; a query whose numbers are not numbers |
//! | `OVER_QUERY_LIMIT` | HTTP 429 from the API; more than [`MAX_QUEUED`] requests waiting |
//! | `UNKNOWN_ERROR`    | DNS, connect, TLS (an untrusted certificate too), a deadline, another non-200 status, a body that is not JSON or too large, a connection closed mid-response, a malformed response |
//!
//! `error_message` says what failed, naming the host but never the key. A
//! legacy answer with HTTP 200 is passed through whatever its `status`
//! (e.g. Google's own `REQUEST_DENIED` for a bad key).
//!
//! # Logs
//!
//! Each request's outcome and duration at `info`, connections at `debug`,
//! with the server's name as the target. The key is never logged.

mod connection;
mod dns;
mod http;
pub mod json;
mod pool;
mod request;
mod settings;
mod tls;
mod url;

use std::time::Duration;

pub use pool::Places;
pub use request::{failure_body, FIELD_MASK};
pub use settings::check_settings;

/// The most requests in flight at once, hence the most connections to the
/// API: each carries one request at a time. Requests past it wait in the queue.
pub const MAX_IN_FLIGHT: usize = 64;

/// The most requests waiting for a connection; past it a request fails at
/// once (`OVER_QUERY_LIMIT`), so memory stays bounded when the API is slow.
pub const MAX_QUEUED: usize = 4096;

/// The largest response body accepted (Google's answers are a few tens of KiB).
pub const MAX_BODY: usize = 4 << 20;

/// From `submit` to the reply, whatever happens: DNS, connect, TLS, the
/// API's answer. The client then answers with a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one address may take to accept a TCP connection before the
/// next resolved address is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an idle kept-alive connection is kept for reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The client's limits; [`Default`] gives the named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`MAX_IN_FLIGHT`] (at least 1, at most [`crate::token::PLACES_SPAN`]).
    pub max_in_flight: usize,
    /// See [`MAX_QUEUED`].
    pub max_queued: usize,
    /// See [`MAX_BODY`].
    pub max_body: usize,
    /// See [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: MAX_IN_FLIGHT,
            max_queued: MAX_QUEUED,
            max_body: MAX_BODY,
            request_timeout: REQUEST_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

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
    /// The outcome: `OK`, or the failure status written in the body
    /// (`REQUEST_DENIED`, `INVALID_REQUEST`, `OVER_QUERY_LIMIT`,
    /// `UNKNOWN_ERROR`). A legacy answer passed through counts as `OK`
    /// whatever Google's own status in it.
    pub status: &'static str,
    /// From `submit` to this reply.
    pub elapsed: Duration,
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
