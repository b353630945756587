//! The compact suites against ring's own, record by record: what one seals
//! the other opens, both ways, for each cipher and record size; tampering,
//! a wrong sequence number, padding and bad inner plaintext.

use super::*;

use rustls::internal::{derive_traffic_iv, derive_traffic_key};

/// Each compact suite beside ring's suite of the same number.
fn pairs() -> Vec<(&'static Tls13CipherSuite, &'static Tls13CipherSuite)> {
    let ring = [
        ring_suite::TLS13_AES_128_GCM_SHA256,
        ring_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ring_suite::TLS13_AES_256_GCM_SHA384,
    ];
    tls13_suites()
        .into_iter()
        .zip(ring)
        .map(|(ours, ring)| match (ours, ring) {
            (SupportedCipherSuite::Tls13(ours), SupportedCipherSuite::Tls13(ring)) => {
                assert_eq!(ours.common.suite, ring.common.suite);
                (ours, ring)
            }
            _ => panic!("not TLS 1.3 suites"),
        })
        .collect()
}

/// A traffic key and IV for `suite` from `secret`, derived as rustls's key
/// schedule derives them (HKDF-Expand-Label "key" and "iv"): rustls's
/// `AeadKey` has no public constructor for a 16-byte key, so tests take
/// this (documented-as-internal) path.
fn keys(suite: &Tls13CipherSuite, secret: &[u8]) -> (AeadKey, Iv) {
    let expander = suite.hkdf_provider.extract_from_secret(None, secret);
    (
        derive_traffic_key(expander.as_ref(), suite.aead_alg),
        derive_traffic_iv(expander.as_ref()),
    )
}

/// Sizes of plaintext: empty, short lines, a block boundary, the largest
/// record TLS allows.
const SIZES: [usize; 8] = [0, 1, 15, 16, 17, 60, 200, 16 * 1024];

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// `sealer` seals `plain` as record `seq`; the record's payload.
fn seal(sealer: &mut dyn MessageEncrypter, typ: ContentType, plain: &[u8], seq: u64) -> Vec<u8> {
    let msg = OutboundPlainMessage {
        typ,
        version: ProtocolVersion::TLSv1_3,
        payload: plain.into(),
    };
    let record = sealer.encrypt(msg, seq).expect("sealed").encode();
    assert_eq!(record[0], 23, "protected records say application data");
    assert_eq!(&record[1..3], &[3, 3]);
    assert_eq!(
        usize::from(u16::from_be_bytes([record[3], record[4]])),
        record.len() - 5
    );
    assert_eq!(record.len() - 5, sealer.encrypted_payload_len(plain.len()));
    record[5..].to_vec()
}

/// `opener` opens `payload` as record `seq`: its type and plaintext.
fn open(
    opener: &mut dyn MessageDecrypter,
    payload: &[u8],
    seq: u64,
) -> Result<(ContentType, Vec<u8>), Error> {
    let mut buf = payload.to_vec();
    let msg = InboundOpaqueMessage::new(
        ContentType::ApplicationData,
        ProtocolVersion::TLSv1_2,
        &mut buf,
    );
    let plain = opener.decrypt(msg, seq)?;
    Ok((plain.typ, plain.payload.to_vec()))
}

#[test]
fn ours_and_rings_open_each_others_records() {
    for (ours, ring) in pairs() {
        let (key, iv) = keys(ours, b"a traffic secret");
        let mut our_sealer = ours.aead_alg.encrypter(key, iv);
        let (key, iv) = keys(ring, b"a traffic secret");
        let mut ring_opener = ring.aead_alg.decrypter(key, iv);
        let (key, iv) = keys(ring, b"the other way");
        let mut ring_sealer = ring.aead_alg.encrypter(key, iv);
        let (key, iv) = keys(ours, b"the other way");
        let mut our_opener = ours.aead_alg.decrypter(key, iv);
        for (seq, len) in SIZES.into_iter().enumerate() {
            let seq = seq as u64 * 1_000_003;
            let plain = plaintext(len);
            let ours_sealed = seal(
                our_sealer.as_mut(),
                ContentType::ApplicationData,
                &plain,
                seq,
            );
            let rings_sealed = seal(
                ring_sealer.as_mut(),
                ContentType::ApplicationData,
                &plain,
                seq,
            );
            assert_eq!(
                open(ring_opener.as_mut(), &ours_sealed, seq).expect("ring opens ours"),
                (ContentType::ApplicationData, plain.clone()),
                "{:?}, {len} bytes",
                ours.common.suite
            );
            assert_eq!(
                open(our_opener.as_mut(), &rings_sealed, seq).expect("ours opens ring's"),
                (ContentType::ApplicationData, plain),
                "{:?}, {len} bytes",
                ours.common.suite
            );
        }
        // Handshake and alert records carry their type inside.
        let sealed = seal(
            our_sealer.as_mut(),
            ContentType::Handshake,
            b"\x18\0\0\x01\0",
            7,
        );
        assert_eq!(
            open(ring_opener.as_mut(), &sealed, 7).expect("opens").0,
            ContentType::Handshake
        );
    }
}

#[test]
fn sealing_is_deterministic_and_matches_ring_byte_for_byte() {
    for (ours, ring) in pairs() {
        let (key, iv) = keys(ours, b"same secret");
        let mut a = ours.aead_alg.encrypter(key, iv);
        let (key, iv) = keys(ring, b"same secret");
        let mut b = ring.aead_alg.encrypter(key, iv);
        for seq in [0, 1, u64::MAX - 1] {
            let plain = plaintext(100);
            assert_eq!(
                seal(a.as_mut(), ContentType::ApplicationData, &plain, seq),
                seal(b.as_mut(), ContentType::ApplicationData, &plain, seq)
            );
        }
    }
}

#[test]
fn a_changed_byte_a_wrong_sequence_number_or_a_short_record_is_refused() {
    for (ours, _) in pairs() {
        let (key, iv) = keys(ours, b"secret");
        let mut sealer = ours.aead_alg.encrypter(key, iv);
        let (key, iv) = keys(ours, b"secret");
        let mut opener = ours.aead_alg.decrypter(key, iv);
        let sealed = seal(sealer.as_mut(), ContentType::ApplicationData, b"IAMAT x", 5);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(
                matches!(open(opener.as_mut(), &bad, 5), Err(Error::DecryptError)),
                "byte {i} changed"
            );
        }
        assert!(matches!(
            open(opener.as_mut(), &sealed, 6),
            Err(Error::DecryptError)
        ));
        for len in [0, 1, 15] {
            assert!(matches!(
                open(opener.as_mut(), &sealed[..len], 5),
                Err(Error::DecryptError)
            ));
        }
        // Cut at the tag: authenticates nothing.
        assert!(open(opener.as_mut(), &sealed[..sealed.len() - 1], 5).is_err());
        assert_eq!(
            open(opener.as_mut(), &sealed, 5).expect("the original opens"),
            (ContentType::ApplicationData, b"IAMAT x".to_vec())
        );
    }
}

/// Seals `inner` (TLSInnerPlaintext: content, type, padding) with ring's
/// key directly, as a peer that pads would.
fn seal_inner(suite: &Tls13CipherSuite, cipher: Cipher, inner: &[u8], seq: u64) -> Vec<u8> {
    let (key, iv) = keys(suite, b"padding");
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(cipher.ring(), key.as_ref()).unwrap());
    let mut buf = inner.to_vec();
    let aad = aead::Aad::from(make_tls13_aad(inner.len() + TAG_LEN));
    let nonce = aead::Nonce::assume_unique_for_key(Nonce::new(&iv, seq).0);
    key.seal_in_place_append_tag(nonce, aad, &mut buf).unwrap();
    buf
}

#[test]
fn padding_is_removed_and_typeless_or_oversized_records_are_refused() {
    let ciphers = [
        Cipher::Aes128Gcm,
        Cipher::Chacha20Poly1305,
        Cipher::Aes256Gcm,
    ];
    for ((ours, _), cipher) in pairs().into_iter().zip(ciphers) {
        let opener = || {
            let (key, iv) = keys(ours, b"padding");
            ours.aead_alg.decrypter(key, iv)
        };
        let mut inner = b"WHATSAT a 10 5\n".to_vec();
        inner.push(23);
        inner.extend_from_slice(&[0; 300]);
        let sealed = seal_inner(ours, cipher, &inner, 3);
        assert_eq!(
            open(opener().as_mut(), &sealed, 3).expect("padded record"),
            (ContentType::ApplicationData, b"WHATSAT a 10 5\n".to_vec())
        );
        // All zeros: no content type.
        let sealed = seal_inner(ours, cipher, &[0; 40], 3);
        assert!(open(opener().as_mut(), &sealed, 3).is_err());
        // More than 2^14 bytes of content.
        let mut inner = vec![b'x'; 16 * 1024 + 1];
        inner.push(23);
        let sealed = seal_inner(ours, cipher, &inner, 3);
        assert!(matches!(
            open(opener().as_mut(), &sealed, 3),
            Err(Error::PeerSentOversizedRecord)
        ));
    }
}

#[test]
fn the_suites_are_rings_but_for_the_aead() {
    for (ours, ring) in pairs() {
        assert_eq!(ours.common.suite, ring.common.suite);
        assert_eq!(
            ours.common.hash_provider.algorithm(),
            ring.common.hash_provider.algorithm()
        );
        assert_eq!(
            ours.common.confidentiality_limit,
            ring.common.confidentiality_limit
        );
        assert_eq!(ours.aead_alg.key_len(), ring.aead_alg.key_len());
        let (key, iv) = keys(ours, b"kernel");
        let secrets = ours.aead_alg.extract_keys(key, iv).expect("extractable");
        let (key, iv) = keys(ring, b"kernel");
        let rings = ring.aead_alg.extract_keys(key, iv).expect("extractable");
        let parts = |s: ConnectionTrafficSecrets| match s {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (1, key.as_ref().to_vec(), iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (2, key.as_ref().to_vec(), iv)
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (3, key.as_ref().to_vec(), iv),
            _ => panic!("not a TLS 1.3 AEAD"),
        };
        let (a, b) = (parts(secrets), parts(rings));
        assert_eq!((a.0, &a.1, a.2.as_ref()), (b.0, &b.1, b.2.as_ref()));
    }
}
