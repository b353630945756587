//! The API token of `api_token_env` (docs/PROTOCOL.md §14.4): HTTP and
//! WebSocket requests carry it as `Authorization: Bearer TOKEN` or as a
//! `token=` query parameter, and it is compared in constant time.

use std::fmt;

/// A token HTTP requests must present. Never printed: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Box<[u8]>);

impl Token {
    /// The token `bytes`.
    pub fn new(bytes: &[u8]) -> Token {
        Token(bytes.into())
    }

    /// Whether `given` is the token, in time that depends only on the
    /// lengths (never on where the first difference is).
    pub fn matches(&self, given: &[u8]) -> bool {
        if given.len() != self.0.len() {
            return false;
        }
        self.0
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn only_the_token_itself_matches() {
        let t = Token::new(b"s3cret");
        assert!(t.matches(b"s3cret"));
        for other in [&b""[..], b"s3cre", b"s3cret!", b"S3cret", b"x3cret"] {
            assert!(!t.matches(other), "{other:?}");
        }
        assert_eq!(format!("{t:?}"), "Token(..)");
    }
}
