//! Reading `tls_cert`, `tls_key` and `tls_ca` into the [`HerdTls`] of one
//! server (docs/PROTOCOL.md §12), at start-up, on SIGHUP and for
//! `--check-config`: the only place that opens the TLS files.
//!
//! Everything a handshake would find wrong with our own files is found
//! here instead, before anything listens, as a [`ConfigError`] on the line
//! of the directive concerned that names the file: a file that cannot be
//! read or holds no certificate or key, a key that is not the
//! certificate's, a certificate that does not name the server (its NAME as
//! a DNS subject alternative name, the name the dialler checks) or that
//! `tls_ca` does not vouch for, as a server or as a client certificate
//! (each end of a link presents the same one).
//!
//! The three configurations use the ring provider, as the Places client
//! does: peer ports and dialling speak TLS 1.3 only, with `tls_ca` as the
//! only root (never the web's roots: herd certificates come from the
//! herd's own CA); the `tls` client port speaks TLS 1.3 and 1.2 and asks no
//! client certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, InconsistentKeys, RootCertStore};

use super::tickets::{self, TicketKeys};
use super::HerdTls;
use crate::config::{ConfigError, PublicFiles, TlsFiles};

/// Reads the TLS files for server `server` (`{name}` in `tls_cert` and
/// `tls_key` replaced by it) and builds its [`HerdTls`]. `config_file` is
/// the file the directives came from, for the errors; the paths in `files`
/// are already resolved against its folder.
pub fn load(files: &TlsFiles, config_file: &Path, server: &str) -> Result<HerdTls, ConfigError> {
    let error = |line: usize, message: String| ConfigError {
        file: config_file.to_path_buf(),
        line,
        message,
    };
    let at = |file: &Named, what: String| error(file.line, format!("{file}: {what}"));
    let pair = Pair::read(
        ["tls_cert", "tls_key"],
        [&files.cert, &files.key],
        server,
        &at,
    )?;
    let ca = Named::new("tls_ca", files.ca.0, files.ca.1.clone());
    let mut roots = RootCertStore::empty();
    for root in certificates(&ca.path).map_err(|e| at(&ca, e))? {
        roots
            .add(root)
            .map_err(|e| at(&ca, format!("not a usable root certificate: {e}")))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(super::provider());

    if let Err(e) = webpki::EndEntityCert::try_from(&pair.chain[0]) {
        return Err(at(&pair.cert, format!("cannot parse the certificate: {e}")));
    }
    pair.check_key(&provider, &at)?;
    let Pair {
        cert,
        key,
        chain,
        key_der,
    } = pair;
    let end_entity = &chain[0];
    if !super::cert_names(end_entity, server) {
        return Err(at(
            &cert,
            format!(
                "the certificate does not name server {server:?} (it needs {server} as a DNS subject alternative name)"
            ),
        ));
    }

    // The checks a neighbour will make: as the server of a link (the
    // dialler checks the name) and as its client (the acceptor).
    let not_vouched = |e: rustls::Error, role: &str| match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => at(
            &cert,
            format!(
                "the certificate does not chain to tls_ca {}",
                ca.path.display()
            ),
        ),
        e => at(
            &cert,
            format!(
                "the certificate is not valid as a {role} certificate under tls_ca {}: {e}",
                ca.path.display()
            ),
        ),
    };
    let server_name = ServerName::try_from(server)
        .map_err(|e| at(&cert, format!("server {server:?} is not a DNS name: {e}")))?
        .to_owned();
    let now = UnixTime::now();
    let as_server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| at(&ca, format!("no usable root: {e}")))?;
    as_server
        .verify_server_cert(end_entity, &chain[1..], &server_name, &[], now)
        .map_err(|e| not_vouched(e, "server"))?;
    let as_client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| at(&ca, format!("no usable root: {e}")))?;
    as_client
        .verify_client_cert(end_entity, &chain[1..], now)
        .map_err(|e| not_vouched(e, "client"))?;

    // What is left to fail is rustls's own set-up, after the checks above:
    // put on the key's line, where the files meet.
    let setup = |e: rustls::Error| at(&key, format!("TLS set-up: {e}"));
    let mut peer = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_client_cert_verifier(as_client)
        .with_single_cert(chain.clone(), key_der.clone_key())
        .map_err(setup)?;
    let mut clients = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key_der.clone_key())
        .map_err(setup)?;
    // Each its own ticket keys: a ticket of the tls port never opens on
    // the peer port, where it would carry no client certificate.
    tickets::resume_with(&mut peer, TicketKeys::new().map_err(setup)?);
    tickets::resume_with(&mut clients, TicketKeys::new().map_err(setup)?);
    // Links resume too, from a store of sessions per dial configuration
    // (so per server, and new with each reload).
    let mut dial = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(setup)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(setup)?;
    dial.resumption = Resumption::in_memory_sessions(tickets::DIAL_SESSION_NAMES);
    Ok(HerdTls {
        peer: Arc::new(peer),
        clients: Arc::new(clients),
        dial: Arc::new(dial),
    })
}

/// Reads `public_cert` and `public_key` for server `server` (`{name}`
/// replaced by it) into the configuration its client-facing TLS ports
/// (`tls`, `https`) present: TLS 1.3 and 1.2, no client certificate. The
/// certificate is a public host's, so it is not checked against the herd's
/// CA or names; only that the key is its key.
pub fn load_public(
    files: &PublicFiles,
    config_file: &Path,
    server: &str,
) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let error = |line: usize, message: String| ConfigError {
        file: config_file.to_path_buf(),
        line,
        message,
    };
    let at = |file: &Named, what: String| error(file.line, format!("{file}: {what}"));
    let pair = Pair::read(
        ["public_cert", "public_key"],
        [&files.cert, &files.key],
        server,
        &at,
    )?;
    let provider = Arc::new(super::provider());
    pair.check_key(&provider, &at)?;
    let Pair {
        key,
        chain,
        key_der,
        ..
    } = pair;
    let setup = |e: rustls::Error| at(&key, format!("TLS set-up: {e}"));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(setup)?;
    tickets::resume_with(&mut config, TicketKeys::new().map_err(setup)?);
    Ok(Arc::new(config))
}

/// One of the three files: its directive, line and path (for this server).
struct Named {
    directive: &'static str,
    line: usize,
    path: PathBuf,
}

impl Named {
    fn new(directive: &'static str, line: usize, path: PathBuf) -> Named {
        Named {
            directive,
            line,
            path,
        }
    }
}

/// A server's certificate chain and its private key, read from the files two
/// directives name (`tls_cert` and `tls_key`, or `public_cert` and
/// `public_key`; `{name}` replaced by the server's name). Errors name the
/// directive and the file (`at`).
struct Pair {
    cert: Named,
    key: Named,
    chain: Vec<CertificateDer<'static>>,
    key_der: PrivateKeyDer<'static>,
}

impl Pair {
    fn read(
        directives: [&'static str; 2],
        files: [&(usize, PathBuf); 2],
        server: &str,
        at: &dyn Fn(&Named, String) -> ConfigError,
    ) -> Result<Pair, ConfigError> {
        let named = |i: usize| {
            Named::new(
                directives[i],
                files[i].0,
                TlsFiles::for_server(&files[i].1, server),
            )
        };
        let (cert, key) = (named(0), named(1));
        let chain = certificates(&cert.path).map_err(|e| at(&cert, e))?;
        let key_der = PrivateKeyDer::from_pem_file(&key.path)
            .map_err(|e| at(&key, pem_error(e, KEY_WANTED)))?;
        Ok(Pair {
            cert,
            key,
            chain,
            key_der,
        })
    }

    /// The key is one `provider` can sign with, and the certificate's.
    fn check_key(
        &self,
        provider: &CryptoProvider,
        at: &dyn Fn(&Named, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        check_key(&self.chain, &self.key_der, provider).map_err(|e| match e {
            KeyProblem::Unusable(e) => at(&self.key, format!("unusable private key: {e}")),
            KeyProblem::Mismatch => at(
                &self.key,
                format!(
                    "not the private key of the certificate in {}",
                    self.cert.path.display()
                ),
            ),
        })
    }
}

impl fmt::Display for Named {
    /// `tls_cert certs/Goloman.pem`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.directive, self.path.display())
    }
}

const CERT_WANTED: &str = "no certificate in the file (want PEM \"CERTIFICATE\" sections)";
const KEY_WANTED: &str = "no private key in the file (want a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")";

/// Every certificate of a PEM file, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e, CERT_WANTED))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(e, CERT_WANTED))?;
    if certs.is_empty() {
        return Err(CERT_WANTED.to_string());
    }
    Ok(certs)
}

/// A PEM reading error in words; `none` when nothing of the kind was found.
fn pem_error(e: pem::Error, none: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => none.to_string(),
        e => format!("bad PEM: {e}"),
    }
}

enum KeyProblem {
    Unusable(rustls::Error),
    Mismatch,
}

/// Whether `key` is a key the provider can sign with and the private half
/// of the end-entity certificate's public key. rustls checks the latter
/// too (`with_single_cert`), but answers with an error that names neither
/// file; this says which.
fn check_key(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<(), KeyProblem> {
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(KeyProblem::Unusable)?;
    match CertifiedKey::new(chain.to_vec(), signing).keys_match() {
        // Unknown: a key that cannot give its public half; rustls lets it
        // pass, and so do we (ring's keys always can).
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(KeyProblem::Mismatch)
        }
        Err(e) => Err(KeyProblem::Unusable(e)),
    }
}

/// Certificates for tests: a CA and server certificates signed by it,
/// written as PEM into a temporary folder.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    use crate::config::TlsFiles;

    /// A CA in a temporary folder, with its certificate in `ca.pem`.
    pub(crate) struct TestPki {
        pub dir: tempfile::TempDir,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestPki {
        pub fn new() -> TestPki {
            let dir = tempfile::tempdir().expect("temporary folder");
            let (pem, issuer) = ca("herd test CA");
            std::fs::write(dir.path().join("ca.pem"), pem).expect("ca.pem");
            TestPki { dir, issuer }
        }

        pub fn path(&self, file: &str) -> PathBuf {
            self.dir.path().join(file)
        }

        pub fn write(&self, file: &str, contents: &str) -> PathBuf {
            let path = self.path(file);
            std::fs::write(&path, contents).expect("test file");
            path
        }

        /// A certificate naming `names` (DNS SANs) and its key, PEM.
        pub fn leaf(&self, names: &[&str]) -> (String, String) {
            leaf_by(&self.issuer, names, |_| {})
        }

        /// Like [`TestPki::leaf`], with `adjust` applied to its parameters.
        pub fn leaf_with(
            &self,
            names: &[&str],
            adjust: impl FnOnce(&mut CertificateParams),
        ) -> (String, String) {
            leaf_by(&self.issuer, names, adjust)
        }

        /// `NAME.pem` and `NAME.key` for each server, each naming itself.
        pub fn servers(&self, names: &[&str]) {
            for name in names {
                let (cert, key) = self.leaf(&[name]);
                self.write(&format!("{name}.pem"), &cert);
                self.write(&format!("{name}.key"), &key);
            }
        }

        /// `tls_cert DIR/{name}.pem` (line 11), `tls_key DIR/{name}.key`
        /// (line 12), `tls_ca DIR/ca.pem` (line 13).
        pub fn files(&self) -> TlsFiles {
            TlsFiles {
                cert: (11, self.path("{name}.pem")),
                key: (12, self.path("{name}.key")),
                ca: (13, self.path("ca.pem")),
            }
        }

        /// The three directives for a config file in the same folder.
        pub fn directives(&self) -> &'static str {
            "tls_cert {name}.pem\ntls_key {name}.key\ntls_ca ca.pem\n"
        }

        pub fn config_file(&self) -> PathBuf {
            self.path("herd.conf")
        }
    }

    /// A self-signed CA: its PEM and what signs with it.
    pub(crate) fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        (cert.pem(), Issuer::new(params, key))
    }

    /// A certificate for both ends of a link (server and client use).
    pub(crate) fn leaf_by(
        issuer: &Issuer<'static, KeyPair>,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.use_authority_key_identifier_extension = true;
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        adjust(&mut params);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, issuer).expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }
}

#[cfg(test)]
mod tests;
