//! `herd.conf`: the herd's members, links and Places settings (docs/PROTOCOL.md §6),
//! read into a checked [`Herd`]. Every error names the file and line.
//!
//! ```text
//! server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT] [http HOST:PORT] [https HOST:PORT]
//!                              # HOST: IPv4, [IPv6] or a DNS name; PORT 1..=65535;
//!                              # the extra ports in any order, each at most once
//! link NAME NAME               # bidirectional; may name servers declared later
//! places legacy|new [URL]      # URL: https://HOST[:PORT]/PATH, default per API
//! places_key_env VAR           # default GOOGLE_PLACES_API_KEY
//! places_ca PATH               # relative to the config file's folder
//! secret_env VAR
//! tls_cert PATH                # all three or none; relative like places_ca;
//! tls_key PATH                 # `{name}` in tls_cert and tls_key stands for
//! tls_ca PATH                  # each server's NAME
//! public_cert PATH             # both or none: what tls and https ports present;
//! public_key PATH              # `{name}` as in tls_cert
//! api_token_env VAR            # http/https requests need the token in $VAR
//! ```
//!
//! One directive a line, fields split on white space, `#` to the end of the
//! line is a comment, blank lines are ignored. Each directive other than
//! `server` and `link` may appear at most once. Every address of every
//! server — client, peer and tls ports — is used once in the whole file.
//!
//! Reading is one pass over the lines that checks everything a line can
//! check on its own (field counts, names, addresses, URLs, duplicates of
//! earlier lines) and stops at the first error. Links are only recorded
//! then, with their line numbers, and resolved after the last line, so a
//! link may name a server declared further down and an unknown name is
//! still reported on the link's own line. The first error wins: a config
//! is fixed one error at a time, and the first is the one most likely to
//! explain the rest.
//!
//! Addresses and the Places URL are read by [`crate::addr`], the one set of
//! host and port rules, which the Places client uses on the same URL too.
//!
//! After the last line come the checks that need the whole file: links,
//! then TLS — all three files or none, at least one server with a `peer`
//! port, every NAME a DNS name (certificates name servers by it), and no
//! `tls` port without the files.
//!
//! Nothing here touches the network, the environment or the disk: DNS
//! names are resolved, variables read and `places_ca` and the TLS files
//! opened by whoever uses them ([`crate::tls::settings`] for the latter).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::addr::{self, Host};

/// The default legacy Nearby Search endpoint.
pub const LEGACY_URL: &str = "https://maps.googleapis.com/maps/api/place/nearbysearch/json";
/// The default Places API (New) endpoint.
pub const NEW_URL: &str = "https://places.googleapis.com/v1/places:searchNearby";
/// The default environment variable holding the API key.
pub const DEFAULT_KEY_ENV: &str = "GOOGLE_PLACES_API_KEY";

/// A checked herd description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Herd {
    /// Members, in file order.
    pub servers: Vec<ServerSpec>,
    /// Bidirectional links as index pairs into `servers`, each once, in file order.
    pub links: Vec<(usize, usize)>,
    pub places: PlacesConfig,
    /// `secret_env VAR`: the variable holding the herd's shared secret.
    pub secret_env: Option<String>,
    /// `tls_cert`, `tls_key`, `tls_ca`: all three or none.
    pub tls: Option<TlsFiles>,
    /// `public_cert`, `public_key`: what client-facing TLS ports (`tls`,
    /// `https`) present instead of the herd's certificate.
    pub public: Option<PublicFiles>,
    /// `api_token_env VAR`: the variable holding the token HTTP requests need.
    pub api_token_env: Option<String>,
}

/// The certificate that client-facing TLS ports present (docs/PROTOCOL.md
/// §6), resolved like [`TlsFiles`]; `{name}` stands for the server's NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicFiles {
    /// `public_cert`: the chain, PEM.
    pub cert: (usize, PathBuf),
    /// `public_key`: its private key, PEM.
    pub key: (usize, PathBuf),
}

/// `HOST:PORT` of a server's peer or TLS client port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As [`ServerSpec::host`].
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `HOST:PORT` with IPv6 hosts bracketed, as `ToSocketAddrs` wants it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The herd's TLS files (docs/PROTOCOL.md §12), resolved relative to the
/// config file's folder, each with the line that named it. In `cert` and
/// `key`, `{name}` stands for the server's NAME, so that one file can give
/// every server its own certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_cert`: the certificate, then any intermediates, PEM.
    pub cert: (usize, PathBuf),
    /// `tls_key`: its private key, PEM.
    pub key: (usize, PathBuf),
    /// `tls_ca`: the roots herd certificates chain to, PEM; no `{name}`.
    pub ca: (usize, PathBuf),
}

impl TlsFiles {
    /// `path` with `{name}` replaced by `server`.
    pub fn for_server(path: &Path, server: &str) -> PathBuf {
        let text = path.to_string_lossy();
        if text.contains("{name}") {
            PathBuf::from(text.replace("{name}", server))
        } else {
            path.to_path_buf()
        }
    }
}

/// `server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// 1 to [`MAX_NAME_LEN`] printable ASCII characters (`!` to `~`, so no
    /// white space, and no `#`, which starts a comment); case-sensitive, as
    /// in AT lines and on the command line.
    pub name: String,
    /// IPv4 text, IPv6 text without brackets, or a DNS name (letters, digits,
    /// `-` and `.`; no empty label, no label starting or ending with `-`).
    pub host: String,
    /// 1..=65535.
    pub port: u16,
    /// Its line in the file (for errors about it found later, by a reload).
    pub line: usize,
    /// `peer HOST:PORT`: a port for herd links only; neighbours dial it.
    pub peer: Option<Endpoint>,
    /// `tls HOST:PORT`: a client port speaking TLS.
    pub tls: Option<Endpoint>,
    /// `http HOST:PORT`: HTTP/1.1 and WebSocket, plaintext (§14).
    pub http: Option<Endpoint>,
    /// `https HOST:PORT`: the same over TLS.
    pub https: Option<Endpoint>,
}

/// The longest server name accepted. Names travel in every AT line and in
/// `HERD NAME`, which must stay far below a server's line limit.
pub const MAX_NAME_LEN: usize = 64;

impl ServerSpec {
    /// `HOST:PORT` with IPv6 hosts bracketed, as `ToSocketAddrs` wants it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Which Places API to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacesApi {
    /// `GET .../nearbysearch/json?location=..&radius=..&key=..`
    Legacy,
    /// `POST .../v1/places:searchNearby`, answer translated to the legacy shape.
    New,
}

/// `places`, `places_key_env`, `places_ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacesConfig {
    pub api: PlacesApi,
    /// An `https://HOST[:PORT]/PATH` URL.
    pub url: String,
    pub key_env: String,
    /// An extra trusted root (PEM), resolved relative to the config file's folder.
    pub ca: Option<PathBuf>,
}

impl Default for PlacesConfig {
    fn default() -> Self {
        PlacesConfig {
            api: PlacesApi::Legacy,
            url: LEGACY_URL.to_string(),
            key_env: DEFAULT_KEY_ENV.to_string(),
            ca: None,
        }
    }
}

/// What is wrong with a config file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the file as a whole.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Herd {
    /// Reads and checks a config file. A file that cannot be read (missing,
    /// unreadable, not UTF-8) is an error on line 0 with the I/O error's text.
    pub fn load(path: &Path) -> Result<Herd, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Herd::parse(&text, path),
            Err(e) => Err(ConfigError {
                file: path.to_path_buf(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    /// Checks config text; `file` is used in errors and to resolve `places_ca`.
    pub fn parse(text: &str, file: &Path) -> Result<Herd, ConfigError> {
        let error = |line, message| ConfigError {
            file: file.to_path_buf(),
            line,
            message,
        };
        let mut reader = Reader::default();
        // `lines` also drops the `\r` of a CRLF line end.
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.find('#').map_or(raw, |hash| &raw[..hash]);
            let fields: Vec<&str> = content.split_whitespace().collect();
            reader
                .directive(line, &fields, file)
                .map_err(|message| error(line, message))?;
        }
        reader
            .finish()
            .map_err(|(line, message)| error(line, message))
    }

    /// The index of the member called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// The indices of the members linked with member `i`, in link order.
    pub fn neighbours(&self, i: usize) -> Vec<usize> {
        self.links
            .iter()
            .filter_map(|&(a, b)| {
                if a == i {
                    Some(b)
                } else if b == i {
                    Some(a)
                } else {
                    None
                }
            })
            .collect()
    }
}

/// A value given by a directive that may appear once, with its line.
type Once<T> = Option<(usize, T)>;

/// A `link` line, resolved once every server is known.
struct PendingLink {
    line: usize,
    a: String,
    b: String,
}

/// What has been read so far, with the line of each directive so that a
/// duplicate can say where the first one was.
#[derive(Default)]
struct Reader {
    servers: Vec<ServerSpec>,
    /// Every address of every server so far, for finding one address used
    /// twice (IPs by value, DNS names without case).
    addresses: Vec<Bound>,
    links: Vec<PendingLink>,
    places: Once<(PlacesApi, String)>,
    key_env: Once<String>,
    ca: Once<PathBuf>,
    secret_env: Once<String>,
    tls_cert: Once<PathBuf>,
    tls_key: Once<PathBuf>,
    tls_ca: Once<PathBuf>,
    public_cert: Once<PathBuf>,
    public_key: Once<PathBuf>,
    api_token_env: Once<String>,
}

/// One address a server listens on.
struct Bound {
    host: Host,
    port: u16,
    /// Index into [`Reader::servers`].
    server: usize,
    /// `client`, `peer`, `tls`, `http` or `https`.
    kind: &'static str,
}

impl Reader {
    /// Checks one line's fields (comment already removed) and records them.
    fn directive(&mut self, line: usize, fields: &[&str], file: &Path) -> Result<(), String> {
        let Some((&directive, args)) = fields.split_first() else {
            return Ok(());
        };
        match directive {
            "server" => self.server(line, args),
            "link" => {
                let [a, b] = arguments(args, "link NAME NAME")?;
                if a == b {
                    return Err(format!("link from {a:?} to itself"));
                }
                // Checked against the servers after the last line: a link
                // may name a server declared further down.
                self.links.push(PendingLink {
                    line,
                    a: a.to_string(),
                    b: b.to_string(),
                });
                Ok(())
            }
            "places" => {
                let (api, url) = match args {
                    [api] => (*api, None),
                    [api, url] => (*api, Some(*url)),
                    _ => return Err(usage("places legacy|new [URL]")),
                };
                first("places", &self.places)?;
                let (api, default_url) = match api {
                    "legacy" => (PlacesApi::Legacy, LEGACY_URL),
                    "new" => (PlacesApi::New, NEW_URL),
                    other => {
                        return Err(format!("unknown places api {other:?}, want legacy or new"))
                    }
                };
                let url = match url {
                    Some(url) => {
                        addr::https_url(url)
                            .map_err(|what| format!("bad places url {url:?}: {what}"))?;
                        url
                    }
                    None => default_url,
                };
                self.places = Some((line, (api, url.to_string())));
                Ok(())
            }
            "places_key_env" => {
                let [var] = arguments(args, "places_key_env VAR")?;
                first(directive, &self.key_env)?;
                self.key_env = Some((line, env_var(var)?));
                Ok(())
            }
            "secret_env" => {
                let [var] = arguments(args, "secret_env VAR")?;
                first(directive, &self.secret_env)?;
                self.secret_env = Some((line, env_var(var)?));
                Ok(())
            }
            "places_ca" => {
                let [path] = arguments(args, "places_ca PATH")?;
                first(directive, &self.ca)?;
                self.ca = Some((line, relative(file, path)));
                Ok(())
            }
            "tls_cert" | "tls_key" | "tls_ca" => {
                let slot = match directive {
                    "tls_cert" => &mut self.tls_cert,
                    "tls_key" => &mut self.tls_key,
                    _ => &mut self.tls_ca,
                };
                let [path] = arguments(args, &format!("{directive} PATH"))?;
                first(directive, slot)?;
                *slot = Some((line, relative(file, path)));
                Ok(())
            }
            "public_cert" | "public_key" => {
                let slot = match directive {
                    "public_cert" => &mut self.public_cert,
                    _ => &mut self.public_key,
                };
                let [path] = arguments(args, &format!("{directive} PATH"))?;
                first(directive, slot)?;
                *slot = Some((line, relative(file, path)));
                Ok(())
            }
            "api_token_env" => {
                let [var] = arguments(args, "api_token_env VAR")?;
                first(directive, &self.api_token_env)?;
                self.api_token_env = Some((line, env_var(var)?));
                Ok(())
            }
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    /// `server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT]`.
    fn server(&mut self, line: usize, args: &[&str]) -> Result<(), String> {
        let (name, address, options) = match args {
            [name, address, options @ ..] if options.len() % 2 == 0 => (*name, *address, options),
            _ => return Err(usage(SERVER_FORM)),
        };
        let name_ok = name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_graphic());
        if !name_ok {
            return Err(format!(
                "bad server name {name:?}: want 1 to {MAX_NAME_LEN} printable ASCII characters"
            ));
        }
        let client =
            addr::host_port(address).map_err(|what| format!("bad address {address:?}: {what}"))?;
        let (host, port) = (client.host_text.to_string(), client.port);
        let mut bound = vec![("client", address, client)];
        let (mut peer, mut tls, mut http, mut https) = (None, None, None, None);
        for pair in options.chunks(2) {
            let (keyword, address) = (pair[0], pair[1]);
            let (kind, slot) = match keyword {
                "peer" => ("peer", &mut peer),
                "tls" => ("tls", &mut tls),
                "http" => ("http", &mut http),
                "https" => ("https", &mut https),
                other => {
                    return Err(format!(
                        "unknown port kind {other:?}, want peer, tls, http or https"
                    ))
                }
            };
            if slot.is_some() {
                return Err(format!("duplicate {kind} port on one server line"));
            }
            let hp = addr::host_port(address)
                .map_err(|what| format!("bad {kind} address {address:?}: {what}"))?;
            *slot = Some(Endpoint {
                host: hp.host_text.to_string(),
                port: hp.port,
            });
            bound.push((kind, address, hp));
        }

        if let Some(other) = self.servers.iter().find(|s| s.name == name) {
            return Err(format!(
                "duplicate server name {name:?} (first on line {})",
                other.line
            ));
        }
        let index = self.servers.len();
        for (kind, address, hp) in bound {
            let clash = self
                .addresses
                .iter()
                .find(|b| b.host == hp.host && b.port == hp.port);
            if let Some(b) = clash {
                // Not yet in `servers`: another port of this very line.
                let (other, first) = self
                    .servers
                    .get(b.server)
                    .map_or((name, line), |s| (s.name.as_str(), s.line));
                let user = match b.kind {
                    "client" => format!("{other:?}"),
                    kind => format!("the {kind} port of {other:?}"),
                };
                return Err(format!(
                    "duplicate address {address:?} (first used by {user} on line {first})"
                ));
            }
            self.addresses.push(Bound {
                host: hp.host,
                port: hp.port,
                server: index,
                kind,
            });
        }
        self.servers.push(ServerSpec {
            name: name.to_string(),
            host,
            port,
            line,
            peer,
            tls,
            http,
            https,
        });
        Ok(())
    }

    /// Resolves the links and assembles the herd. Errors carry their line.
    fn finish(self) -> Result<Herd, (usize, String)> {
        if self.servers.is_empty() {
            return Err((0, "no server defined".to_string()));
        }
        let index = |link: &PendingLink, name: &str| {
            self.servers
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| (link.line, format!("unknown server {name:?} in link")))
        };
        let mut links: Vec<(usize, usize)> = Vec::with_capacity(self.links.len());
        for link in &self.links {
            let a = index(link, &link.a)?;
            let b = index(link, &link.b)?;
            if let Some(j) = links.iter().position(|&l| l == (a, b) || l == (b, a)) {
                let first = self.links[j].line;
                return Err((
                    link.line,
                    format!(
                        "duplicate link {:?} {:?} (first on line {first})",
                        link.a, link.b
                    ),
                ));
            }
            links.push((a, b));
        }

        let mut places = PlacesConfig::default();
        if let Some((_, (api, url))) = self.places {
            places.api = api;
            places.url = url;
        }
        if let Some((_, key_env)) = self.key_env {
            places.key_env = key_env;
        }
        places.ca = self.ca.map(|(_, path)| path);
        let tls = tls_files(self.tls_cert, self.tls_key, self.tls_ca)?;
        let public = public_files(self.public_cert, self.public_key)?;
        check_tls(&self.servers, tls.as_ref(), public.is_some())?;
        Ok(Herd {
            servers: self.servers,
            links,
            places,
            secret_env: self.secret_env.map(|(_, var)| var),
            tls,
            public,
            api_token_env: self.api_token_env.map(|(_, var)| var),
        })
    }
}

/// The usage of a `server` line.
const SERVER_FORM: &str =
    "server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT] [http HOST:PORT] [https HOST:PORT]";

/// `path` of a directive, relative to the config file's folder, not to
/// wherever the herd is started.
fn relative(file: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// All three TLS files, or none; some of them is an error on the line of
/// the first one given.
fn tls_files(
    cert: Once<PathBuf>,
    key: Once<PathBuf>,
    ca: Once<PathBuf>,
) -> Result<Option<TlsFiles>, (usize, String)> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
        (cert, key, ca) => {
            let given = [("tls_cert", &cert), ("tls_key", &key), ("tls_ca", &ca)];
            let line = given
                .iter()
                .filter_map(|(_, slot)| slot.as_ref().map(|(line, _)| *line))
                .min()
                .unwrap_or(0);
            let missing: Vec<&str> = given
                .iter()
                .filter(|(_, slot)| slot.is_none())
                .map(|(directive, _)| *directive)
                .collect();
            Err((
                line,
                format!(
                    "incomplete TLS settings: {} missing (TLS needs tls_cert, tls_key and tls_ca)",
                    missing.join(" and ")
                ),
            ))
        }
    }
}

/// `public_cert` and `public_key`: both or none.
fn public_files(
    cert: Once<PathBuf>,
    key: Once<PathBuf>,
) -> Result<Option<PublicFiles>, (usize, String)> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(PublicFiles { cert, key })),
        (Some((line, _)), None) => Err((line, "public_cert without public_key".to_string())),
        (None, Some((line, _))) => Err((line, "public_key without public_cert".to_string())),
    }
}

/// What TLS asks of the servers: with the files, a `peer` port somewhere
/// (links go to peer ports) and NAMEs that a certificate can carry as DNS
/// names; without them, no `tls` or `https` port unless `public_cert` and
/// `public_key` give client-facing ports a certificate of their own.
fn check_tls(
    servers: &[ServerSpec],
    tls: Option<&TlsFiles>,
    public: bool,
) -> Result<(), (usize, String)> {
    if tls.is_none() && !public {
        let client_tls = servers.iter().find_map(|s| match (&s.tls, &s.https) {
            (Some(_), _) => Some((s, "a tls")),
            (None, Some(_)) => Some((s, "an https")),
            _ => None,
        });
        if let Some((s, kind)) = client_tls {
            return Err((
                s.line,
                format!(
                    "server {:?} has {kind} port, which needs a certificate: public_cert and public_key, or tls_cert, tls_key and tls_ca",
                    s.name
                ),
            ));
        }
    }
    let Some(files) = tls else {
        return Ok(());
    };
    let first = files.cert.0.min(files.key.0).min(files.ca.0);
    if servers.iter().all(|s| s.peer.is_none()) {
        return Err((
            first,
            "TLS settings but no server has a peer port (TLS herd links go to peer ports)"
                .to_string(),
        ));
    }
    for s in servers {
        if !is_dns_name(&s.name) {
            return Err((
                s.line,
                format!(
                    "server name {:?} is not a DNS name, which TLS needs: certificates name servers as DNS names",
                    s.name
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `name` is a DNS name as certificates carry them (and as
/// [`crate::tls::cert_names`] looks for it), not an IP address.
pub fn is_dns_name(name: &str) -> bool {
    matches!(
        rustls_pki_types::ServerName::try_from(name),
        Ok(rustls_pki_types::ServerName::DnsName(_))
    )
}

/// A directive's arguments as an array of the expected length.
fn arguments<'a, const N: usize>(args: &[&'a str], form: &str) -> Result<[&'a str; N], String> {
    <[&str; N]>::try_from(args).map_err(|_| usage(form))
}

fn usage(form: &str) -> String {
    format!("wrong number of fields, want \"{form}\"")
}

/// Fails if a once-only directive was already given.
fn first<T>(directive: &str, slot: &Once<T>) -> Result<(), String> {
    match slot {
        Some((line, _)) => Err(format!("duplicate {directive} (first on line {line})")),
        None => Ok(()),
    }
}

/// An environment variable name, as a shell would accept it.
fn env_var(var: &str) -> Result<String, String> {
    let mut bytes = var.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(var.to_string())
    } else {
        Err(format!(
            "bad variable name {var:?}: want letters, digits and _, not starting with a digit"
        ))
    }
}

#[cfg(test)]
mod tests;
