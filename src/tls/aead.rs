//! TLS 1.3 record protection that keeps a connection's keys as bytes
//! (issue 22, docs/PERFORMANCE.md "Compact TLS 1.3 keys").
//!
//! **The trade.** rustls's ring provider builds each direction's AEAD key
//! once, when the handshake derives it, and keeps it for as long as the
//! connection lives: ring's `LessSafeKey`, sized for AES-GCM's expanded key
//! whichever algorithm it holds (the AES round keys and the GHASH table),
//! 560 bytes a direction on the heap, 1,120 for an idle connection that
//! may send nothing for hours. The suites here keep only what the
//! handshake derived, the key's 16 or 32 bytes and the 12-byte IV (a
//! 64-byte block a direction), and build ring's key on the stack for each
//! record they seal or open, then drop it. An idle connection holds 1,008
//! bytes less (`examples/tls-memory.rs`); each record pays one key
//! expansion, which `benches/aead.rs` measures against ring's prebuilt key:
//! 0.12 µs for AES-GCM (the round keys and the GHASH table, on a CPU with
//! AES-NI and carry-less multiply), 0.014 µs for ChaCha20. A record of
//! 60–200 bytes takes 0.1–0.2 µs to seal or open with ring's AES-GCM key,
//! so about twice that here; a request over TLS, one record each way,
//! cost the server about 1 % more CPU, within the noise of the machine it
//! was measured on (docs/PERFORMANCE.md has the figures).
//!
//! **What does not change.** The record format is TLS 1.3's (RFC 8446
//! §5.2), the same bytes ring's suites produce and accept: the nonce is
//! the IV with the record's sequence number XORed into its last eight
//! bytes, the additional data the record's header (type 23, version
//! 0x0303, the ciphertext's length), the plaintext followed by its real
//! content type, and on opening, zero padding and the type removed by
//! rustls's own `into_tls13_unpadded_message` (which also refuses
//! oversized and typeless records). The three suites are ring's in all but
//! the AEAD object: the same suite numbers, hash, HKDF, confidentiality
//! limits (rustls starts a key update before them) and QUIC parameters.
//! TLS 1.2 suites stay ring's own.
//!
//! The key bytes live in rustls's `AeadKey`, which zeroes them when the
//! connection ends; the expanded key on the stack is not zeroed, as ring's
//! own heap copy is not.

use std::sync::LazyLock;

use ring::aead;
use rustls::crypto::cipher::{
    make_tls13_aad, AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter,
    MessageEncrypter, Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload,
    Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::crypto::ring::cipher_suite as ring_suite;
use rustls::{
    ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion, SupportedCipherSuite,
    Tls13CipherSuite,
};

/// One of TLS 1.3's three AEADs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM (TLS_AES_128_GCM_SHA256).
    Aes128Gcm,
    /// ChaCha20-Poly1305 (TLS_CHACHA20_POLY1305_SHA256).
    Chacha20Poly1305,
    /// AES-256-GCM (TLS_AES_256_GCM_SHA384).
    Aes256Gcm,
}

impl Cipher {
    /// ring's algorithm for it.
    pub fn ring(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
        }
    }
}

/// A [`Tls13AeadAlgorithm`] whose encrypters and decrypters keep the key's
/// bytes and expand them per record (see the module's comment).
#[derive(Debug)]
pub struct Compact(pub Cipher);

static AES_128_GCM: Compact = Compact(Cipher::Aes128Gcm);
static CHACHA20_POLY1305: Compact = Compact(Cipher::Chacha20Poly1305);
static AES_256_GCM: Compact = Compact(Cipher::Aes256Gcm);

impl Tls13AeadAlgorithm for Compact {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Sealer(Keys {
            cipher: self.0,
            key,
            iv,
        }))
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Opener(Keys {
            cipher: self.0,
            key,
            iv,
        }))
    }

    fn key_len(&self) -> usize {
        self.0.ring().key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(match self.0 {
            Cipher::Aes128Gcm => ConnectionTrafficSecrets::Aes128Gcm { key, iv },
            Cipher::Chacha20Poly1305 => ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv },
            Cipher::Aes256Gcm => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
        })
    }
}

/// One direction's traffic key and IV, as the key schedule derived them.
struct Keys {
    cipher: Cipher,
    key: AeadKey,
    iv: Iv,
}

impl Keys {
    /// ring's key for one record, and the record's nonce.
    #[inline]
    fn for_record(&self, seq: u64) -> Result<(aead::LessSafeKey, aead::Nonce), ()> {
        // rustls hands us a key of `key_len()` bytes, so this does not fail.
        let key = aead::UnboundKey::new(self.cipher.ring(), self.key.as_ref()).map_err(|_| ())?;
        let nonce = aead::Nonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0);
        Ok((aead::LessSafeKey::new(key), nonce))
    }
}

/// The tag every TLS 1.3 AEAD appends.
const TAG_LEN: usize = 16;

struct Sealer(Keys);

impl MessageEncrypter for Sealer {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let (key, nonce) = self.0.for_record(seq).map_err(|_| Error::EncryptError)?;
        let len = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(len);
        payload.extend_from_chunks(&msg.payload);
        // TLSInnerPlaintext: the content, then its real type; no padding.
        payload.extend_from_slice(&msg.typ.to_array());
        key.seal_in_place_append_tag(nonce, aead::Aad::from(make_tls13_aad(len)), &mut payload)
            .map_err(|_| Error::EncryptError)?;
        // Every protected TLS 1.3 record says application data, TLS 1.2.
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + TAG_LEN
    }
}

struct Opener(Keys);

impl MessageDecrypter for Opener {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < TAG_LEN {
            return Err(Error::DecryptError);
        }
        let (key, nonce) = self.0.for_record(seq).map_err(|_| Error::DecryptError)?;
        let aad = aead::Aad::from(make_tls13_aad(payload.len()));
        let plain = key
            .open_in_place(nonce, aad, payload)
            .map_err(|_| Error::DecryptError)?
            .len();
        payload.truncate(plain);
        msg.into_tls13_unpadded_message()
    }
}

/// ring's TLS 1.3 suite `ring` with `aead` in place of its AEAD; `None`
/// if `ring` is not a TLS 1.3 suite (it always is).
fn rebuilt(ring: SupportedCipherSuite, aead: &'static Compact) -> Option<Tls13CipherSuite> {
    let SupportedCipherSuite::Tls13(ring) = ring else {
        return None;
    };
    Some(Tls13CipherSuite {
        common: rustls::CipherSuiteCommon {
            suite: ring.common.suite,
            hash_provider: ring.common.hash_provider,
            confidentiality_limit: ring.common.confidentiality_limit,
        },
        hkdf_provider: ring.hkdf_provider,
        aead_alg: aead,
        quic: ring.quic,
    })
}

/// ring's three TLS 1.3 suites in herd's order (AES-128-GCM,
/// ChaCha20-Poly1305, AES-256-GCM; see [`super::provider`]), each with the
/// compact AEAD it gets.
static RING_SUITES: [(SupportedCipherSuite, &Compact); 3] = [
    (ring_suite::TLS13_AES_128_GCM_SHA256, &AES_128_GCM),
    (
        ring_suite::TLS13_CHACHA20_POLY1305_SHA256,
        &CHACHA20_POLY1305,
    ),
    (ring_suite::TLS13_AES_256_GCM_SHA384, &AES_256_GCM),
];

static SUITES: LazyLock<[Option<Tls13CipherSuite>; 3]> =
    LazyLock::new(|| RING_SUITES.map(|(ring, aead)| rebuilt(ring, aead)));

/// The three TLS 1.3 suites with compact keys, in herd's order.
pub fn tls13_suites() -> [SupportedCipherSuite; 3] {
    let suites: &'static [Option<Tls13CipherSuite>; 3] = &SUITES;
    std::array::from_fn(|i| {
        suites[i]
            .as_ref()
            .map_or(RING_SUITES[i].0, SupportedCipherSuite::Tls13)
    })
}

#[cfg(test)]
mod tests;
