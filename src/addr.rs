//! Host, port and `https` URL text: the one set of rules for every address
//! the herd reads (`server NAME HOST:PORT` in `herd.conf`, and the Places
//! endpoint, both when the config is checked and when the client is built).
//!
//! ```text
//! HOST:PORT                 HOST  IPv4 literal | [IPv6 literal] | DNS name
//! https://HOST[:PORT]/PATH  PORT  1..=65535, digits only; 443 when left out
//! ```
//!
//! The rules are strict on purpose: an address that is refused here stops
//! the program before it listens, with a message saying what is wrong,
//! where one accepted by mistake fails later and far from its cause (a DNS
//! lookup of a typo, a TLS name mismatch, a bind to the wrong port).
//!
//! - A host made only of digits and dots is an IPv4 literal and must parse
//!   as one (no DNS name has an all-numeric last label, and this catches
//!   `256.0.0.1` and `1.2.3`; leading zeros are refused, since some readers
//!   take them as octal).
//! - An IPv6 literal goes in brackets, so that its colons cannot be taken
//!   for the port's: `::1:80` is refused, not read as `[::1]:80` or as
//!   `[::1:80]`.
//! - A DNS name is letters, digits and `-` in labels of 1 to 63 characters,
//!   253 at most in all, no label starting or ending with `-` (RFC 1123);
//!   no `_`, and no trailing dot. Names compare without case.
//! - A port is digits only (`str::parse` would also take `+80`).
//! - A URL is `https` (lower case, as written in the docs), has a path, and
//!   holds no user info, query or fragment: the Places client adds its own
//!   query, and a fragment never goes to a server. The path is printable
//!   ASCII, so it can be copied into a request line as it is.
//!
//! Everything here is a pure function of the text; nothing is resolved.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a host is: an IP address by value (`::1` and `0::1` are the same
/// host), or a DNS name in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// A checked `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The host as written, an IPv6 literal without its brackets.
    pub host_text: &'a str,
    pub host: Host,
    pub port: u16,
}

/// A checked `https://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl<'a> {
    /// The port is 443 when the URL names none.
    pub authority: HostPort<'a>,
    /// From the `/` after the host to the end: `/v1/places:searchNearby`.
    pub path: &'a str,
}

/// What is wrong with an address; [`Display`](fmt::Display) says it in the
/// words `herd.conf` errors use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrError {
    EmptyHost,
    /// `HOST` with no `:PORT`.
    MissingPort,
    /// `HOST:` with nothing after the colon.
    EmptyPort,
    BadPort(String),
    BadIpv4(String),
    UnbracketedIpv6,
    UnclosedBracket,
    BadIpv6(String),
    /// Something other than `:PORT` after `[IPv6]`.
    AfterBracket,
    /// A character a DNS name cannot hold, and the name.
    BadChar(char, String),
    EmptyLabel(String),
    /// A label starting or ending with `-`, and the name.
    HyphenLabel(String, String),
    LongLabel(String),
    LongName,
    NotHttps,
    MissingPath,
    Query,
    Fragment,
    BadPath,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::EmptyHost => f.write_str("empty host"),
            AddrError::MissingPort => f.write_str("missing :PORT"),
            AddrError::EmptyPort => f.write_str("missing port after :"),
            AddrError::BadPort(port) => write!(f, "bad port {port:?}, want 1 to 65535"),
            AddrError::BadIpv4(host) => write!(f, "bad IPv4 address {host:?}"),
            AddrError::UnbracketedIpv6 => {
                f.write_str("an IPv6 address goes in brackets, like [::1]:12000")
            }
            AddrError::UnclosedBracket => f.write_str("missing ] after the IPv6 address"),
            AddrError::BadIpv6(host) => write!(f, "bad IPv6 address {host:?}"),
            AddrError::AfterBracket => f.write_str("want :PORT after ]"),
            AddrError::BadChar(c, host) => write!(f, "{c:?} not allowed in host name {host:?}"),
            AddrError::EmptyLabel(host) => write!(f, "empty label in host name {host:?}"),
            AddrError::HyphenLabel(label, host) => write!(
                f,
                "label {label:?} of host name {host:?} starts or ends with '-'"
            ),
            AddrError::LongLabel(host) => {
                write!(f, "label longer than 63 characters in host name {host:?}")
            }
            AddrError::LongName => f.write_str("host name longer than 253 characters"),
            AddrError::NotHttps => f.write_str("want https://HOST[:PORT]/PATH"),
            AddrError::MissingPath => f.write_str("missing /PATH after the host"),
            AddrError::Query => f.write_str("no query string allowed, the client adds its own"),
            AddrError::Fragment => f.write_str("no #fragment allowed"),
            AddrError::BadPath => f.write_str("the path must be printable ASCII"),
        }
    }
}

impl std::error::Error for AddrError {}

/// Reads `HOST:PORT`; the port is required.
pub fn host_port(text: &str) -> Result<HostPort<'_>, AddrError> {
    let (host_text, host, port) = authority(text)?;
    let port = port.ok_or(AddrError::MissingPort)?;
    Ok(HostPort {
        host_text,
        host,
        port,
    })
}

/// Reads `https://HOST[:PORT]/PATH`; the port defaults to 443.
pub fn https_url(text: &str) -> Result<HttpsUrl<'_>, AddrError> {
    let rest = text.strip_prefix("https://").ok_or(AddrError::NotHttps)?;
    let slash = rest.find('/').ok_or(AddrError::MissingPath)?;
    let (authority_text, path) = rest.split_at(slash);
    let (host_text, host, port) = authority(authority_text)?;
    if path.contains('?') {
        return Err(AddrError::Query);
    }
    if path.contains('#') {
        return Err(AddrError::Fragment);
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AddrError::BadPath);
    }
    Ok(HttpsUrl {
        authority: HostPort {
            host_text,
            host,
            port: port.unwrap_or(443),
        },
        path,
    })
}

/// `HOST[:PORT]`: the host as written (brackets off), what it is, the port.
fn authority(text: &str) -> Result<(&str, Host, Option<u16>), AddrError> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or(AddrError::UnclosedBracket)?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| AddrError::BadIpv6(inner.to_string()))?;
        let port = match after {
            "" => None,
            _ => Some(port(
                after.strip_prefix(':').ok_or(AddrError::AfterBracket)?,
            )?),
        };
        return Ok((inner, Host::Ip(ip.into()), port));
    }
    let (host_text, port_text) = match text.split_once(':') {
        Some((host, port_text)) => (host, Some(port_text)),
        None => (text, None),
    };
    // Said before the host is looked at: `::1` would only be "empty host".
    if port_text.is_some_and(|p| p.contains(':')) {
        return Err(AddrError::UnbracketedIpv6);
    }
    let host = host(host_text)?;
    let port = port_text.map(port).transpose()?;
    Ok((host_text, host, port))
}

/// An unbracketed host: an IPv4 literal or a DNS name.
fn host(text: &str) -> Result<Host, AddrError> {
    if text.is_empty() {
        return Err(AddrError::EmptyHost);
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = text
            .parse()
            .map_err(|_| AddrError::BadIpv4(text.to_string()))?;
        return Ok(Host::Ip(ip.into()));
    }
    if text.len() > 253 {
        return Err(AddrError::LongName);
    }
    let name = || text.to_string();
    for label in text.split('.') {
        if label.is_empty() {
            return Err(AddrError::EmptyLabel(name()));
        }
        if let Some(c) = label
            .chars()
            .find(|&c| !c.is_ascii_alphanumeric() && c != '-')
        {
            return Err(AddrError::BadChar(c, name()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(AddrError::HyphenLabel(label.to_string(), name()));
        }
        if label.len() > 63 {
            return Err(AddrError::LongLabel(name()));
        }
    }
    Ok(Host::Name(text.to_ascii_lowercase()))
}

/// A port, 1..=65535, digits only.
fn port(text: &str) -> Result<u16, AddrError> {
    if text.is_empty() {
        return Err(AddrError::EmptyPort);
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(AddrError::BadPort(text.to_string())),
    }
}

#[cfg(test)]
mod tests;
