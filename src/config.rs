//! `herd.conf`: the herd's members, links and Places settings (SPEC §6),
//! read into a checked [`Herd`]. Every error names the file and line.
//!
//! ```text
//! server NAME HOST:PORT        # HOST: IPv4, [IPv6] or a DNS name; PORT 1..=65535
//! link NAME NAME               # bidirectional; may name servers declared later
//! places legacy|new [URL]      # URL: https://HOST[:PORT]/PATH, default per API
//! places_key_env VAR           # default GOOGLE_PLACES_API_KEY
//! places_ca PATH               # relative to the config file's folder
//! secret_env VAR
//! ```
//!
//! One directive a line, fields split on white space, `#` to the end of the
//! line is a comment, blank lines are ignored. Each directive other than
//! `server` and `link` may appear at most once.
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
//! Nothing here touches the network or the environment: DNS names are
//! resolved, variables read and `places_ca` opened by whoever uses them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

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
}

/// `server NAME HOST:PORT`.
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

/// What a host is, for finding two servers on the same address: IPs by
/// value (`::1` and `0::1` are the same), DNS names without case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostId {
    Ip(IpAddr),
    Dns(String),
}

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
    /// Per server: its line and its address's identity.
    server_origins: Vec<(usize, HostId)>,
    links: Vec<PendingLink>,
    places: Once<(PlacesApi, String)>,
    key_env: Once<String>,
    ca: Once<PathBuf>,
    secret_env: Once<String>,
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
                        https_url(url).map_err(|what| format!("bad places url {url:?}: {what}"))?;
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
                // Relative to the config, not to wherever the herd is started.
                let path = Path::new(path);
                let path = match file.parent() {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path.to_path_buf(),
                };
                self.ca = Some((line, path));
                Ok(())
            }
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    /// `server NAME HOST:PORT`.
    fn server(&mut self, line: usize, args: &[&str]) -> Result<(), String> {
        let [name, address] = arguments(args, "server NAME HOST:PORT")?;
        let name_ok = name.len() <= MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_graphic());
        if !name_ok {
            return Err(format!(
                "bad server name {name:?}: want 1 to {MAX_NAME_LEN} printable ASCII characters"
            ));
        }
        let bad = |what: String| format!("bad address {address:?}: {what}");
        let (host, id, port) = host_and_port(address).map_err(bad)?;
        let port = port.ok_or_else(|| bad("missing :PORT".to_string()))?;

        if let Some(i) = self.servers.iter().position(|s| s.name == name) {
            let first = self.server_origins[i].0;
            return Err(format!(
                "duplicate server name {name:?} (first on line {first})"
            ));
        }
        let clash = (self.servers.iter().zip(&self.server_origins))
            .find(|(other, (_, other_id))| *other_id == id && other.port == port);
        if let Some((other, (first, _))) = clash {
            return Err(format!(
                "duplicate address {address:?} (first used by {:?} on line {first})",
                other.name
            ));
        }
        self.servers.push(ServerSpec {
            name: name.to_string(),
            host,
            port,
        });
        self.server_origins.push((line, id));
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
        Ok(Herd {
            servers: self.servers,
            links,
            places,
            secret_env: self.secret_env.map(|(_, var)| var),
        })
    }
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

/// Splits `HOST[:PORT]` (HOST an IPv4 address, `[IPv6]` or a DNS name) into
/// the host as stored (IPv6 without brackets), its identity and the port.
fn host_and_port(text: &str) -> Result<(String, HostId, Option<u16>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or("missing ] after the IPv6 address")?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("bad IPv6 address {inner:?}"))?;
        let port = match after {
            "" => None,
            _ => {
                let port_text = after.strip_prefix(':').ok_or("want :PORT after ]")?;
                Some(port(port_text)?)
            }
        };
        return Ok((inner.to_string(), HostId::Ip(ip.into()), port));
    }
    let (host, port_text) = match text.split_once(':') {
        Some((host, port_text)) => (host, Some(port_text)),
        None => (text, None),
    };
    if port_text.is_some_and(|p| p.contains(':')) {
        return Err("an IPv6 address goes in brackets, like [::1]:12000".to_string());
    }
    let id = host_id(host)?;
    let port = port_text.map(port).transpose()?;
    Ok((host.to_string(), id, port))
}

/// An IPv4 address (a host of only digits and dots: no DNS name has an
/// all-numeric last label) or a DNS name.
fn host_id(host: &str) -> Result<HostId, String> {
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| format!("bad IPv4 address {host:?}"))?;
        return Ok(HostId::Ip(ip.into()));
    }
    if host.len() > 253 {
        return Err("host name longer than 253 characters".to_string());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!("empty label in host name {host:?}"));
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !c.is_ascii_alphanumeric() && c != '-')
        {
            return Err(format!("{c:?} not allowed in host name {host:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label {label:?} of host name {host:?} starts or ends with '-'"
            ));
        }
        if label.len() > 63 {
            return Err(format!(
                "label longer than 63 characters in host name {host:?}"
            ));
        }
    }
    Ok(HostId::Dns(host.to_ascii_lowercase()))
}

/// A port, 1..=65535, digits only (`str::parse` would take a `+`).
fn port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("missing port after :".to_string());
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(format!("bad port {text:?}, want 1 to 65535")),
    }
}

/// `https://HOST[:PORT]/PATH`. No query (the Places client adds its own)
/// and no user info.
fn https_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("want https://HOST[:PORT]/PATH")?;
    let slash = rest.find('/').ok_or("missing /PATH after the host")?;
    let (authority, path) = rest.split_at(slash);
    host_and_port(authority)?;
    if path.contains('?') {
        return Err("no query string allowed, the client adds its own".to_string());
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the path must be printable ASCII".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = "\
server Goloman 127.0.0.1:12000
server Hands   127.0.0.1:12001
server Holiday 127.0.0.1:12002
server Welsh   127.0.0.1:12003
server Wilkes  127.0.0.1:12004
link Goloman Hands
link Goloman Holiday
link Goloman Wilkes
link Hands Wilkes
link Holiday Welsh
link Holiday Wilkes
places legacy https://maps.googleapis.com/maps/api/place/nearbysearch/json
places_key_env GOOGLE_PLACES_API_KEY
";

    fn parse(text: &str) -> Result<Herd, ConfigError> {
        Herd::parse(text, Path::new("conf/herd.conf"))
    }

    fn herd(text: &str) -> Herd {
        match parse(text) {
            Ok(herd) => herd,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    fn server(name: &str, host: &str, port: u16) -> ServerSpec {
        ServerSpec {
            name: name.to_string(),
            host: host.to_string(),
            port,
        }
    }

    /// The names of member `i`'s neighbours.
    fn neighbour_names(herd: &Herd, name: &str) -> Vec<String> {
        let i = herd.index_of(name).expect("member");
        herd.neighbours(i)
            .into_iter()
            .map(|j| herd.servers[j].name.clone())
            .collect()
    }

    #[test]
    fn reference_herd() {
        let herd = herd(REFERENCE);
        let expected = Herd {
            servers: vec![
                server("Goloman", "127.0.0.1", 12000),
                server("Hands", "127.0.0.1", 12001),
                server("Holiday", "127.0.0.1", 12002),
                server("Welsh", "127.0.0.1", 12003),
                server("Wilkes", "127.0.0.1", 12004),
            ],
            links: vec![(0, 1), (0, 2), (0, 4), (1, 4), (2, 3), (2, 4)],
            places: PlacesConfig::default(),
            secret_env: None,
        };
        assert_eq!(herd, expected);
        // The table of SPEC §1.
        assert_eq!(
            neighbour_names(&herd, "Goloman"),
            ["Hands", "Holiday", "Wilkes"]
        );
        assert_eq!(neighbour_names(&herd, "Hands"), ["Goloman", "Wilkes"]);
        assert_eq!(
            neighbour_names(&herd, "Holiday"),
            ["Goloman", "Welsh", "Wilkes"]
        );
        assert_eq!(neighbour_names(&herd, "Welsh"), ["Holiday"]);
        assert_eq!(
            neighbour_names(&herd, "Wilkes"),
            ["Goloman", "Hands", "Holiday"]
        );
        assert_eq!(herd.servers[0].address(), "127.0.0.1:12000");
    }

    #[test]
    fn load_reference_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_files/reference.conf");
        assert_eq!(Herd::load(&path), Ok(herd(REFERENCE)));
    }

    #[test]
    fn load_missing_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_files/missing.conf");
        let e = Herd::load(&path).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.message.starts_with("cannot read: "), "{}", e.message);
        // Line 0: no line number in the message.
        assert_eq!(e.to_string(), format!("{}: {}", path.display(), e.message));
    }

    #[test]
    fn comments_blank_lines_and_white_space() {
        let text = "# a herd\n\
                    \n   \t\n\
                    \tserver\tA\t127.0.0.1:1   # the first\r\n\
                    server B 127.0.0.1:2#no space before the comment\n\
                    #server C 127.0.0.1:3\n\
                    link A B#\n\
                    places_key_env KEY # key\n\
                    \x20  # only a comment\n";
        let herd = herd(text);
        assert_eq!(
            herd.servers,
            [server("A", "127.0.0.1", 1), server("B", "127.0.0.1", 2)]
        );
        assert_eq!(herd.links, [(0, 1)]);
        assert_eq!(herd.places.key_env, "KEY");
    }

    #[test]
    fn forward_links() {
        let herd = herd("link A B\nlink C A\nserver A h:1\nserver B h:2\nserver C h:3\n");
        assert_eq!(herd.links, [(0, 1), (2, 0)]);
        assert_eq!(herd.neighbours(0), [1, 2]);
        assert_eq!(herd.neighbours(1), [0]);
    }

    #[test]
    fn hosts() {
        let herd = herd(
            "server a [::1]:1\n\
             server b [2001:db8::17]:2\n\
             server c [::ffff:127.0.0.1]:3\n\
             server d localhost:4\n\
             server e kiwi.cs.ucla.edu:5\n\
             server f x-1.EXAMPLE.org:6\n\
             server g 0.0.0.0:65535\n\
             server h 1a.2b:7\n\
             server i 127.0.0.1:0008\n",
        );
        let expected = [
            server("a", "::1", 1),
            server("b", "2001:db8::17", 2),
            server("c", "::ffff:127.0.0.1", 3),
            server("d", "localhost", 4),
            server("e", "kiwi.cs.ucla.edu", 5),
            server("f", "x-1.EXAMPLE.org", 6),
            server("g", "0.0.0.0", 65535),
            server("h", "1a.2b", 7),
            server("i", "127.0.0.1", 8),
        ];
        assert_eq!(herd.servers, expected);
        assert_eq!(herd.servers[0].address(), "[::1]:1");
        assert_eq!(herd.servers[1].address(), "[2001:db8::17]:2");
        assert_eq!(herd.servers[4].address(), "kiwi.cs.ucla.edu:5");
    }

    #[test]
    fn server_names() {
        let herd = herd("server Goloman h:1\nserver goloman h:2\nserver a-b_c.d!~[] h:3\n");
        assert_eq!(herd.index_of("goloman"), Some(1));
        assert_eq!(herd.index_of("a-b_c.d!~[]"), Some(2));
        assert_eq!(herd.index_of("GOLOMAN"), None);
        let longest = "n".repeat(MAX_NAME_LEN);
        assert_eq!(
            self::herd(&format!("server {longest} h:1")).servers[0].name,
            longest
        );
    }

    #[test]
    fn places_variants() {
        let one = "server A h:1\n";
        let places = |lines: &str| herd(&format!("{one}{lines}")).places;

        assert_eq!(places(""), PlacesConfig::default());
        assert_eq!(places("places legacy").url, LEGACY_URL);
        let new = places("places new");
        assert_eq!((new.api, new.url.as_str()), (PlacesApi::New, NEW_URL));
        let custom = places("places new https://127.0.0.1:8443/v1/places:searchNearby");
        assert_eq!(custom.api, PlacesApi::New);
        assert_eq!(custom.url, "https://127.0.0.1:8443/v1/places:searchNearby");
        assert_eq!(
            places("places legacy https://[::1]:9/x").url,
            "https://[::1]:9/x"
        );
        assert_eq!(
            places("places legacy https://localhost/").url,
            "https://localhost/"
        );

        let all = places("places_key_env MY_KEY\nplaces_ca certs/ca.pem\n");
        assert_eq!(all.key_env, "MY_KEY");
        assert_eq!(all.ca, Some(PathBuf::from("conf/certs/ca.pem")));
        assert_eq!(
            places("places_ca /etc/ca.pem").ca,
            Some(PathBuf::from("/etc/ca.pem"))
        );
        // A config in the current folder: the path stays relative to it.
        let here = Herd::parse(&format!("{one}places_ca ca.pem"), Path::new("herd.conf"));
        assert_eq!(here.map(|h| h.places.ca), Ok(Some(PathBuf::from("ca.pem"))));

        let secret = herd(&format!("{one}secret_env _HERD_SECRET_1")).secret_env;
        assert_eq!(secret.as_deref(), Some("_HERD_SECRET_1"));
    }

    #[test]
    fn errors() {
        // Config text, line of the error, message.
        let cases: &[(&str, usize, &str)] = &[
            // Directives.
            ("server A h:1\nlisten 80\n", 2, "unknown directive \"listen\""),
            ("server A h:1\nSERVER B h:2\n", 2, "unknown directive \"SERVER\""),
            ("", 0, "no server defined"),
            ("# nothing\n\nplaces legacy\n", 0, "no server defined"),
            // server: fields, names.
            ("server A\n", 1, "wrong number of fields, want \"server NAME HOST:PORT\""),
            ("server A h:1 B\n", 1, "wrong number of fields, want \"server NAME HOST:PORT\""),
            ("server\n", 1, "wrong number of fields, want \"server NAME HOST:PORT\""),
            (
                "server Gol\u{e9}man h:1\n",
                1,
                "bad server name \"Goléman\": want 1 to 64 printable ASCII characters",
            ),
            // server: addresses.
            ("server A 127.0.0.1\n", 1, "bad address \"127.0.0.1\": missing :PORT"),
            ("server A h:\n", 1, "bad address \"h:\": missing port after :"),
            ("server A :1\n", 1, "bad address \":1\": empty host"),
            ("server A h:0\n", 1, "bad address \"h:0\": bad port \"0\", want 1 to 65535"),
            ("server A h:65536\n", 1, "bad address \"h:65536\": bad port \"65536\", want 1 to 65535"),
            ("server A h:+80\n", 1, "bad address \"h:+80\": bad port \"+80\", want 1 to 65535"),
            ("server A h:http\n", 1, "bad address \"h:http\": bad port \"http\", want 1 to 65535"),
            (
                "server A 256.0.0.1:1\n",
                1,
                "bad address \"256.0.0.1:1\": bad IPv4 address \"256.0.0.1\"",
            ),
            ("server A 1.2.3:1\n", 1, "bad address \"1.2.3:1\": bad IPv4 address \"1.2.3\""),
            ("server A 01.2.3.4:1\n", 1, "bad address \"01.2.3.4:1\": bad IPv4 address \"01.2.3.4\""),
            (
                "server A ::1:80\n",
                1,
                "bad address \"::1:80\": an IPv6 address goes in brackets, like [::1]:12000",
            ),
            ("server A [::1:80\n", 1, "bad address \"[::1:80\": missing ] after the IPv6 address"),
            ("server A [::g]:80\n", 1, "bad address \"[::g]:80\": bad IPv6 address \"::g\""),
            ("server A [1.2.3.4]:80\n", 1, "bad address \"[1.2.3.4]:80\": bad IPv6 address \"1.2.3.4\""),
            ("server A [::1]80\n", 1, "bad address \"[::1]80\": want :PORT after ]"),
            ("server A [::1]\n", 1, "bad address \"[::1]\": missing :PORT"),
            ("server A a_b:1\n", 1, "bad address \"a_b:1\": '_' not allowed in host name \"a_b\""),
            ("server A a..b:1\n", 1, "bad address \"a..b:1\": empty label in host name \"a..b\""),
            ("server A a.b.:1\n", 1, "bad address \"a.b.:1\": empty label in host name \"a.b.\""),
            (
                "server A -a.b:1\n",
                1,
                "bad address \"-a.b:1\": label \"-a\" of host name \"-a.b\" starts or ends with '-'",
            ),
            (
                "server A a.b-:1\n",
                1,
                "bad address \"a.b-:1\": label \"b-\" of host name \"a.b-\" starts or ends with '-'",
            ),
            ("server A user@h:1\n", 1, "bad address \"user@h:1\": '@' not allowed in host name \"user@h\""),
            // server: duplicates.
            (
                "# herd\nserver Hands h:1\nserver Hands h:2\n",
                3,
                "duplicate server name \"Hands\" (first on line 2)",
            ),
            (
                "server A 127.0.0.1:1\nserver B 127.0.0.1:1\n",
                2,
                "duplicate address \"127.0.0.1:1\" (first used by \"A\" on line 1)",
            ),
            (
                "server A [::1]:1\nserver B [0:0::1]:1\n",
                2,
                "duplicate address \"[0:0::1]:1\" (first used by \"A\" on line 1)",
            ),
            (
                "server A Kiwi.example:1\nserver B kiwi.EXAMPLE:01\n",
                2,
                "duplicate address \"kiwi.EXAMPLE:01\" (first used by \"A\" on line 1)",
            ),
            // link.
            ("server A h:1\nlink A\n", 2, "wrong number of fields, want \"link NAME NAME\""),
            ("server A h:1\nlink A B C\n", 2, "wrong number of fields, want \"link NAME NAME\""),
            ("server A h:1\nlink A A\n", 2, "link from \"A\" to itself"),
            (
                "server A h:1\nlink A Foo\nserver B h:2\n",
                2,
                "unknown server \"Foo\" in link",
            ),
            ("server A h:1\nlink Foo A\n", 2, "unknown server \"Foo\" in link"),
            ("server A h:1\nlink a A\n", 2, "unknown server \"a\" in link"),
            (
                "server A h:1\nserver B h:2\nlink A B\n\nlink A B\n",
                5,
                "duplicate link \"A\" \"B\" (first on line 3)",
            ),
            (
                "link A B\nserver A h:1\nserver B h:2\nlink B A\n",
                4,
                "duplicate link \"B\" \"A\" (first on line 1)",
            ),
            // places.
            ("server A h:1\nplaces\n", 2, "wrong number of fields, want \"places legacy|new [URL]\""),
            (
                "server A h:1\nplaces new https://h/ x\n",
                2,
                "wrong number of fields, want \"places legacy|new [URL]\"",
            ),
            ("server A h:1\nplaces old\n", 2, "unknown places api \"old\", want legacy or new"),
            ("server A h:1\nplaces Legacy\n", 2, "unknown places api \"Legacy\", want legacy or new"),
            (
                "server A h:1\nplaces legacy http://h/x\n",
                2,
                "bad places url \"http://h/x\": want https://HOST[:PORT]/PATH",
            ),
            (
                "server A h:1\nplaces legacy maps.googleapis.com/x\n",
                2,
                "bad places url \"maps.googleapis.com/x\": want https://HOST[:PORT]/PATH",
            ),
            (
                "server A h:1\nplaces legacy https://h\n",
                2,
                "bad places url \"https://h\": missing /PATH after the host",
            ),
            (
                "server A h:1\nplaces legacy https:///x\n",
                2,
                "bad places url \"https:///x\": empty host",
            ),
            (
                "server A h:1\nplaces legacy https://h:0/x\n",
                2,
                "bad places url \"https://h:0/x\": bad port \"0\", want 1 to 65535",
            ),
            (
                "server A h:1\nplaces legacy https://u@h/x\n",
                2,
                "bad places url \"https://u@h/x\": '@' not allowed in host name \"u@h\"",
            ),
            (
                "server A h:1\nplaces legacy https://h/x?key=1\n",
                2,
                "bad places url \"https://h/x?key=1\": no query string allowed, the client adds its own",
            ),
            (
                "server A h:1\nplaces legacy\nplaces new\n",
                3,
                "duplicate places (first on line 2)",
            ),
            // places_key_env, places_ca, secret_env.
            ("server A h:1\nplaces_key_env\n", 2, "wrong number of fields, want \"places_key_env VAR\""),
            ("server A h:1\nplaces_key_env A B\n", 2, "wrong number of fields, want \"places_key_env VAR\""),
            (
                "server A h:1\nplaces_key_env 1KEY\n",
                2,
                "bad variable name \"1KEY\": want letters, digits and _, not starting with a digit",
            ),
            (
                "server A h:1\nplaces_key_env MY-KEY\n",
                2,
                "bad variable name \"MY-KEY\": want letters, digits and _, not starting with a digit",
            ),
            (
                "server A h:1\nplaces_key_env K\nplaces_key_env K\n",
                3,
                "duplicate places_key_env (first on line 2)",
            ),
            ("server A h:1\nplaces_ca\n", 2, "wrong number of fields, want \"places_ca PATH\""),
            ("server A h:1\nplaces_ca a b\n", 2, "wrong number of fields, want \"places_ca PATH\""),
            (
                "server A h:1\nplaces_ca a\nplaces_ca a\n",
                3,
                "duplicate places_ca (first on line 2)",
            ),
            ("server A h:1\nsecret_env\n", 2, "wrong number of fields, want \"secret_env VAR\""),
            (
                "server A h:1\nsecret_env $SECRET\n",
                2,
                "bad variable name \"$SECRET\": want letters, digits and _, not starting with a digit",
            ),
            (
                "server A h:1\nsecret_env S\nsecret_env T\n",
                3,
                "duplicate secret_env (first on line 2)",
            ),
            // The first error wins, and line numbers count every line.
            ("server A h:1\r\n\r\n# c\r\nbad\r\nworse\r\n", 4, "unknown directive \"bad\""),
            (
                "link A Nobody\nserver A h:1\nbogus\n",
                3,
                "unknown directive \"bogus\"",
            ),
        ];
        for &(text, line, message) in cases {
            let e = match parse(text) {
                Err(e) => e,
                Ok(herd) => panic!("accepted {text:?}: {herd:?}"),
            };
            let expected = ConfigError {
                file: PathBuf::from("conf/herd.conf"),
                line,
                message: message.to_string(),
            };
            assert_eq!(e, expected, "{text:?}");
            let display = if line == 0 {
                format!("conf/herd.conf: {message}")
            } else {
                format!("conf/herd.conf:{line}: {message}")
            };
            assert_eq!(e.to_string(), display);
        }
    }

    #[test]
    fn long_names() {
        let too_long = "n".repeat(MAX_NAME_LEN + 1);
        let e = parse(&format!("server {too_long} h:1")).unwrap_err();
        assert_eq!(
            (e.line, e.message.starts_with("bad server name")),
            (1, true)
        );

        // 127 one-letter labels: 253 characters, the most allowed.
        let name = vec!["a"; 127].join(".");
        assert_eq!(herd(&format!("server A {name}:1")).servers[0].host, name);

        let label = "a".repeat(64);
        let e = parse(&format!("server A {label}.example:1")).unwrap_err();
        let host = format!("{label}.example");
        let expected = format!(
            "bad address \"{host}:1\": label longer than 63 characters in host name {host:?}"
        );
        assert_eq!(e.message, expected);
        let name = vec!["a"; 128].join("."); // 255 characters
        let e = parse(&format!("server A {name}:1")).unwrap_err();
        assert_eq!(
            e.message,
            format!("bad address \"{name}:1\": host name longer than 253 characters")
        );
    }
}
