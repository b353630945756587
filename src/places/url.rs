//! The Places endpoint URL (`https://HOST[:PORT]/PATH[?QUERY]`), parsed by
//! hand, and the percent-encoding of query values.

use std::fmt;
use std::net::IpAddr;

/// A parsed `https` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// A DNS name (lower-cased) or an IP literal (IPv6 without brackets).
    pub host: String,
    /// The host as an IP address, when it is a literal: no DNS lookup needed.
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The path and query, never empty: `/maps/api/place/nearbysearch/json`.
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
    /// Parses `https://HOST[:PORT][/PATH][?QUERY][#FRAGMENT]`; the port
    /// defaults to 443, the path to `/`, a fragment is dropped.
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let err = |what: &str| Err(UrlError(format!("bad Places URL {url:?}: {what}")));
        let Some(scheme_end) = url.find("://") else {
            return err("expected https://HOST[:PORT]/PATH");
        };
        if !url[..scheme_end].eq_ignore_ascii_case("https") {
            return err("only https is supported");
        }
        let rest = &url[scheme_end + 3..];
        let rest = rest.split('#').next().unwrap_or("");
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        if authority.contains('@') {
            return err("user information is not supported");
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return err("the path holds white space or control characters");
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some(close) = bracketed.find(']') else {
                return err("unclosed [ in the host");
            };
            let host = &bracketed[..close];
            let after = &bracketed[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return err("junk after the IPv6 address"),
            };
            match host.parse::<std::net::Ipv6Addr>() {
                Ok(_) => (host, port),
                Err(_) => return err("bad IPv6 address"),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return err("no host");
        }
        let port = match port {
            None => 443,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u16>() {
                    Ok(port) if port != 0 => port,
                    _ => return err("port out of range"),
                }
            }
            Some(_) => return err("bad port"),
        };
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_none()
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return err("bad host name");
        }
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Endpoint {
            host: host.to_ascii_lowercase(),
            ip,
            port,
            path,
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

    /// The request target with `query` (already encoded) appended after `?`
    /// or, when the URL has a query already, after `&`.
    pub fn target_with_query(&self, query: &str) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", self.path)
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
        ok("HTTPS://LocalHost:8443/x", "localhost", 8443, "/x");
        ok("https://localhost:8443", "localhost", 8443, "/");
        ok("https://localhost", "localhost", 443, "/");
        ok("https://h/p?a=b#frag", "h", 443, "/p?a=b");
        ok("https://h?a=b", "h", 443, "/?a=b");
        ok("https://127.0.0.1:1/", "127.0.0.1", 1, "/");
        ok("https://[::1]:9/v1", "::1", 9, "/v1");
        ok("https://[::1]/v1", "::1", 443, "/v1");
    }

    #[test]
    fn literal_ips_are_recognised() {
        assert!(Endpoint::parse("https://127.0.0.1/").unwrap().ip.is_some());
        assert!(Endpoint::parse("https://[::1]/").unwrap().ip.is_some());
        assert!(Endpoint::parse("https://localhost/").unwrap().ip.is_none());
    }

    #[test]
    fn refuses_bad_urls() {
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
    }

    #[test]
    fn host_header_and_targets() {
        let e = Endpoint::parse("https://h:8443/p").unwrap();
        assert_eq!(e.host_header(), "h:8443");
        assert_eq!(e.target_with_query("a=1"), "/p?a=1");
        let e = Endpoint::parse("https://h/p?x=y").unwrap();
        assert_eq!(e.host_header(), "h");
        assert_eq!(e.target_with_query("a=1"), "/p?x=y&a=1");
        let e = Endpoint::parse("https://[::1]:9/").unwrap();
        assert_eq!(e.host_header(), "[::1]:9");
        assert_eq!(e.authority(), "[::1]:9");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("AIza-Sy_0.~"), "AIza-Sy_0.~");
        assert_eq!(percent_encode("a b&c=d+é"), "a%20b%26c%3Dd%2B%C3%A9");
    }
}
