//! The files of a TLS herd, for trying it out and for measuring it:
//!
//!     cargo run --release --example herd-certs -- DIR NAME...
//!
//! writes `DIR/ca.pem`, a new self-signed certificate authority, and for
//! each NAME `DIR/NAME.pem` and `DIR/NAME.key`: a certificate naming NAME
//! as its DNS subject alternative name (and common name), signed by that
//! CA, with both the ServerAuth and ClientAuth extended key usages (a
//! server presents it on its peer and tls ports and when it dials a
//! neighbour), and its private key (ECDSA P-256, PKCS#8). A `herd.conf`
//! then says
//!
//!     tls_cert DIR/{name}.pem
//!     tls_key  DIR/{name}.key
//!     tls_ca   DIR/ca.pem
//!
//! and `flood_load --tls DIR/ca.pem --tls-name NAME` trusts the CA. Every
//! run makes a new CA: give all the names at once. The CA's private key is
//! not kept. These are test certificates, valid from 1975 to 4096 (rcgen's
//! defaults); a real herd's come from its operator's CA.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), names) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: herd-certs DIR NAME...");
        return ExitCode::from(2);
    };
    if names.is_empty() {
        eprintln!("usage: herd-certs DIR NAME...");
        return ExitCode::from(2);
    }
    let names: Option<Vec<String>> = names.into_iter().map(|n| n.into_string().ok()).collect();
    let Some(names) = names else {
        eprintln!("herd-certs: a NAME is not UTF-8");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&dir), &names) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herd-certs: {e}");
            ExitCode::from(1)
        }
    }
}

/// The CA and one leaf per name in `dir`; the paths written.
fn write_all(dir: &Path, names: &[String]) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut write = |name: String, text: &str| -> Result<(), String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "herd-certs CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
    write("ca.pem".into(), &ca_cert.pem())?;
    let issuer = Issuer::new(ca, ca_key);

    for name in names {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(format!("{name:?} is not a server NAME"));
        }
        // The dialler checks the DNS name; the common name is for people.
        let mut leaf =
            CertificateParams::new(vec![name.clone()]).map_err(|e| format!("{name:?}: {e}"))?;
        leaf.distinguished_name.push(DnType::CommonName, name);
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages.push(KeyUsagePurpose::DigitalSignature);
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = leaf
            .signed_by(&key, &issuer)
            .map_err(|e| format!("{name:?}: {e}"))?;
        write(format!("{name}.pem"), &cert.pem())?;
        write(format!("{name}.key"), &key.serialize_pem())?;
    }
    Ok(written)
}
