//! The Places endpoint as the client uses it: read from the config's URL by
//! [`crate::addr::https_url`] (the rules `herd.conf` is checked with, so a
//! URL the config accepted is one the client accepts), then the `Host`
//! header, the request target and the percent-encoding of query values.

use std::fmt;
use std::net::IpAddr;

use crate::addr::{self, Host};

/// A parsed `https` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// A DNS name or an IP literal (IPv6 without brackets), lower-cased:
    /// the TLS server name and the `Host` header want one spelling.
    pub host: String,
    /// The host as an IP address, when it is a literal: no DNS lookup needed.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The path, never empty and never with a query: `/maps/api/place/nearbysearch/json`.
    pub path: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Endpoint {
    /// Parses `https://HOST[:PORT]/PATH`; the port defaults to 443.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let parsed =
            addr::https_url(url).map_err(|e| UrlError(format!("bad Places URL {url:?}: {e}")))?;
        let authority = parsed.authority;
        Ok(Endpoint {
            host: authority.host_text.to_ascii_lowercase(),
            ip: match authority.host {
                Host::Ip(ip) => Some(ip),
                Host::Name(_) => None,
            },
            port: authority.port,
            path: parsed.path.to_string(),
        })
    }

    /// The `Host` header's value: the port only when it is not 443.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `host:port` for messages.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host_header_host(), self.port)
    }

    fn host_header_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The request target with `query` (already encoded) after `?`: the URL
    /// holds no query of its own.
    pub fn target_with_query(&self, query: &str) -> String {
        format!("{}?{query}", self.path)
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str, host: &str, port: u16, path: &str) {
        let e = Endpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            (host, port, path),
            "{url}"
        );
    }

    #[test]
    fn parses_good_urls() {
        ok(
            "https://maps.googleapis.com/maps/api/place/nearbysearch/json",
            "maps.googleapis.com",
            443,
            "/maps/api/place/nearbysearch/json",
        );
        ok(
            "https://places.googleapis.com/v1/places:searchNearby",
            "places.googleapis.com",
            443,
            "/v1/places:searchNearby",
        );
        ok("https://LocalHost:8443/x", "localhost", 8443, "/x");
        ok("https://localhost/", "localhost", 443, "/");
        ok("https://127.0.0.1:1/", "127.0.0.1", 1, "/");
        ok("https://[::1]:9/v1", "::1", 9, "/v1");
        ok("https://[::1]/v1", "::1", 443, "/v1");
        ok("https://[::FFFF:7F00:1]/v1", "::ffff:7f00:1", 443, "/v1");
    }

    #[test]
    fn literal_ips_are_recognised() {
        assert!(Endpoint::parse("https://127.0.0.1/").unwrap().ip.is_some());
        assert!(Endpoint::parse("https://[::1]/").unwrap().ip.is_some());
        assert!(Endpoint::parse("https://localhost/").unwrap().ip.is_none());
    }

    #[test]
    fn refuses_bad_urls() {
        // addr's tests hold the rules; these are the URLs this parser once
        // took that herd.conf never did, now refused by both.
        for url in [
            "HTTPS://LocalHost:8443/x",
            "https://localhost:8443",
            "https://localhost",
            "https://h/p?a=b#frag",
            "https://h?a=b",
            "https://h/p?a=b",
            "https://a_b/p",
            "https://h.example./p",
            "https://01.2.3.4/p",
            "https://::1:443/p",
            "https://h/caf\u{e9}",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
        for url in [
            "http://h/p",
            "h/p",
            "https:///p",
            "https://h:0/p",
            "https://h:65536/p",
            "https://h:/p",
            "https://h:x/p",
            "https://user@h/p",
            "https://[::1/p",
            "https://[nope]/p",
            "https://[::1]x/p",
            "https://h h/p",
            "https://h/p q",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
        assert_eq!(
            Endpoint::parse("http://h/p").unwrap_err().to_string(),
            "bad Places URL \"http://h/p\": want https://HOST[:PORT]/PATH"
        );
    }

    #[test]
    fn host_header_and_targets() {
        let e = Endpoint::parse("https://h:8443/p").unwrap();
        assert_eq!(e.host_header(), "h:8443");
        assert_eq!(e.target_with_query("a=1"), "/p?a=1");
        let e = Endpoint::parse("https://h/p").unwrap();
        assert_eq!(e.host_header(), "h");
        assert_eq!(e.authority(), "h:443");
        let e = Endpoint::parse("https://[::1]:9/").unwrap();
        assert_eq!(e.host_header(), "[::1]:9");
        assert_eq!(e.authority(), "[::1]:9");
        assert_eq!(e.target_with_query("a=1"), "/?a=1");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("AIza-Sy_0.~"), "AIza-Sy_0.~");
        assert_eq!(percent_encode("a b&c=d+é"), "a%20b%26c%3Dd%2B%C3%A9");
    }
}
