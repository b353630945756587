//! Certificates for TLS tests, made in the test with rcgen (never checked-in
//! keys that expire): a certificate authority, leaf certificates for given
//! DNS names signed by it (good for both ends of a mutual-TLS link), and the
//! PEM files a `herd.conf` points at.
//!
//! ```ignore
//! let ca = Ca::new("herd test CA");
//! let leaf = ca.leaf(&["Goloman"]);
//! leaf.write(dir, "Goloman"); // dir/Goloman.pem, dir/Goloman.key
//! let other = Ca::new("another CA"); // a second, unrelated authority
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;

/// A certificate authority made for one test.
pub struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A self-signed root called `common_name`.
    pub fn new(common_name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM (what `tls_ca` points at).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// A root store holding this CA alone.
    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("a valid CA certificate");
        Arc::new(roots)
    }

    /// Writes the CA certificate to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// A certificate for `dns_names` (subject alternative names; the first is
    /// also the common name), signed by this CA, usable by a TLS server and
    /// a TLS client alike.
    pub fn leaf(&self, dns_names: &[&str]) -> Leaf {
        let names: Vec<String> = dns_names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        if let Some(first) = dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// A leaf certificate and its private key.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: PrivatePkcs8KeyDer<'static>,
}

impl Leaf {
    /// The certificate, DER.
    pub fn cert(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// The private key, DER.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }

    /// Writes `dir/STEM.pem` (the certificate) and `dir/STEM.key` (the key);
    /// returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).expect("certificate folder");
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// The files of a TLS herd under `dir`: `dir/ca.pem` and, for each name,
/// `dir/certs/NAME.pem` and `dir/certs/NAME.key` — certificates naming each
/// server, signed by `ca` — matching `tls_cert certs/{name}.pem`,
/// `tls_key certs/{name}.key`, `tls_ca ca.pem` in a `dir/herd.conf`.
pub fn write_herd_certs(dir: &Path, ca: &Ca, names: &[&str]) {
    ca.write(&dir.join("ca.pem"));
    for name in names {
        ca.leaf(&[name]).write(&dir.join("certs"), name);
    }
}

/// The config lines for the files [`write_herd_certs`] writes.
pub const TLS_CONF_LINES: &str =
    "tls_cert certs/{name}.pem\ntls_key certs/{name}.key\ntls_ca ca.pem\n";
