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

/// The herd of `text`, its servers' line numbers left out (0) so that the
/// tables below compare what was said, not where.
fn herd(text: &str) -> Herd {
    match parse(text) {
        Ok(mut herd) => {
            for s in &mut herd.servers {
                s.line = 0;
            }
            herd
        }
        Err(e) => panic!("{e}\n{text}"),
    }
}

#[test]
fn servers_remember_their_line() {
    let h = parse(REFERENCE).unwrap();
    let lines: Vec<usize> = h.servers.iter().map(|s| s.line).collect();
    assert_eq!(lines, [1, 2, 3, 4, 5]);
}

fn server(name: &str, host: &str, port: u16) -> ServerSpec {
    ServerSpec {
        name: name.to_string(),
        host: host.to_string(),
        port,
        line: 0,
        peer: None,
        tls: None,
        http: None,
        https: None,
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
        tls: None,
        public: None,
        api_token_env: None,
    };
    assert_eq!(herd, expected);
    // The table of docs/PROTOCOL.md §1.
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
    let mut loaded = Herd::load(&path).unwrap();
    // The file has a comment line first.
    assert_eq!(loaded.servers[0].line, 2);
    for s in &mut loaded.servers {
        s.line = 0;
    }
    assert_eq!(loaded, herd(REFERENCE));
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
        ("server A\n", 1, "wrong number of fields, want \"server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT] [http HOST:PORT] [https HOST:PORT]\""),
        ("server A h:1 B\n", 1, "wrong number of fields, want \"server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT] [http HOST:PORT] [https HOST:PORT]\""),
        ("server A h:1 B C D\n", 1, "wrong number of fields, want \"server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT] [http HOST:PORT] [https HOST:PORT]\""),
        ("server\n", 1, "wrong number of fields, want \"server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT] [http HOST:PORT] [https HOST:PORT]\""),
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
        // server: peer and tls ports.
        ("server A h:1 peer\n", 1, "wrong number of fields, want \"server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT] [http HOST:PORT] [https HOST:PORT]\""),
        (
            "server A h:1 peer h:2 tls h:3 peer\n",
            1,
            "wrong number of fields, want \"server NAME HOST:PORT [peer HOST:PORT] [tls HOST:PORT] [http HOST:PORT] [https HOST:PORT]\"",
        ),
        ("server A h:1 Peer h:2\n", 1, "unknown port kind \"Peer\", want peer, tls, http or https"),
        ("server A h:1 client h:2\n", 1, "unknown port kind \"client\", want peer, tls, http or https"),
        ("server A h:1 peer h:2 peer h:3\n", 1, "duplicate peer port on one server line"),
        ("server A h:1 tls h:2 peer h:3 tls h:4\n", 1, "duplicate tls port on one server line"),
        ("server A h:1 http h:2 http h:3\n", 1, "duplicate http port on one server line"),
        ("server A h:1 https h:2 http h:3 https h:4\n", 1, "duplicate https port on one server line"),
        ("server A h:1 http h\n", 1, "bad http address \"h\": missing :PORT"),
        ("server A h:1 http h:2 https H:2\n", 1, "duplicate address \"H:2\" (first used by the http port of \"A\" on line 1)"),
        // Client-facing TLS needs a certificate to present.
        (
            "server A h:1 https h:2\n",
            1,
            "server \"A\" has an https port, which needs a certificate: public_cert and public_key, or tls_cert, tls_key and tls_ca",
        ),
        ("server A h:1\npublic_cert p.pem\n", 2, "public_cert without public_key"),
        ("public_key p.key\nserver A h:1\n", 1, "public_key without public_cert"),
        ("server A h:1\npublic_cert a\npublic_key b\npublic_cert c\n", 4, "duplicate public_cert (first on line 2)"),
        ("server A h:1\napi_token_env 9LIVES\n", 2, "bad variable name \"9LIVES\": want letters, digits and _, not starting with a digit"),
        ("server A h:1\napi_token_env A B\n", 2, "wrong number of fields, want \"api_token_env VAR\""),
        ("server A h:1 peer h\n", 1, "bad peer address \"h\": missing :PORT"),
        ("server A h:1 tls h:0\n", 1, "bad tls address \"h:0\": bad port \"0\", want 1 to 65535"),
        ("server A h:1 peer ::1:2\n", 1, "bad peer address \"::1:2\": an IPv6 address goes in brackets, like [::1]:12000"),
        // Every address of every server is used once.
        (
            "server A 127.0.0.1:1 peer 127.0.0.1:1\n",
            1,
            "duplicate address \"127.0.0.1:1\" (first used by \"A\" on line 1)",
        ),
        (
            "server A h:1 peer h:2 tls H:02\n",
            1,
            "duplicate address \"H:02\" (first used by the peer port of \"A\" on line 1)",
        ),
        (
            "server A h:1 peer h:2\nserver B h:2\n",
            2,
            "duplicate address \"h:2\" (first used by the peer port of \"A\" on line 1)",
        ),
        (
            "server A h:1 tls [::1]:2\nserver B h:3 peer [0::1]:2\n",
            2,
            "duplicate address \"[0::1]:2\" (first used by the tls port of \"A\" on line 1)",
        ),
        (
            "server A h:1\nserver B h:2 tls h:1\n",
            2,
            "duplicate address \"h:1\" (first used by \"A\" on line 1)",
        ),
        (
            "server A h:1 peer h:2\nserver B h:3 peer h:4\nserver C h:5 tls h:4\n",
            3,
            "duplicate address \"h:4\" (first used by the peer port of \"B\" on line 2)",
        ),
        // The same host on another port, or another host on the same port, is fine:
        // see `peer_and_tls_ports`. A duplicate name is reported before its addresses.
        (
            "server A h:1 peer h:2\nserver A h:2\n",
            2,
            "duplicate server name \"A\" (first on line 1)",
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
        // tls_cert, tls_key, tls_ca.
        ("server A h:1 peer h:2\ntls_cert\n", 2, "wrong number of fields, want \"tls_cert PATH\""),
        ("server A h:1 peer h:2\ntls_key a b\n", 2, "wrong number of fields, want \"tls_key PATH\""),
        ("server A h:1 peer h:2\ntls_ca\n", 2, "wrong number of fields, want \"tls_ca PATH\""),
        (
            "server A h:1 peer h:2\ntls_cert a\ntls_cert b\n",
            3,
            "duplicate tls_cert (first on line 2)",
        ),
        (
            "server A h:1 peer h:2\ntls_cert c\ntls_key k\ntls_ca a\ntls_key k\n",
            5,
            "duplicate tls_key (first on line 3)",
        ),
        (
            "server A h:1 peer h:2\ntls_ca a\ntls_ca a\n",
            3,
            "duplicate tls_ca (first on line 2)",
        ),
        // Only some of the three: on the line of the first given.
        (
            "server A h:1 peer h:2\n\ntls_cert c\n",
            3,
            "incomplete TLS settings: tls_key and tls_ca missing (TLS needs tls_cert, tls_key and tls_ca)",
        ),
        (
            "server A h:1 peer h:2\ntls_ca a\ntls_key k\n",
            2,
            "incomplete TLS settings: tls_cert missing (TLS needs tls_cert, tls_key and tls_ca)",
        ),
        (
            "server A h:1 peer h:2\ntls_key k\ntls_cert c\n",
            2,
            "incomplete TLS settings: tls_ca missing (TLS needs tls_cert, tls_key and tls_ca)",
        ),
        (
            "tls_key k\nserver A h:1 peer h:2\n",
            1,
            "incomplete TLS settings: tls_cert and tls_ca missing (TLS needs tls_cert, tls_key and tls_ca)",
        ),
        // TLS wants a peer port somewhere, and NAMEs a certificate can carry.
        (
            "server A h:1 tls h:3\nserver B h:2\ntls_ca a\ntls_cert c\ntls_key k\n",
            3,
            "TLS settings but no server has a peer port (TLS herd links go to peer ports)",
        ),
        (
            "server A h:1 peer h:2\nserver B_1! h:3\ntls_cert c\ntls_key k\ntls_ca a\n",
            2,
            "server name \"B_1!\" is not a DNS name, which TLS needs: certificates name servers as DNS names",
        ),
        (
            "server 10.0.0.1 h:1 peer h:2\ntls_cert c\ntls_key k\ntls_ca a\n",
            1,
            "server name \"10.0.0.1\" is not a DNS name, which TLS needs: certificates name servers as DNS names",
        ),
        (
            "server A h:1 peer h:2\nserver B h:3 tls h:4\n",
            2,
            "server \"B\" has a tls port, which needs a certificate: public_cert and public_key, or tls_cert, tls_key and tls_ca",
        ),
        // Links are checked before TLS.
        (
            "server A h:1\ntls_cert c\nlink A B\n",
            3,
            "unknown server \"B\" in link",
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
    let expected =
        format!("bad address \"{host}:1\": label longer than 63 characters in host name {host:?}");
    assert_eq!(e.message, expected);
    let name = vec!["a"; 128].join("."); // 255 characters
    let e = parse(&format!("server A {name}:1")).unwrap_err();
    assert_eq!(
        e.message,
        format!("bad address \"{name}:1\": host name longer than 253 characters")
    );
}

#[test]
fn peer_and_tls_ports() {
    let text = "server A 127.0.0.1:1 peer 127.0.0.1:2 tls [::1]:1\n\
                server B 127.0.0.1:3 tls 127.0.0.2:2 peer h:2\n\
                server C h:3 peer h:4\n\
                server D h:5\n\
                tls_cert c\ntls_key k\ntls_ca a\n";
    let herd = herd(text);
    let endpoint = |host: &str, port| {
        Some(Endpoint {
            host: host.to_string(),
            port,
        })
    };
    let expected = [
        ServerSpec {
            peer: endpoint("127.0.0.1", 2),
            tls: endpoint("::1", 1),
            ..server("A", "127.0.0.1", 1)
        },
        ServerSpec {
            peer: endpoint("h", 2),
            tls: endpoint("127.0.0.2", 2),
            ..server("B", "127.0.0.1", 3)
        },
        ServerSpec {
            peer: endpoint("h", 4),
            ..server("C", "h", 3)
        },
        server("D", "h", 5),
    ];
    assert_eq!(herd.servers, expected);
    assert_eq!(herd.servers[0].tls.as_ref().unwrap().address(), "[::1]:1");
    assert_eq!(herd.servers[1].peer.as_ref().unwrap().address(), "h:2");
    assert!(herd.tls.is_some());
    // A peer port needs no TLS.
    let plain = self::herd("server A h:1 peer h:2\nserver B h:3\n");
    assert_eq!(plain.servers[0].peer, endpoint("h", 2));
    assert_eq!(plain.tls, None);
}

#[test]
fn http_ports_public_certificate_and_token() {
    let herd = herd(
        "server A 127.0.0.1:1 http 127.0.0.1:2 https [::1]:3\nserver B h:4 https h:5\npublic_cert certs/{name}.pem\npublic_key /k/{name}.key\napi_token_env HERD_TOKEN\n",
    );
    let endpoint = |host: &str, port| {
        Some(Endpoint {
            host: host.to_string(),
            port,
        })
    };
    assert_eq!(herd.servers[0].http, endpoint("127.0.0.1", 2));
    assert_eq!(herd.servers[0].https, endpoint("::1", 3));
    assert_eq!(herd.servers[1].http, None);
    assert_eq!(herd.servers[1].https, endpoint("h", 5));
    let public = herd.public.expect("public files");
    assert_eq!(
        public.cert,
        (3, Path::new("conf/certs/{name}.pem").to_path_buf())
    );
    assert_eq!(public.key, (4, Path::new("/k/{name}.key").to_path_buf()));
    assert_eq!(herd.api_token_env.as_deref(), Some("HERD_TOKEN"));
    // Public files alone are enough for tls and https ports: no herd TLS,
    // no peer port needed.
    assert!(herd.tls.is_none());
}

#[test]
fn tls_files() {
    let text = "server Goloman h:1 peer h:2\n\
                server Hands h:3\n\
                tls_key keys/{name}.key # per server\n\
                tls_cert /etc/herd/{name}.pem\n\
                tls_ca ca.pem\n";
    let tls = herd(text).tls.expect("TLS files");
    let expected = TlsFiles {
        cert: (4, PathBuf::from("/etc/herd/{name}.pem")),
        key: (3, PathBuf::from("conf/keys/{name}.key")),
        ca: (5, PathBuf::from("conf/ca.pem")),
    };
    assert_eq!(tls, expected);
    assert_eq!(
        TlsFiles::for_server(&tls.key.1, "Hands"),
        PathBuf::from("conf/keys/Hands.key")
    );
    assert_eq!(
        TlsFiles::for_server(&tls.ca.1, "Hands"),
        PathBuf::from("conf/ca.pem")
    );
    assert_eq!(
        TlsFiles::for_server(Path::new("{name}/{name}.pem"), "a.b"),
        PathBuf::from("a.b/a.b.pem")
    );

    // A config in the current folder: paths stay relative to it.
    let here = Herd::parse(
        "server A h:1 peer h:2\ntls_cert c.pem\ntls_key k.pem\ntls_ca a.pem\n",
        Path::new("herd.conf"),
    )
    .unwrap();
    assert_eq!(here.tls.unwrap().cert.1, PathBuf::from("c.pem"));
}

#[test]
fn dns_names() {
    for good in ["Goloman", "a-b.c", "x1", "kiwi.cs.ucla.edu", "a_b"] {
        assert!(is_dns_name(good), "{good}");
    }
    for bad in ["127.0.0.1", "::1", "-a", "a..b", "a!", "a~b", "[x]"] {
        assert!(!is_dns_name(bad), "{bad}");
    }
}

#[test]
fn numeric_dns_names() {
    for (name, ok) in [
        ("123", false),
        ("a.123", false),
        ("123.a", true),
        ("0x1f", false),
        ("1a", true),
    ] {
        assert_eq!(is_dns_name(name), ok, "{name}");
    }
}
