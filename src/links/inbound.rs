//! The accepting half of a herd link: a connection our listener accepted
//! that said `HERD NAME`, and from then on carries a neighbour's updates.
//!
//! It starts as a client like any other; its first line makes it a
//! [`Peer`]. Without a shared secret the peer is trusted at once. With one,
//! its `HERD NAME NONCE` is answered with `CHALLENGE NB MAC` and nothing it
//! sends counts until its `AUTH MAC` checks out (see [`crate::auth`]); a
//! wrong proof is refused and the connection read no further. After that it
//! may announce a catch-up (`SYNC N`, then N AT lines) and sends every
//! update its server stores. Everything here is decided on bytes and state
//! alone: the engine calls it, the loop performs what it returns.

use std::time::Instant;

use super::liveness::Liveness;
use crate::auth::{self, Secret};
use crate::logging::escape;
use crate::protocol;

/// An inbound herd link's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The name it gave, as sent.
    pub name: Box<[u8]>,
    /// Its index among this server's neighbours, if it is one.
    pub neighbour: Option<usize>,
    /// May it send AT lines? Always, without a shared secret; with one, once
    /// its `AUTH` checked out.
    pub authenticated: bool,
    /// The nonces of a handshake under way: (the dialler's, ours).
    pub nonces: Option<(Box<[u8]>, String)>,
    /// Updates received on this link, and how many of them were newer.
    pub received: u64,
    pub stored: u64,
    /// A catch-up being received, announced by `SYNC`.
    pub sync: Option<Sync>,
    /// Heartbeats and the silence check; set by the loop once the link is
    /// a peer (the engine knows no instants of the loop).
    pub live: Option<Liveness>,
}

/// A catch-up being received: how many updates were announced, the link's
/// counts when it began, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sync {
    pub count: u64,
    pub received_before: u64,
    pub stored_before: u64,
    pub started: Instant,
}

/// Why a `HERD` line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The herd has a secret and the dialler offered no nonce (or a bad one).
    NoNonce,
    /// The dialler wants to authenticate and this herd has no secret.
    NoSecret,
}

impl Refusal {
    /// For the log.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoNonce => "it did not offer to authenticate",
            Refusal::NoSecret => "it wants to authenticate and this herd has no secret",
        }
    }
}

/// What an `AUTH` line came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// The proof checked out: the link may send updates.
    Accepted,
    /// A wrong proof: refuse it and read nothing more.
    Failed,
    /// No handshake was under way (or no secret): an invalid line.
    Unexpected,
}

impl Peer {
    /// A connection said `HERD name [nonce]`. `neighbour` is its index among
    /// ours, if it is one. With a secret, the `CHALLENGE` to send back is
    /// appended to `reply`.
    pub fn hello(
        name: &[u8],
        nonce: Option<&[u8]>,
        neighbour: Option<usize>,
        secret: Option<&Secret>,
        reply: &mut Vec<u8>,
    ) -> Result<Peer, Refusal> {
        let mut peer = Peer {
            name: name.into(),
            neighbour,
            authenticated: false,
            nonces: None,
            received: 0,
            stored: 0,
            sync: None,
            live: None,
        };
        match (secret, nonce) {
            (None, None) => peer.authenticated = true,
            (Some(secret), Some(na)) if auth::is_nonce(na) => {
                let nb = auth::nonce();
                let mac = secret.accept_mac(name, na, nb.as_bytes());
                protocol::write_challenge(reply, &nb, &mac);
                peer.nonces = Some((na.into(), nb));
            }
            (Some(_), _) => return Err(Refusal::NoNonce),
            (None, Some(_)) => return Err(Refusal::NoSecret),
        }
        Ok(peer)
    }

    /// The dialler's `AUTH mac`.
    pub fn auth(&mut self, secret: Option<&Secret>, mac: &[u8]) -> AuthResult {
        let (Some(secret), Some((na, nb))) = (secret, self.nonces.take()) else {
            return AuthResult::Unexpected;
        };
        if secret.verify_dial(&self.name, &na, nb.as_bytes(), mac) {
            self.authenticated = true;
            AuthResult::Accepted
        } else {
            AuthResult::Failed
        }
    }

    /// `SYNC count`: a catch-up of `count` updates follows. False when the
    /// link may not send updates (an invalid line).
    pub fn sync(&mut self, server: &str, count: u64, now: Instant) -> bool {
        if !self.authenticated {
            return false;
        }
        if count == 0 {
            log::info!(target: server, "catch-up from {}: nothing to receive", escape(&self.name));
        } else {
            self.sync = Some(Sync {
                count,
                received_before: self.received,
                stored_before: self.stored,
                started: now,
            });
        }
        true
    }

    /// Counts an update received on this link (`stored`: it was newer), and
    /// logs the end of a catch-up when this was its last update.
    pub fn received(&mut self, server: &str, stored: bool) {
        self.received += 1;
        self.stored += u64::from(stored);
        if let Some(s) = &self.sync {
            if self.received - s.received_before >= s.count {
                log::info!(target: server, "catch-up from {}: {} updates received, {} newer, in {:.1} ms", escape(&self.name), s.count, self.stored - s.stored_before, s.started.elapsed().as_secs_f64() * 1e3);
                self.sync = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_herd_trusts_a_plain_hello_and_refuses_a_nonce() {
        let mut reply = Vec::new();
        let p = Peer::hello(b"Hands", None, Some(1), None, &mut reply).unwrap();
        assert!(p.authenticated && reply.is_empty());
        assert_eq!(
            Peer::hello(b"Hands", Some(b"00"), None, None, &mut reply),
            Err(Refusal::NoSecret)
        );
    }

    #[test]
    fn with_a_secret_only_the_right_proof_authenticates() {
        let secret = Secret::new(b"s3cret");
        let na = auth::nonce();
        let mut reply = Vec::new();
        assert_eq!(
            Peer::hello(b"Hands", None, None, Some(&secret), &mut reply),
            Err(Refusal::NoNonce)
        );
        let mut p = Peer::hello(
            b"Hands",
            Some(na.as_bytes()),
            None,
            Some(&secret),
            &mut reply,
        )
        .unwrap();
        assert!(!p.authenticated);
        let line = &reply[..reply.len() - 1];
        let protocol::Command::Challenge { nonce: nb, mac } = protocol::parse(line) else {
            panic!("no CHALLENGE: {reply:?}");
        };
        assert!(secret.verify_accept(b"Hands", na.as_bytes(), nb, mac));
        let proof = secret.dial_mac(b"Hands", na.as_bytes(), nb);
        let mut wrong = p.clone();
        assert_eq!(wrong.auth(Some(&secret), b"00"), AuthResult::Failed);
        assert_eq!(
            p.auth(Some(&secret), proof.as_bytes()),
            AuthResult::Accepted
        );
        assert!(p.authenticated);
        // The nonces are spent: a second AUTH is out of place.
        assert_eq!(
            p.auth(Some(&secret), proof.as_bytes()),
            AuthResult::Unexpected
        );
    }

    #[test]
    fn a_catch_up_ends_after_its_count() {
        let mut reply = Vec::new();
        let mut p = Peer::hello(b"Hands", None, None, None, &mut reply).unwrap();
        assert!(p.sync("S", 2, Instant::now()));
        p.received("S", true);
        assert!(p.sync.is_some());
        p.received("S", false);
        assert!(p.sync.is_none());
        assert_eq!((p.received, p.stored), (2, 1));
    }
}
