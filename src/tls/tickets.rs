//! TLS session resumption on the server side (docs/OPERATING.md,
//! "Session resumption"): stateless tickets under keys that rotate, so a
//! phone that reconnects skips the certificate and its signature, and the
//! server keeps nothing per session.
//!
//! [`TicketKeys`] encrypts the tickets a server hands out with its current
//! key, and opens them with the current or the previous one. Every
//! [`TICKET_KEY_LIFETIME`] the current key becomes the previous one and a
//! new one is made; the previous one is forgotten: a ticket lives at least
//! one lifetime and at most two (the lifetime the client is told). Keys are
//! random and held in memory only: a restart forgets them, and every client
//! makes a full handshake once. Each key is a rustls
//! [`rustls::crypto::ring::Ticketer`] of its own (ChaCha20-Poly1305 under a
//! random key), which we only ever use for less than its own 6 h rotation.
//!
//! Which keys a reload keeps ([`keeping`], `HerdTls::after_reload`): the
//! client-facing ports' (`tls`, `https`, whether they present the herd's
//! certificate or `public_cert`) for the life of the process, so that renewing a certificate does not cost
//! every phone a full handshake; the peer port's never, because a reload may
//! change `tls_ca`, and a resumed session is not checked against it again
//! (rustls restores the client certificate the first handshake verified).
//!
//! TLS 1.2 clients without ticket support resume from rustls's session
//! cache instead, bounded at [`SESSION_CACHE_ENTRIES`].

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::server::{ProducesTickets, ServerSessionMemoryCache};

/// How long a ticket key encrypts new tickets; it then decrypts for as long
/// again. A ticket lives between one and two of these.
pub const TICKET_KEY_LIFETIME: Duration = Duration::from_secs(6 * 60 * 60);

/// Tickets sent after each full or resumed handshake (TLS 1.3): one, to
/// resume with next time. A client uses a ticket once (RFC 8446 C.4;
/// rustls's, BoringSSL's and Go's clients do), and every resumption brings
/// it a new one, so a phone that reconnects always holds one; as Go's
/// crypto/tls servers do. rustls's default of two (OpenSSL's too) only
/// helps a client that opens a second connection before its first
/// resumes, which then makes one full handshake; each ticket costs the
/// server randomness, a key derivation and an encryption per handshake, and
/// the client a record to decrypt and a session to store.
pub const TICKETS_PER_HANDSHAKE: usize = 1;

/// Sessions a server remembers for TLS 1.2 clients that cannot take a
/// ticket (about 100 bytes each); the oldest are forgotten first.
pub const SESSION_CACHE_ENTRIES: usize = 256;

/// Neighbours whose sessions a server's dialler keeps to resume its links
/// with (rustls keeps a few tickets per neighbour); past that, the least
/// recently used are forgotten.
pub const DIAL_SESSION_NAMES: usize = 256;

/// The current and the previous ticket key, and when they rotate.
struct Keys {
    current: Arc<dyn ProducesTickets>,
    previous: Option<Arc<dyn ProducesTickets>>,
    rotate_at: Instant,
}

/// Ticket keys that rotate every `lifetime` (see the module header).
pub struct TicketKeys {
    lifetime: Duration,
    keys: RwLock<Keys>,
}

impl TicketKeys {
    /// New keys rotating every [`TICKET_KEY_LIFETIME`].
    pub fn new() -> Result<Arc<TicketKeys>, rustls::Error> {
        TicketKeys::with_lifetime(TICKET_KEY_LIFETIME)
    }

    /// New keys rotating every `lifetime` (at most 6 h: each key is a
    /// rustls ticketer that would rotate on its own after that).
    pub fn with_lifetime(lifetime: Duration) -> Result<Arc<TicketKeys>, rustls::Error> {
        let lifetime = lifetime.min(TICKET_KEY_LIFETIME);
        Ok(Arc::new(TicketKeys {
            lifetime,
            keys: RwLock::new(Keys {
                current: rustls::crypto::ring::Ticketer::new()?,
                previous: None,
                rotate_at: Instant::now() + lifetime,
            }),
        }))
    }

    /// Makes a new key now: tickets of the key before the current one no
    /// longer open. Done by time on the next ticket after each lifetime;
    /// callable directly (tests). False if no key could be made (no
    /// randomness): the keys stay as they were.
    pub fn rotate(&self) -> bool {
        let Ok(fresh) = rustls::crypto::ring::Ticketer::new() else {
            return false;
        };
        let Ok(mut keys) = self.keys.write() else {
            return false;
        };
        keys.previous = Some(std::mem::replace(&mut keys.current, fresh));
        keys.rotate_at = Instant::now() + self.lifetime;
        true
    }

    /// Rotates if a lifetime has passed since the last rotation.
    fn rotate_if_due(&self) {
        let due = self
            .keys
            .read()
            .map(|k| Instant::now() >= k.rotate_at)
            .unwrap_or(false);
        if due {
            self.rotate();
        }
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    /// What clients are told: a ticket opens for at most two lifetimes.
    fn lifetime(&self) -> u32 {
        (self.lifetime.as_secs() * 2).min(u64::from(u32::MAX)) as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due();
        self.keys.read().ok()?.current.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due();
        let keys = self.keys.read().ok()?;
        keys.current
            .decrypt(cipher)
            .or_else(|| keys.previous.as_ref()?.decrypt(cipher))
    }
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// Makes `config` resume sessions: stateless tickets under `keys`, and a
/// bounded cache for TLS 1.2 clients without tickets.
pub fn resume_with(config: &mut rustls::ServerConfig, keys: Arc<TicketKeys>) {
    config.ticketer = keys;
    config.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
}

/// `new`, a client-facing configuration a reload just loaded, with the
/// ticket keys of `old`, the one it replaces: the phones' tickets still
/// open (see the module header).
pub fn keeping(
    new: &Arc<rustls::ServerConfig>,
    old: &Arc<rustls::ServerConfig>,
) -> Arc<rustls::ServerConfig> {
    let mut config = (**new).clone();
    config.ticketer = Arc::clone(&old.ticketer);
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_until_its_key_is_two_rotations_old() {
        let keys = TicketKeys::new().unwrap();
        let ticket = keys.encrypt(b"session").unwrap();
        assert_eq!(keys.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        assert!(keys.rotate());
        // Its key is the previous one now: it still opens.
        assert_eq!(keys.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        let newer = keys.encrypt(b"newer").unwrap();
        assert!(keys.rotate());
        assert_eq!(keys.decrypt(&ticket), None);
        assert_eq!(keys.decrypt(&newer).as_deref(), Some(&b"newer"[..]));
    }

    #[test]
    fn keys_rotate_by_time_and_other_keys_open_nothing() {
        let keys = TicketKeys::with_lifetime(Duration::ZERO).unwrap();
        assert_eq!(keys.lifetime(), 0);
        // Every use is a lifetime later: the key that made a ticket is the
        // previous one at the next use, and gone at the one after.
        let ticket = keys.encrypt(b"session").unwrap();
        assert_eq!(keys.decrypt(&ticket).as_deref(), Some(&b"session"[..]));
        assert_eq!(keys.decrypt(&ticket), None);
        let other = TicketKeys::new().unwrap();
        let theirs = other.encrypt(b"session").unwrap();
        assert_eq!(TicketKeys::new().unwrap().decrypt(&theirs), None);
        assert_eq!(other.decrypt(b"garbage"), None);
        assert_eq!(other.decrypt(&[]), None);
        assert_eq!(TicketKeys::new().unwrap().lifetime(), 12 * 60 * 60);
    }
}
