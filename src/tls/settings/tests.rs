use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};

use super::testing::{ca, leaf_by, TestPki};
use super::*;

/// `load` for `server` with the files of `pki` (`{name}.pem`, `{name}.key`, `ca.pem`).
fn load_for(pki: &TestPki, server: &str) -> Result<HerdTls, ConfigError> {
    load(&pki.files(), &pki.config_file(), server)
}

/// Moves TLS records between two in-memory connections until both have
/// finished the handshake, or one of them fails.
fn handshake(client: &mut Connection, server: &mut Connection) -> Result<(), rustls::Error> {
    fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).expect("write to a Vec");
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).expect("read from a slice");
            to.process_new_packets()?;
        }
        Ok(())
    }
    for _ in 0..10 {
        pump(client, server)?;
        pump(server, client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    panic!("the handshake did not finish");
}

fn dial(
    config: &Arc<rustls::ClientConfig>,
    name: &str,
    acceptor: &Arc<rustls::ServerConfig>,
) -> (Result<(), rustls::Error>, Connection) {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut client: Connection = ClientConnection::new(config.clone(), name).unwrap().into();
    let mut server: Connection = ServerConnection::new(acceptor.clone()).unwrap().into();
    (handshake(&mut client, &mut server), server)
}

#[test]
fn good_files_load_and_the_two_ends_of_a_link_agree() {
    let pki = TestPki::new();
    pki.servers(&["Goloman", "Hands"]);
    let goloman = load_for(&pki, "Goloman").unwrap();
    let hands = load_for(&pki, "Hands").unwrap();

    // Goloman dials Hands' peer port: mutual TLS 1.3, and Hands learns
    // from the client certificate who called.
    let (result, accepted) = dial(&goloman.dial, "Hands", &hands.peer);
    result.unwrap();
    assert_eq!(
        accepted.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let presented = accepted.peer_certificates().expect("a client certificate");
    assert!(crate::tls::cert_names(&presented[0], "Goloman"));
    assert!(!crate::tls::cert_names(&presented[0], "Hands"));

    // The dialler checks the name: Hands' certificate does not say Goloman.
    let (result, _) = dial(&goloman.dial, "Goloman", &hands.peer);
    assert!(result.is_err(), "accepted a certificate for another name");

    // A client without a certificate is refused at a peer port, served at
    // the tls port (TLS 1.2 too), where it checks Hands' name as usual.
    let mut roots = RootCertStore::empty();
    for c in certificates(&pki.path("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let phone = |versions: &[&'static rustls::SupportedProtocolVersion]| {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        )
    };
    let tls13 = phone(&[&rustls::version::TLS13]);
    let tls12 = phone(&[&rustls::version::TLS12]);
    assert!(dial(&tls13, "Hands", &hands.peer).0.is_err());
    let (result, accepted) = dial(&tls13, "Hands", &hands.clients);
    result.unwrap();
    assert!(accepted.peer_certificates().is_none());
    let (result, accepted) = dial(&tls12, "Hands", &hands.clients);
    result.unwrap();
    assert_eq!(
        accepted.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    // Peer ports are TLS 1.3 only.
    assert!(dial(&tls12, "Hands", &hands.peer).0.is_err());
}

#[test]
fn one_certificate_for_the_whole_herd_and_a_chain_with_an_intermediate() {
    let pki = TestPki::new();
    // No {name}: one file naming every server.
    let (cert, key) = pki.leaf(&["Goloman", "Hands"]);
    pki.write("herd.pem", &cert);
    pki.write("herd.key", &key);
    let files = TlsFiles {
        cert: (1, pki.path("herd.pem")),
        key: (2, pki.path("herd.key")),
        ca: (3, pki.path("ca.pem")),
    };
    for name in ["Goloman", "Hands"] {
        load(&files, &pki.config_file(), name).unwrap();
    }
    let e = load(&files, &pki.config_file(), "Welsh").unwrap_err();
    assert_eq!(e.line, 1, "{e}");

    // tls_cert holds the leaf, then an intermediate the root signed.
    let (root_pem, root) = ca("root");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "intermediate");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let middle_key = rcgen::KeyPair::generate().unwrap();
    let middle_pem = params.signed_by(&middle_key, &root).unwrap().pem();
    let middle = rcgen::Issuer::new(params, middle_key);
    let (leaf, key) = leaf_by(&middle, &["Goloman"], |_| {});
    pki.write("chain.pem", &format!("{leaf}{middle_pem}"));
    pki.write("chain.key", &key);
    pki.write("root.pem", &root_pem);
    let files = TlsFiles {
        cert: (1, pki.path("chain.pem")),
        key: (2, pki.path("chain.key")),
        ca: (3, pki.path("root.pem")),
    };
    load(&files, &pki.config_file(), "Goloman").unwrap();
    // Without the intermediate the leaf does not chain to the root.
    pki.write("chain.pem", &leaf);
    let e = load(&files, &pki.config_file(), "Goloman").unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    assert!(
        e.message
            .contains("the certificate does not chain to tls_ca"),
        "{e}"
    );
}

#[test]
fn the_config_reader_and_load_agree_on_paths() {
    let pki = TestPki::new();
    pki.servers(&["A"]);
    let text = format!(
        "server A 127.0.0.1:1 peer 127.0.0.1:2\n{}",
        pki.directives()
    );
    std::fs::write(pki.config_file(), text).unwrap();
    let herd = crate::config::Herd::load(&pki.config_file()).unwrap();
    let files = herd.tls.expect("TLS files");
    assert_eq!(files.cert.0, 2);
    load(&files, &pki.config_file(), "A").unwrap();
}

/// What is wrong with the files, on which line (of `TestPki::files`: cert
/// 11, key 12, ca 13), and the message.
#[test]
fn errors_name_the_line_and_the_file() {
    let server = "Goloman";
    type Setup = fn(&TestPki);
    let cases: &[(&str, Setup, usize, &str)] = &[
        ("no certificate file", |p| {
            p.servers(&["Goloman"]);
            std::fs::remove_file(p.path("Goloman.pem")).unwrap();
        }, 11, "tls_cert DIR/Goloman.pem: cannot read: No such file or directory (os error 2)"),
        ("a certificate file with only a key", |p| {
            p.servers(&["Goloman"]);
            let key = std::fs::read_to_string(p.path("Goloman.key")).unwrap();
            p.write("Goloman.pem", &key);
        }, 11, "tls_cert DIR/Goloman.pem: no certificate in the file (want PEM \"CERTIFICATE\" sections)"),
        ("an empty certificate file", |p| {
            p.servers(&["Goloman"]);
            p.write("Goloman.pem", "");
        }, 11, "tls_cert DIR/Goloman.pem: no certificate in the file (want PEM \"CERTIFICATE\" sections)"),
        ("broken PEM", |p| {
            p.servers(&["Goloman"]);
            p.write("Goloman.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
        }, 11, "tls_cert DIR/Goloman.pem: bad PEM: "),
        ("a PEM certificate that is not one", |p| {
            p.servers(&["Goloman"]);
            p.write("Goloman.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        }, 11, "tls_cert DIR/Goloman.pem: cannot parse the certificate: "),
        ("no key file", |p| {
            p.servers(&["Goloman"]);
            std::fs::remove_file(p.path("Goloman.key")).unwrap();
        }, 12, "tls_key DIR/Goloman.key: cannot read: No such file or directory (os error 2)"),
        ("a key file with only a certificate", |p| {
            p.servers(&["Goloman"]);
            let cert = std::fs::read_to_string(p.path("Goloman.pem")).unwrap();
            p.write("Goloman.key", &cert);
        }, 12, "tls_key DIR/Goloman.key: no private key in the file (want a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\")"),
        ("a key that is not the certificate's", |p| {
            p.servers(&["Goloman", "Hands"]);
            std::fs::copy(p.path("Hands.key"), p.path("Goloman.key")).unwrap();
        }, 12, "tls_key DIR/Goloman.key: not the private key of the certificate in DIR/Goloman.pem"),
        ("a key that is not a key", |p| {
            p.servers(&["Goloman"]);
            p.write("Goloman.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        }, 12, "tls_key DIR/Goloman.key: unusable private key: "),
        ("no CA file", |p| {
            p.servers(&["Goloman"]);
            std::fs::remove_file(p.path("ca.pem")).unwrap();
        }, 13, "tls_ca DIR/ca.pem: cannot read: No such file or directory (os error 2)"),
        ("a CA file without a certificate", |p| {
            p.servers(&["Goloman"]);
            p.write("ca.pem", "# nothing here\n");
        }, 13, "tls_ca DIR/ca.pem: no certificate in the file (want PEM \"CERTIFICATE\" sections)"),
        ("a CA that is not a certificate", |p| {
            p.servers(&["Goloman"]);
            p.write("ca.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        }, 13, "tls_ca DIR/ca.pem: not a usable root certificate: "),
        ("a certificate for another server", |p| {
            p.servers(&["Hands"]);
            std::fs::copy(p.path("Hands.pem"), p.path("Goloman.pem")).unwrap();
            std::fs::copy(p.path("Hands.key"), p.path("Goloman.key")).unwrap();
        }, 11, "tls_cert DIR/Goloman.pem: the certificate does not name server \"Goloman\" (it needs Goloman as a DNS subject alternative name)"),
        ("a name only as the common name", |p| {
            let (cert, key) = p.leaf_with(&["other"], |params| {
                params.distinguished_name.push(rcgen::DnType::CommonName, "Goloman");
            });
            p.write("Goloman.pem", &cert);
            p.write("Goloman.key", &key);
        }, 11, "tls_cert DIR/Goloman.pem: the certificate does not name server \"Goloman\""),
        ("a certificate from another CA", |p| {
            let (_, other) = ca("another CA");
            let (cert, key) = leaf_by(&other, &["Goloman"], |_| {});
            p.write("Goloman.pem", &cert);
            p.write("Goloman.key", &key);
        }, 11, "tls_cert DIR/Goloman.pem: the certificate does not chain to tls_ca DIR/ca.pem"),
        ("an expired certificate", |p| {
            let (cert, key) = p.leaf_with(&["Goloman"], |params| {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            });
            p.write("Goloman.pem", &cert);
            p.write("Goloman.key", &key);
        }, 11, "tls_cert DIR/Goloman.pem: the certificate is not valid as a server certificate under tls_ca DIR/ca.pem: invalid peer certificate: certificate expired"),
        ("a certificate for servers only", |p| {
            let (cert, key) = p.leaf_with(&["Goloman"], |params| {
                params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            });
            p.write("Goloman.pem", &cert);
            p.write("Goloman.key", &key);
        }, 11, "tls_cert DIR/Goloman.pem: the certificate is not valid as a client certificate under tls_ca DIR/ca.pem: "),
        ("a certificate for clients only", |p| {
            let (cert, key) = p.leaf_with(&["Goloman"], |params| {
                params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            });
            p.write("Goloman.pem", &cert);
            p.write("Goloman.key", &key);
        }, 11, "tls_cert DIR/Goloman.pem: the certificate is not valid as a server certificate under tls_ca DIR/ca.pem: "),
    ];
    for (what, setup, line, want) in cases {
        let pki = TestPki::new();
        setup(&pki);
        let e = match load_for(&pki, server) {
            Err(e) => e,
            Ok(_) => panic!("{what}: loaded"),
        };
        let dir = pki.dir.path().display().to_string();
        let message = e.message.replace(&dir, "DIR");
        assert_eq!(e.file, pki.config_file(), "{what}");
        assert_eq!(e.line, *line, "{what}: {message}");
        assert!(
            message.starts_with(want),
            "{what}:\n got {message}\nwant {want}"
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("{}:{line}: tls_", pki.config_file().display())),
            "{shown}"
        );
    }
}
