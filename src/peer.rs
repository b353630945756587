//! A connection's remote address as the connection keeps it.
//!
//! `std::net::SocketAddr` takes 32 bytes, sized for an IPv6 address with
//! its flow label and scope id. Every connection keeps its peer's address
//! for its whole life (for the log), and an idle connection is meant to
//! cost at most 200 bytes (docs/PERFORMANCE.md), so [`PeerAddr`] keeps
//! what the log shows in 18: the address as 16 bytes (IPv4 as an
//! IPv4-mapped IPv6 address) and the port. The flow label and the scope id
//! of a link-local IPv6 peer are not kept; a peer that connected from an
//! IPv4-mapped IPv6 address (a dual-stack listener) is shown as the IPv4
//! address it is.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A peer's IP address and port, in 18 bytes; see the module header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    ip: [u8; 16],
    port: [u8; 2],
}

impl PeerAddr {
    /// The address as std's type.
    pub fn get(self) -> SocketAddr {
        let v6 = Ipv6Addr::from(self.ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, u16::from_be_bytes(self.port))
    }

    /// The IP address alone.
    pub fn ip(self) -> IpAddr {
        self.get().ip()
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> PeerAddr {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        PeerAddr {
            ip: ip.octets(),
            port: a.port().to_be_bytes(),
        }
    }
}

impl Default for PeerAddr {
    /// `0.0.0.0:0`, for sessions with no socket (tests, benches, the fuzzer).
    fn default() -> PeerAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into()
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.get(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_small_and_shows_what_std_shows() {
        assert_eq!(std::mem::size_of::<PeerAddr>(), 18);
        for text in [
            "127.0.0.1:5000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:443",
            "[2001:db8::17]:12000",
            "[::]:1",
        ] {
            let a: SocketAddr = text.parse().unwrap();
            let p = PeerAddr::from(a);
            assert_eq!(p.get(), a);
            assert_eq!(p.to_string(), text);
            assert_eq!(p.ip(), a.ip());
        }
    }

    #[test]
    fn what_it_does_not_keep() {
        // A dual-stack listener's IPv4 peer is shown as IPv4.
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(PeerAddr::from(mapped).to_string(), "10.1.2.3:80");
        // The scope id and flow label are dropped.
        let scoped: SocketAddr = "[fe80::1%3]:80".parse().unwrap();
        assert_eq!(PeerAddr::from(scoped).to_string(), "[fe80::1]:80");
    }
}
