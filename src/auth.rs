//! Authenticated herd links: a challenge–response over the shared secret.
//!
//! When `herd.conf` names `secret_env VAR`, every herd link proves that both
//! ends know the secret in `$VAR`, with fresh nonces from both sides, so a
//! recorded handshake cannot be replayed and neither end can be impersonated:
//!
//! ```text
//! dialler  -> acceptor   HERD A nA                      nA: 16 random bytes, hex
//! acceptor -> dialler    CHALLENGE nB macB              macB = HMAC(k, "herd-accept A nA nB")
//! dialler  -> acceptor   AUTH macA                      macA = HMAC(k, "herd-dial A nA nB")
//! ```
//!
//! The dialler checks `macB` before it sends anything else (so an impostor at
//! a neighbour's address learns no positions); the acceptor checks `macA`
//! before it accepts any AT line from the link. The two MACs are over
//! different labels, so one cannot stand in for the other. HMAC-SHA256 and
//! the random nonces come from `ring` (already under rustls); `ring`'s
//! `hmac::verify` compares in constant time.
//!
//! Without a secret, links send `HERD A` alone and are trusted, and so are
//! plain AT lines from any connection (docs/PROTOCOL.md §4); the server says so in its
//! log at start-up.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of randomness in a nonce (sent as twice as many hex digits).
pub const NONCE_BYTES: usize = 16;

/// The herd's shared secret, ready to sign and verify.
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from its bytes (the value of the `secret_env` variable).
    pub fn new(secret: &[u8]) -> Secret {
        Secret {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The acceptor's proof, sent in `CHALLENGE`.
    pub fn accept_mac(&self, dialler: &[u8], na: &[u8], nb: &[u8]) -> String {
        hex(hmac::sign(&self.key, &message(b"herd-accept", dialler, na, nb)).as_ref())
    }

    /// The dialler's proof, sent in `AUTH`.
    pub fn dial_mac(&self, dialler: &[u8], na: &[u8], nb: &[u8]) -> String {
        hex(hmac::sign(&self.key, &message(b"herd-dial", dialler, na, nb)).as_ref())
    }

    /// Checks a `CHALLENGE`'s MAC, in constant time.
    pub fn verify_accept(&self, dialler: &[u8], na: &[u8], nb: &[u8], mac_hex: &[u8]) -> bool {
        self.verify(b"herd-accept", dialler, na, nb, mac_hex)
    }

    /// Checks an `AUTH`'s MAC, in constant time.
    pub fn verify_dial(&self, dialler: &[u8], na: &[u8], nb: &[u8], mac_hex: &[u8]) -> bool {
        self.verify(b"herd-dial", dialler, na, nb, mac_hex)
    }

    fn verify(&self, label: &[u8], dialler: &[u8], na: &[u8], nb: &[u8], mac_hex: &[u8]) -> bool {
        let Some(mac) = unhex(mac_hex) else {
            return false;
        };
        hmac::verify(&self.key, &message(label, dialler, na, nb), &mac).is_ok()
    }
}

/// A fresh nonce, as hex.
pub fn nonce() -> String {
    let mut bytes = [0u8; NONCE_BYTES];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // The OS random source failed: fall back to a weaker but still
        // unpredictable-enough mix rather than refuse to link.
        for b in &mut bytes {
            *b = fastrand::u8(..);
        }
    }
    hex(&bytes)
}

/// True if `nonce` looks like one of ours: exactly `2 * NONCE_BYTES` hex digits.
pub fn is_nonce(nonce: &[u8]) -> bool {
    nonce.len() == 2 * NONCE_BYTES && nonce.iter().all(u8::is_ascii_hexdigit)
}

fn message(label: &[u8], dialler: &[u8], na: &[u8], nb: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + dialler.len() + na.len() + nb.len() + 3);
    for (i, part) in [label, dialler, na, nb].iter().enumerate() {
        if i > 0 {
            m.push(b' ');
        }
        m.extend_from_slice(part);
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || text.len() > 128 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_proofs_verify_with_the_same_secret_only() {
        let k = Secret::new(b"s3cret");
        let (na, nb) = (nonce(), nonce());
        assert!(is_nonce(na.as_bytes()) && na != nb);
        let a = k.accept_mac(b"Hands", na.as_bytes(), nb.as_bytes());
        let d = k.dial_mac(b"Hands", na.as_bytes(), nb.as_bytes());
        assert!(k.verify_accept(b"Hands", na.as_bytes(), nb.as_bytes(), a.as_bytes()));
        assert!(k.verify_dial(b"Hands", na.as_bytes(), nb.as_bytes(), d.as_bytes()));
        // One proof does not stand in for the other.
        assert!(!k.verify_dial(b"Hands", na.as_bytes(), nb.as_bytes(), a.as_bytes()));
        // Another secret, another name, another nonce, a garbled MAC: refused.
        let other = Secret::new(b"guess");
        assert!(!other.verify_dial(b"Hands", na.as_bytes(), nb.as_bytes(), d.as_bytes()));
        assert!(!k.verify_dial(b"Welsh", na.as_bytes(), nb.as_bytes(), d.as_bytes()));
        assert!(!k.verify_dial(b"Hands", na.as_bytes(), na.as_bytes(), d.as_bytes()));
        assert!(!k.verify_dial(b"Hands", na.as_bytes(), nb.as_bytes(), b"zz"));
        assert!(!k.verify_dial(b"Hands", na.as_bytes(), nb.as_bytes(), &d.as_bytes()[2..]));
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex(b"00abFF"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex(b"abc"), None);
        assert_eq!(unhex(b"zz"), None);
        assert!(!is_nonce(b"00"));
    }
}
