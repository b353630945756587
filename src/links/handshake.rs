//! The dialling half of the link handshake, decided on bytes alone.
//!
//! A link we dialled first sends `HERD NAME` — with a shared secret,
//! `HERD NAME NONCE` — and then, with a secret, sends nothing more until
//! the neighbour's `CHALLENGE NB MAC` proves that it knows the secret too
//! (so an impostor at a neighbour's address learns no positions). The proof
//! checks out → we answer `AUTH MAC` and the link carries updates; anything
//! else, or no answer within [`HANDSHAKE_TIMEOUT`], drops the link. The
//! accepting half is [`super::inbound`].

use std::time::{Duration, Instant};

use crate::auth::{self, Secret};
use crate::conn::{LineReader, Piece};
use crate::logging::escape;
use crate::protocol::{self, Command};

/// A neighbour that has not answered our authenticating `HERD` by then is
/// dropped and dialled again.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest handshake line a neighbour may send.
pub const HANDSHAKE_LINE_LIMIT: usize = 1024;

/// A handshake under way on a link we dialled.
#[derive(Debug)]
pub struct Handshake {
    /// Our nonce, sent in `HERD NAME NONCE`.
    nonce: String,
    /// For the neighbour's `CHALLENGE` line.
    reader: LineReader,
    /// When we give up waiting for it.
    pub deadline: Instant,
}

/// What the neighbour's bytes came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing decisive yet (no complete line, or blank lines).
    Waiting,
    /// The CHALLENGE checked out: send these bytes (`AUTH MAC\n`) and go.
    Proven(Vec<u8>),
    /// The handshake failed, for this reason.
    Failed(String),
}

/// Appends our first line to `out`; with a secret, returns the handshake
/// that must complete before anything else is sent.
pub fn hello(out: &mut Vec<u8>, server: &str, secret: bool, now: Instant) -> Option<Handshake> {
    if !secret {
        protocol::write_herd(out, server, None);
        return None;
    }
    let nonce = auth::nonce();
    protocol::write_herd(out, server, Some(&nonce));
    Some(Handshake {
        nonce,
        reader: LineReader::default(),
        deadline: now + HANDSHAKE_TIMEOUT,
    })
}

impl Handshake {
    /// Feeds what the neighbour sent during the handshake.
    pub fn feed(&mut self, server: &str, secret: Option<&Secret>, bytes: &[u8]) -> Step {
        let mut step = Step::Waiting;
        let nonce = &self.nonce;
        self.reader.feed(bytes, HANDSHAKE_LINE_LIMIT, |piece| {
            if step == Step::Waiting {
                step = check_challenge(server, secret, nonce, piece);
            }
        });
        step
    }
}

/// Checks one line the neighbour sent during the handshake.
fn check_challenge(server: &str, secret: Option<&Secret>, nonce: &str, piece: Piece<'_>) -> Step {
    let Piece::Line(line) = piece else {
        return Step::Failed("neighbour sent an over-long line during the handshake".to_string());
    };
    let Some(secret) = secret else {
        return Step::Failed("handshake without a secret".to_string());
    };
    match protocol::parse(line) {
        Command::Blank => Step::Waiting,
        Command::Challenge { nonce: nb, mac } => {
            let me = server.as_bytes();
            if !auth::is_nonce(nb) || !secret.verify_accept(me, nonce.as_bytes(), nb, mac) {
                return Step::Failed(
                    "the neighbour failed authentication: wrong secret, or not a herd server"
                        .to_string(),
                );
            }
            let mut proof = Vec::new();
            protocol::write_auth(&mut proof, &secret.dial_mac(me, nonce.as_bytes(), nb));
            Step::Proven(proof)
        }
        _ => Step::Failed(format!(
            "the neighbour refused the handshake: {}",
            escape(&line[..line.len().min(200)])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::inbound::{AuthResult, Peer};

    /// Both halves against each other, as two servers run them.
    #[test]
    fn the_dialler_and_the_acceptor_agree_only_on_the_same_secret() {
        for (ours, theirs, works) in [
            (b"k".as_slice(), b"k".as_slice(), true),
            (b"k", b"x", false),
        ] {
            let (ours, theirs) = (Secret::new(ours), Secret::new(theirs));
            let now = Instant::now();
            let mut hello_line = Vec::new();
            let mut h = hello(&mut hello_line, "Hands", true, now).unwrap();
            let Command::Herd { name, nonce } =
                protocol::parse(&hello_line[..hello_line.len() - 1])
            else {
                panic!("{hello_line:?}");
            };
            let mut challenge = Vec::new();
            let mut peer = Peer::hello(name, nonce, None, Some(&theirs), &mut challenge).unwrap();
            match h.feed("Hands", Some(&ours), &challenge) {
                Step::Proven(auth_line) => {
                    assert!(works);
                    let Command::Auth { mac } = protocol::parse(&auth_line[..auth_line.len() - 1])
                    else {
                        panic!("{auth_line:?}");
                    };
                    assert_eq!(peer.auth(Some(&theirs), mac), AuthResult::Accepted);
                }
                Step::Failed(why) => assert!(!works, "{why}"),
                Step::Waiting => panic!("a whole CHALLENGE line was fed"),
            }
        }
    }

    #[test]
    fn a_refusal_or_an_over_long_line_fails_and_a_partial_line_waits() {
        let secret = Secret::new(b"k");
        let mut out = Vec::new();
        let mut h = hello(&mut out, "Hands", true, Instant::now()).unwrap();
        assert_eq!(h.feed("Hands", Some(&secret), b"CHALL"), Step::Waiting);
        assert!(matches!(
            h.feed("Hands", Some(&secret), b"\n? HERD\n"),
            Step::Failed(_)
        ));
        let mut h = hello(&mut out, "Hands", true, Instant::now()).unwrap();
        let long = vec![b'x'; HANDSHAKE_LINE_LIMIT + 10];
        assert!(matches!(
            h.feed("Hands", Some(&secret), &long),
            Step::Failed(_)
        ));
        let mut plain = Vec::new();
        assert!(hello(&mut plain, "Hands", false, Instant::now()).is_none());
        assert_eq!(plain, b"HERD Hands\n");
    }
}
