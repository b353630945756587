//! `herd.conf`: the herd's members, links and Places settings (SPEC §6),
//! read into a checked [`Herd`]. Every error names the file and line.

use std::fmt;
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
    pub name: String,
    /// IPv4 text, IPv6 text without brackets, or a DNS name.
    pub host: String,
    pub port: u16,
}

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
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Herd, ConfigError> {
        todo!("{path:?}")
    }

    /// Checks config text; `file` is used in errors and to resolve `places_ca`.
    pub fn parse(text: &str, file: &Path) -> Result<Herd, ConfigError> {
        todo!("{text}{file:?}")
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
