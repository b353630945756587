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
