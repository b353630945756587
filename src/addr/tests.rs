//! One test per case, like httparse's `req!` tables: a failing case names
//! itself, and a new rule is one more line.

use super::*;
use AddrError::*;

fn ip(text: &str) -> Host {
    Host::Ip(text.parse().unwrap())
}

fn name(text: &str) -> Host {
    Host::Name(text.to_string())
}

fn s(text: &str) -> String {
    text.to_string()
}

/// `name: "HOST:PORT" => Ok((host as written, host, port)) | Err(error);`
macro_rules! host_port {
    ($($test:ident: $text:expr => $expected:expr;)*) => {$(
        #[test]
        fn $test() {
            let got = host_port($text).map(|a| (a.host_text, a.host, a.port));
            assert_eq!(got, $expected, "{:?}", $text);
        }
    )*};
}

/// `name: "URL" => Ok((host as written, host, port, path)) | Err(error);`
macro_rules! https_url {
    ($($test:ident: $text:expr => $expected:expr;)*) => {$(
        #[test]
        fn $test() {
            let got = https_url($text)
                .map(|u| (u.authority.host_text, u.authority.host, u.authority.port, u.path));
            assert_eq!(got, $expected, "{:?}", $text);
        }
    )*};
}

host_port! {
    hp_ipv4: "127.0.0.1:12000" => Ok(("127.0.0.1", ip("127.0.0.1"), 12000));
    hp_ipv4_any: "0.0.0.0:65535" => Ok(("0.0.0.0", ip("0.0.0.0"), 65535));
    hp_ipv6: "[::1]:1" => Ok(("::1", ip("::1"), 1));
    hp_ipv6_by_value: "[0:0::1]:1" => Ok(("0:0::1", ip("::1"), 1));
    hp_ipv6_mapped: "[::ffff:127.0.0.1]:3" => Ok(("::ffff:127.0.0.1", ip("::ffff:127.0.0.1"), 3));
    hp_name: "localhost:4" => Ok(("localhost", name("localhost"), 4));
    hp_name_case: "x-1.EXAMPLE.org:6" => Ok(("x-1.EXAMPLE.org", name("x-1.example.org"), 6));
    hp_name_digits: "1a.2b:7" => Ok(("1a.2b", name("1a.2b"), 7));
    hp_name_numeric_label: "a.1:7" => Ok(("a.1", name("a.1"), 7));
    hp_port_zeros: "127.0.0.1:0008" => Ok(("127.0.0.1", ip("127.0.0.1"), 8));

    hp_no_port: "127.0.0.1" => Err(MissingPort);
    hp_no_port_ipv6: "[::1]" => Err(MissingPort);
    hp_empty_port: "h:" => Err(EmptyPort);
    hp_empty_host: ":1" => Err(EmptyHost);
    hp_empty: "" => Err(EmptyHost);
    hp_port_zero: "h:0" => Err(BadPort(s("0")));
    hp_port_big: "h:65536" => Err(BadPort(s("65536")));
    hp_port_plus: "h:+80" => Err(BadPort(s("+80")));
    hp_port_name: "h:http" => Err(BadPort(s("http")));
    hp_port_space: "h: 80" => Err(BadPort(s(" 80")));
    hp_ipv4_range: "256.0.0.1:1" => Err(BadIpv4(s("256.0.0.1")));
    hp_ipv4_short: "1.2.3:1" => Err(BadIpv4(s("1.2.3")));
    hp_ipv4_octal: "01.2.3.4:1" => Err(BadIpv4(s("01.2.3.4")));
    hp_ipv4_dot: "1.2.3.4.:1" => Err(BadIpv4(s("1.2.3.4.")));
    hp_ipv6_bare: "::1:80" => Err(UnbracketedIpv6);
    hp_ipv6_bare_no_port: "::1" => Err(UnbracketedIpv6);
    hp_ipv6_unclosed: "[::1:80" => Err(UnclosedBracket);
    hp_ipv6_bad: "[::g]:80" => Err(BadIpv6(s("::g")));
    hp_ipv6_zone: "[fe80::1%eth0]:80" => Err(BadIpv6(s("fe80::1%eth0")));
    hp_ipv4_in_brackets: "[1.2.3.4]:80" => Err(BadIpv6(s("1.2.3.4")));
    hp_after_bracket: "[::1]80" => Err(AfterBracket);
    hp_underscore: "a_b:1" => Err(BadChar('_', s("a_b")));
    hp_user: "user@h:1" => Err(BadChar('@', s("user@h")));
    hp_non_ascii: "caf\u{e9}:1" => Err(BadChar('\u{e9}', s("caf\u{e9}")));
    hp_empty_label: "a..b:1" => Err(EmptyLabel(s("a..b")));
    hp_trailing_dot: "a.b.:1" => Err(EmptyLabel(s("a.b.")));
    hp_leading_hyphen: "-a.b:1" => Err(HyphenLabel(s("-a"), s("-a.b")));
    hp_trailing_hyphen: "a.b-:1" => Err(HyphenLabel(s("b-"), s("a.b-")));
}

https_url! {
    url_legacy: "https://maps.googleapis.com/maps/api/place/nearbysearch/json"
        => Ok(("maps.googleapis.com", name("maps.googleapis.com"), 443, "/maps/api/place/nearbysearch/json"));
    url_new: "https://places.googleapis.com/v1/places:searchNearby"
        => Ok(("places.googleapis.com", name("places.googleapis.com"), 443, "/v1/places:searchNearby"));
    url_port: "https://LocalHost:8443/x" => Ok(("LocalHost", name("localhost"), 8443, "/x"));
    url_root: "https://localhost/" => Ok(("localhost", name("localhost"), 443, "/"));
    url_ipv4: "https://127.0.0.1:1/" => Ok(("127.0.0.1", ip("127.0.0.1"), 1, "/"));
    url_ipv6: "https://[::1]:9/v1" => Ok(("::1", ip("::1"), 9, "/v1"));
    url_ipv6_default_port: "https://[::1]/v1" => Ok(("::1", ip("::1"), 443, "/v1"));
    url_path_chars: "https://h/a:b~c%20d" => Ok(("h", name("h"), 443, "/a:b~c%20d"));

    url_http: "http://h/x" => Err(NotHttps);
    url_scheme_case: "HTTPS://h/x" => Err(NotHttps);
    url_no_scheme: "maps.googleapis.com/x" => Err(NotHttps);
    url_no_path: "https://h" => Err(MissingPath);
    url_no_path_port: "https://localhost:8443" => Err(MissingPath);
    url_query_no_path: "https://h?a=b" => Err(MissingPath);
    url_empty_host: "https:///x" => Err(EmptyHost);
    url_port_zero: "https://h:0/x" => Err(BadPort(s("0")));
    url_port_big: "https://h:65536/p" => Err(BadPort(s("65536")));
    url_port_empty: "https://h:/p" => Err(EmptyPort);
    url_port_name: "https://h:x/p" => Err(BadPort(s("x")));
    url_user: "https://u@h/x" => Err(BadChar('@', s("u@h")));
    url_underscore: "https://a_b/x" => Err(BadChar('_', s("a_b")));
    url_space_in_host: "https://h h/p" => Err(BadChar(' ', s("h h")));
    url_trailing_dot: "https://h.example./x" => Err(EmptyLabel(s("h.example.")));
    url_ipv6_bare: "https://::1:443/x" => Err(UnbracketedIpv6);
    url_ipv6_unclosed: "https://[::1/p" => Err(UnclosedBracket);
    url_ipv6_bad: "https://[nope]/p" => Err(BadIpv6(s("nope")));
    url_after_bracket: "https://[::1]x/p" => Err(AfterBracket);
    url_ipv4_octal: "https://010.0.0.1/x" => Err(BadIpv4(s("010.0.0.1")));
    url_query: "https://h/x?key=1" => Err(Query);
    url_fragment: "https://h/p#frag" => Err(Fragment);
    url_space_in_path: "https://h/p q" => Err(BadPath);
    url_control_in_path: "https://h/p\x7f" => Err(BadPath);
    url_non_ascii_path: "https://h/caf\u{e9}" => Err(BadPath);
}

#[test]
fn long_names() {
    // 127 one-letter labels: 253 characters, the most allowed.
    let most = vec!["a"; 127].join(".");
    assert_eq!(host(&most), Ok(name(&most)));
    let too_long = vec!["a"; 128].join(".");
    assert_eq!(host(&too_long), Err(LongName));
    let label = "a".repeat(63);
    assert_eq!(host(&label), Ok(name(&label)));
    let label = "a".repeat(64);
    assert_eq!(host(&label), Err(LongLabel(label.clone())));
}

#[test]
fn messages() {
    // The words of herd.conf's errors (config's tests check them in place).
    let cases = [
        (EmptyHost, "empty host"),
        (MissingPort, "missing :PORT"),
        (EmptyPort, "missing port after :"),
        (BadPort(s("+80")), "bad port \"+80\", want 1 to 65535"),
        (BadIpv4(s("1.2.3")), "bad IPv4 address \"1.2.3\""),
        (
            UnbracketedIpv6,
            "an IPv6 address goes in brackets, like [::1]:12000",
        ),
        (UnclosedBracket, "missing ] after the IPv6 address"),
        (BadIpv6(s("::g")), "bad IPv6 address \"::g\""),
        (AfterBracket, "want :PORT after ]"),
        (
            BadChar('_', s("a_b")),
            "'_' not allowed in host name \"a_b\"",
        ),
        (EmptyLabel(s("a..b")), "empty label in host name \"a..b\""),
        (
            HyphenLabel(s("-a"), s("-a.b")),
            "label \"-a\" of host name \"-a.b\" starts or ends with '-'",
        ),
        (
            LongLabel(s("x")),
            "label longer than 63 characters in host name \"x\"",
        ),
        (LongName, "host name longer than 253 characters"),
        (NotHttps, "want https://HOST[:PORT]/PATH"),
        (MissingPath, "missing /PATH after the host"),
        (Query, "no query string allowed, the client adds its own"),
        (Fragment, "no #fragment allowed"),
        (BadPath, "the path must be printable ASCII"),
    ];
    for (error, message) in cases {
        assert_eq!(error.to_string(), message);
    }
}
