//! X25519 from aws-lc-rs for rustls on ring ([`super::provider`]).
//!
//! rustls resumes a TLS 1.3 session only with `psk_dhe_ke`, so every
//! resumed handshake still makes an ephemeral key share and agrees on a
//! secret, on both sides; phones offer X25519 first. ring's X25519 costs
//! about 46 µs a handshake on this project's machine (key share 18, agreement
//! 29) against aws-lc-rs's 24 (6 and 18): aws-lc's base-point
//! multiplication uses larger precomputed tables and its ladder hand-written
//! assembly (docs/PERFORMANCE.md, "Resumed churn against plaintext").
//! Everything else (the suites, signatures, the key schedule, P-256 and
//! P-384) stays ring's.

use std::fmt;

use aws_lc_rs::agreement;
use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved};

/// Ephemeral ECDH on curve25519 (RFC 7748), a fresh key per handshake.
pub static X25519: &dyn SupportedKxGroup = &Group;

struct Group;

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("X25519 (aws-lc-rs)")
    }
}

impl SupportedKxGroup for Group {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        let public = private
            .compute_public_key()
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        Ok(Box::new(Exchange { private, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// One handshake's key: the private half and the share sent.
struct Exchange {
    private: agreement::EphemeralPrivateKey,
    public: agreement::PublicKey,
}

impl ActiveKeyExchange for Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        // An X25519 share is 32 bytes (RFC 8446 §4.2.8.2); aws-lc refuses
        // a peer share that makes the all-zero secret.
        if peer.len() != 32 {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        agreement::agree_ephemeral(self.private, peer, (), |secret| {
            Ok(SharedSecret::from(secret))
        })
        .map_err(|()| PeerMisbehaved::InvalidKeyShare.into())
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_ref()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends agree, with each other and with ring's X25519 (what the
    /// phones' stacks compute is the same function).
    #[test]
    fn agrees_with_itself_and_with_ring() {
        let ring = &rustls::crypto::ring::kx_group::X25519;
        for (x, y) in [(X25519, X25519), (X25519, *ring), (*ring, X25519)] {
            let (a, b) = (x.start().unwrap(), y.start().unwrap());
            let (a_pub, b_pub) = (a.pub_key().to_vec(), b.pub_key().to_vec());
            let (ab, ba) = (a.complete(&b_pub).unwrap(), b.complete(&a_pub).unwrap());
            assert_eq!(ab.secret_bytes(), ba.secret_bytes());
            assert_eq!(ab.secret_bytes().len(), 32);
        }
    }

    #[test]
    fn a_bad_share_is_refused() {
        assert!(X25519.start().unwrap().complete(&[9u8; 31]).is_err());
        // A small-order point (zero) gives the all-zero secret: refused.
        assert!(X25519.start().unwrap().complete(&[0u8; 32]).is_err());
    }
}
