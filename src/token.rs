//! The map of a server's `mio` tokens: every range in one place.
//!
//! | range                                   | what                                   |
//! |-----------------------------------------|----------------------------------------|
//! | `0 .. CLIENT_SPAN`                      | client connections (their slab keys)   |
//! | `LINK_BASE .. LINK_BASE + LINK_SPAN`    | outbound herd links (neighbour slots)  |
//! | `PLACES_BASE .. PLACES_BASE + PLACES_SPAN` | Places HTTPS connections (their slab keys) |
//! | [`WAKER`], the five listeners           | fixed, at the top of the range         |
//!
//! The guard that keeps them apart: each owner turns its own index into a
//! token through this module (`client`, `link`, `places`), which refuses an
//! index past its span, and [`classify`] is the one place that turns a
//! token back into its owner. The spans are checked at compile time not to
//! overlap.

use mio::Token;

use crate::engine::Port;

/// Client connection keys are below this.
pub const CLIENT_SPAN: usize = 1 << 32;
/// Outbound link tokens start here.
pub const LINK_BASE: usize = 1 << 32;
/// How many link slots a server may have.
pub const LINK_SPAN: usize = 1 << 20;
/// Places connection tokens start here.
pub const PLACES_BASE: usize = 1 << 40;
/// How many Places connections a server may have at once.
pub const PLACES_SPAN: usize = 1 << 20;
/// The first of the fixed tokens; everything from here up is named below.
pub const FIXED_BASE: usize = usize::MAX - 15;

/// The listener for plaintext client connections.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// The listener for herd links (a server's `peer` port).
pub const PEER_LISTENER: Token = Token(usize::MAX - 3);
/// The listener for TLS client connections (a server's `tls` port).
pub const TLS_LISTENER: Token = Token(usize::MAX - 4);
/// The listener for HTTP and WebSocket (a server's `http` port).
pub const HTTP_LISTENER: Token = Token(usize::MAX - 5);
/// The listener for HTTPS and secure WebSocket (a server's `https` port).
pub const HTTPS_LISTENER: Token = Token(usize::MAX - 6);
/// The waker: stop and reload requests, Places' helper-thread results.
pub const WAKER: Token = Token(usize::MAX - 2);

const _: () = {
    assert!(CLIENT_SPAN <= LINK_BASE);
    assert!(LINK_BASE + LINK_SPAN <= PLACES_BASE);
    assert!(PLACES_BASE + PLACES_SPAN <= FIXED_BASE);
    assert!(WAKER.0 >= FIXED_BASE && LISTENER.0 >= FIXED_BASE);
    assert!(PEER_LISTENER.0 >= FIXED_BASE && TLS_LISTENER.0 >= FIXED_BASE);
    assert!(HTTP_LISTENER.0 >= FIXED_BASE && HTTPS_LISTENER.0 >= FIXED_BASE);
};

/// Who a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A client connection (slab key).
    Client(usize),
    /// An outbound herd link (its slot).
    Link(usize),
    /// A Places connection (its slab key in the Places client).
    Places(usize),
    /// One of the listeners.
    Listener(Port),
    Waker,
    /// A token no range claims: an event to ignore.
    Unknown,
}

/// The owner of `token`.
pub fn classify(token: Token) -> Owner {
    match token.0 {
        k if k < CLIENT_SPAN => Owner::Client(k),
        t if (LINK_BASE..LINK_BASE + LINK_SPAN).contains(&t) => Owner::Link(t - LINK_BASE),
        t if (PLACES_BASE..PLACES_BASE + PLACES_SPAN).contains(&t) => {
            Owner::Places(t - PLACES_BASE)
        }
        _ if token == LISTENER => Owner::Listener(Port::Client),
        _ if token == PEER_LISTENER => Owner::Listener(Port::Peer),
        _ if token == TLS_LISTENER => Owner::Listener(Port::Tls),
        _ if token == HTTP_LISTENER => Owner::Listener(Port::Http),
        _ if token == HTTPS_LISTENER => Owner::Listener(Port::Https),
        _ if token == WAKER => Owner::Waker,
        _ => Owner::Unknown,
    }
}

/// The token of the listener for `port`.
pub fn listener(port: Port) -> Token {
    match port {
        Port::Client => LISTENER,
        Port::Peer => PEER_LISTENER,
        Port::Tls => TLS_LISTENER,
        Port::Http => HTTP_LISTENER,
        Port::Https => HTTPS_LISTENER,
    }
}

/// The token of client connection `key`, if the key fits its range.
pub fn client(key: usize) -> Option<Token> {
    (key < CLIENT_SPAN).then_some(Token(key))
}

/// The token of link slot `slot`, if it fits its range.
pub fn link(slot: usize) -> Option<Token> {
    (slot < LINK_SPAN).then_some(Token(LINK_BASE + slot))
}

/// The token of Places connection `key`, if it fits its range.
pub fn places(key: usize) -> Option<Token> {
    (key < PLACES_SPAN).then_some(Token(PLACES_BASE + key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_maps_back_to_its_owner() {
        for k in [0, 1, CLIENT_SPAN - 1] {
            assert_eq!(classify(client(k).unwrap()), Owner::Client(k));
        }
        for s in [0, 7, LINK_SPAN - 1] {
            assert_eq!(classify(link(s).unwrap()), Owner::Link(s));
        }
        for k in [0, 9, PLACES_SPAN - 1] {
            assert_eq!(classify(places(k).unwrap()), Owner::Places(k));
        }
        for port in Port::ALL {
            assert_eq!(classify(listener(port)), Owner::Listener(port));
        }
        assert_eq!(classify(WAKER), Owner::Waker);
        assert_eq!(classify(Token(FIXED_BASE - 1)), Owner::Unknown);
    }

    #[test]
    fn indices_past_a_span_get_no_token() {
        assert_eq!(client(CLIENT_SPAN), None);
        assert_eq!(link(LINK_SPAN), None);
        assert_eq!(places(PLACES_SPAN), None);
    }
}
