//! TLS for the herd (docs/PROTOCOL.md §12): mutual TLS on herd links, TLS
//! for clients on a server's `tls` port, and the HTTPS of the Places client,
//! all driven by hand in the server's poll loop.
//!
//! - `settings`: `tls_cert`, `tls_key` and `tls_ca` read into the three
//!   rustls configurations a server needs ([`HerdTls`]), with every error
//!   naming the config file and line.
//! - `tickets`: session resumption, stateless tickets under rotating keys.
//! - `aead`: TLS 1.3 record protection that keeps a connection's keys as
//!   bytes and expands them per record (an idle connection holds ~1 KB
//!   less than with ring's prebuilt keys).
//! - `stream`: one TCP connection with its rustls session, client or
//!   server side, driven over a nonblocking mio socket: the one piece of
//!   TLS driving in the repository, used by client connections, herd links
//!   and Places connections alike.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

pub mod aead;
pub mod kx;
pub mod settings;
pub mod stream;
pub mod tickets;

/// What a server needs for TLS, built once from the config's files (at
/// start and on SIGHUP).
#[derive(Debug, Clone)]
pub struct HerdTls {
    /// Peer ports: TLS 1.3, a client certificate required and verified
    /// against `tls_ca`.
    pub peer: Arc<rustls::ServerConfig>,
    /// The `tls` client port: the same certificate, no client certificate
    /// asked for (phones have none).
    pub clients: Arc<rustls::ServerConfig>,
    /// Dialling neighbours: TLS 1.3, `tls_ca` as the only root, our
    /// certificate as the client certificate.
    pub dial: Arc<rustls::ClientConfig>,
}

/// ring's provider with the TLS 1.3 suites in the order phones with AES
/// hardware use (Android's and iOS's TLS stacks): AES-128-GCM with SHA-256
/// first, then ChaCha20-Poly1305, then AES-256-GCM with SHA-384; TLS 1.2
/// suites after them as ring orders them. rustls's own default puts
/// AES-256 first, whose SHA-384 key schedule costs a handshake several
/// times what SHA-256's does where the CPU computes SHA-256 in hardware.
/// A server still takes the client's order; herd's own ends (links, the
/// Places client, flood_load) offer this one. The three TLS 1.3 suites
/// are ring's with [`aead`]'s compact keys (the same records, ~1 KB less
/// per idle connection, a key expansion per record).
pub fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let first = aead::tls13_suites();
    let rest = provider
        .cipher_suites
        .iter()
        .filter(|s| !first.iter().any(|f| f.suite() == s.suite()));
    provider.cipher_suites = first.iter().chain(rest).copied().collect();
    // X25519 from aws-lc-rs, in ring's place (kx.rs says why).
    for group in provider.kx_groups.iter_mut() {
        if group.name() == rustls::NamedGroup::X25519 {
            *group = kx::X25519;
        }
    }
    provider
}

impl HerdTls {
    /// These configurations, just loaded by a reload that replaces `old`:
    /// the client configuration keeps `old`'s ticket keys, so the phones'
    /// tickets still open; the peer port's are new (see [`tickets`]).
    pub fn after_reload(&self, old: &HerdTls) -> HerdTls {
        HerdTls {
            peer: Arc::clone(&self.peer),
            clients: tickets::keeping(&self.clients, &old.clients),
            dial: Arc::clone(&self.dial),
        }
    }
}

/// Whether `cert` (an end-entity certificate already verified against
/// `tls_ca` by rustls) names `name` as a DNS subject alternative name.
pub fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.verify_is_valid_for_subject_name(&server_name).is_ok(),
        Err(_) => false,
    }
}
