//! Herd links: the link protocol in one home.
//!
//! | file          | what                                                        |
//! |---------------|-------------------------------------------------------------|
//! | [`outbound`]  | the links we dial: connect, hello, floods, catch-up, backoff |
//! | [`inbound`]   | the links neighbours dial: `HERD`, `AUTH`, `SYNC`, their ATs  |
//! | [`handshake`] | the dialler's half of the authenticated hello                |
//! | [`catchup`]   | streaming the whole store to a link that came up             |
//! | [`liveness`]  | heartbeats and the link timeout, as plain data               |
//! | [`backoff`]   | reconnect delays as plain data                               |
//!
//! Every link line is written by a function of [`crate::protocol`] and
//! parsed by its `parse`.
//!
//! ## One-way links
//! Every server dials every neighbour of `herd.conf` and *sends* on that
//! connection only; what a neighbour sends us arrives on the connection *it*
//! dialled, which our listener accepted like any client and which became a
//! peer when it said `HERD NAME` ([`inbound::Peer`]). So between two
//! neighbours there are two TCP connections, one per direction. Two servers
//! dialling each other at once therefore never race over which connection
//! to keep: there is nothing to resolve, and nothing flaps.
//!
//! ## The wire, per direction
//! ```text
//! dialler -> acceptor   HERD NAME                 open herd: trusted at once
//! dialler -> acceptor   HERD NAME NONCE           with a shared secret:
//! acceptor -> dialler   CHALLENGE NONCE MAC         the acceptor proves itself,
//! dialler -> acceptor   AUTH MAC                    then the dialler (see `auth`)
//! dialler -> acceptor   SYNC COUNT                catch-up: COUNT AT lines follow
//! dialler -> acceptor   AT ...                    catch-up, then every flood
//! either -> the other   PING                      heartbeat, when quiet for a while
//! ```
//! The acceptor's first answer (the `CHALLENGE`, or in an open herd an
//! immediate `PING`) is what makes the dialler count the link up; after
//! that it sends nothing but heartbeats and `? LINE` for a line it refuses,
//! which the dialler logs. Either end declares the link dead when it has
//! not heard from the other for the link timeout ([`liveness`]).
//!
//! ## A link's life
//! `Idle` (waiting for the retry time) → `Connecting` (a nonblocking connect
//! in the poll; done on WRITABLE when `take_error` is empty and `peer_addr`
//! answers, failed on an error or after [`outbound::CONNECT_TIMEOUT`]) →
//! `Up`. On `Up` the link sends its hello (and, with a shared secret,
//! completes the [`handshake`] first), then its whole store ([`catchup`]),
//! then every update flooded to it; it counts as up once the neighbour has
//! answered. Any error, EOF, silence past the link timeout or an output
//! backlog past the output cap takes it back to `Idle` with a
//! [`backoff::Backoff`] delay.
//!
//! ## Over TLS
//! A neighbour with a peer port, in a herd with `tls_cert`, `tls_key` and
//! `tls_ca`, is dialled there over mutual TLS: the stream of a link is a
//! [`crate::tls::stream::Stream`], the hello waits in the link's output
//! until the TLS handshake is done, and a handshake that fails (a
//! certificate that does not chain to `tls_ca` or does not name the
//! neighbour) takes the link down like any error, logged as refused.
//! Nothing above the stream knows TLS is there.
//!
//! ## Why floods end and the herd converges
//! A server forwards an update only when it *stored* it, i.e. when it was
//! strictly newer in the store's total order (client timestamp, then line
//! bytes; see `store`). Each server stores a given line at most once, so each
//! line crosses each link at most once per direction: every flood ends. A
//! line that loses at some server is dominated there by a larger one, which
//! that server itself flooded or received; by induction over the links every
//! connected server ends with the largest line it can reach, and catch-up at
//! each link-up repairs whatever a link missed while down.

pub mod backoff;
pub mod catchup;
pub mod handshake;
pub mod inbound;
pub mod liveness;
pub mod outbound;

pub use backoff::Backoff;
pub use catchup::{CATCHUP_HIGH_WATER, CATCHUP_LOW_WATER};
pub use liveness::{Liveness, DEFAULT_LINK_TIMEOUT};
pub use outbound::{Links, CONNECT_TIMEOUT, DEFAULT_LINK_OUTPUT_CAP};

use std::net::SocketAddr;

/// A neighbour to dial: its name, the address to dial (its peer port if
/// it has one), and whether to speak mutual TLS there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub name: String,
    pub addr: SocketAddr,
    pub tls: bool,
}

impl Neighbour {
    /// A neighbour dialled in plaintext.
    pub fn plain(name: &str, addr: SocketAddr) -> Neighbour {
        Neighbour {
            name: name.to_string(),
            addr,
            tls: false,
        }
    }
}
