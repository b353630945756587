//! What herd's compact TLS 1.3 keys cost per record (src/tls/aead.rs,
//! issue 22): sealing and opening one record of 60, 200 and 16,384 bytes
//! of plaintext with ring's suite (the AEAD key expanded once, kept on the
//! heap: 560 B a direction) and with herd's (the key's bytes kept, ring's
//! key built on the stack for each record), for each TLS 1.3 cipher, through
//! rustls's own `MessageEncrypter`/`MessageDecrypter` as a connection calls
//! them (so both sides include the record's allocation and copy). Also the
//! key expansion alone, which is the whole difference. Each `ring` and
//! `compact` pair runs back to back, so their ratio holds on a shared
//! machine. Read as records per second (`Throughput::Elements`).
//!
//!     cargo bench --bench aead

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herd::tls::aead::{tls13_suites, Cipher};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundPlainMessage,
};
use rustls::crypto::ring::cipher_suite as ring_suite;
use rustls::internal::{derive_traffic_iv, derive_traffic_key};
use rustls::{ContentType, ProtocolVersion, SupportedCipherSuite, Tls13CipherSuite};

/// Plaintext per record: an IAMAT or AT line, a few lines, a full record.
const SIZES: [usize; 3] = [60, 200, 16 * 1024];

fn tls13(suite: SupportedCipherSuite) -> &'static Tls13CipherSuite {
    match suite {
        SupportedCipherSuite::Tls13(s) => s,
        SupportedCipherSuite::Tls12(_) => panic!("not a TLS 1.3 suite"),
    }
}

/// The (name, cipher, ring's suite, herd's suite) triples.
fn suites() -> Vec<(
    &'static str,
    Cipher,
    &'static Tls13CipherSuite,
    &'static Tls13CipherSuite,
)> {
    let ours = tls13_suites();
    vec![
        (
            "aes128gcm",
            Cipher::Aes128Gcm,
            tls13(ring_suite::TLS13_AES_128_GCM_SHA256),
            tls13(ours[0]),
        ),
        (
            "chacha20",
            Cipher::Chacha20Poly1305,
            tls13(ring_suite::TLS13_CHACHA20_POLY1305_SHA256),
            tls13(ours[1]),
        ),
        (
            "aes256gcm",
            Cipher::Aes256Gcm,
            tls13(ring_suite::TLS13_AES_256_GCM_SHA384),
            tls13(ours[2]),
        ),
    ]
}

/// A traffic key and IV as rustls's key schedule derives them (rustls's
/// `AeadKey` has no public constructor for a 16-byte key).
fn keys(suite: &Tls13CipherSuite) -> (AeadKey, Iv) {
    let expander = suite
        .hkdf_provider
        .extract_from_secret(None, b"benchmark secret");
    (
        derive_traffic_key(expander.as_ref(), suite.aead_alg),
        derive_traffic_iv(expander.as_ref()),
    )
}

fn sealer(suite: &Tls13CipherSuite) -> Box<dyn MessageEncrypter> {
    let (key, iv) = keys(suite);
    suite.aead_alg.encrypter(key, iv)
}

fn opener(suite: &Tls13CipherSuite) -> Box<dyn MessageDecrypter> {
    let (key, iv) = keys(suite);
    suite.aead_alg.decrypter(key, iv)
}

fn seal_one(sealer: &mut dyn MessageEncrypter, plain: &[u8], seq: u64) -> Vec<u8> {
    let msg = OutboundPlainMessage {
        typ: ContentType::ApplicationData,
        version: ProtocolVersion::TLSv1_3,
        payload: plain.into(),
    };
    sealer.encrypt(msg, seq).expect("sealed").encode()
}

fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    for (name, _, ring, ours) in suites() {
        for size in SIZES {
            let plain = vec![b'x'; size];
            for (side, suite) in [("ring", ring), ("compact", ours)] {
                let mut sealer = sealer(suite);
                let mut seq = 0u64;
                group.bench_function(BenchmarkId::new(format!("{name}/{side}"), size), |b| {
                    b.iter(|| {
                        seq += 1;
                        seal_one(sealer.as_mut(), black_box(&plain), seq)
                    })
                });
            }
        }
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    for (name, _, ring, ours) in suites() {
        for size in SIZES {
            // One record, opened again and again under the same sequence
            // number from a fresh copy (the copy is in both sides' time).
            let record = seal_one(sealer(ring).as_mut(), &vec![b'x'; size], 9);
            let mut buf = record[5..].to_vec();
            for (side, suite) in [("ring", ring), ("compact", ours)] {
                let mut opener = opener(suite);
                group.bench_function(BenchmarkId::new(format!("{name}/{side}"), size), |b| {
                    b.iter(|| {
                        buf.copy_from_slice(&record[5..]);
                        let msg = InboundOpaqueMessage::new(
                            ContentType::ApplicationData,
                            ProtocolVersion::TLSv1_2,
                            &mut buf,
                        );
                        let plain = opener.decrypt(msg, 9).expect("opened");
                        plain.payload.len()
                    })
                });
            }
        }
    }
    group.finish();
}

/// What the compact side adds to each record: ring's key built from the
/// key's bytes (AES: round keys and the GHASH table).
fn expand(c: &mut Criterion) {
    let mut group = c.benchmark_group("expand");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    for (name, cipher, ring, _) in suites() {
        let (key, _) = keys(ring);
        group.bench_function(name, |b| {
            b.iter(|| {
                let unbound = ring::aead::UnboundKey::new(cipher.ring(), black_box(key.as_ref()))
                    .expect("a key of the right length");
                black_box(ring::aead::LessSafeKey::new(unbound))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, seal, open, expand);
criterion_main!(benches);
