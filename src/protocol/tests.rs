//! Table tests of the parser and the writers.
use super::*;

/// Shows a line with its non-printable bytes escaped, for failure messages.
fn show(line: &[u8]) -> String {
    line.escape_ascii().to_string()
}

fn iamat_of(line: &[u8]) -> Iamat<'_> {
    match parse(line) {
        Command::Iamat(i) => i,
        other => panic!("{}: expected IAMAT, got {other:?}", show(line)),
    }
}

const S: Nanos = 1_000_000_000;

/// A byte string in a test table.
type Bytes = &'static [u8];

#[test]
fn space_bytes() {
    let spaces: Vec<u8> = (0..=255u8).filter(|&b| is_space(b)).collect();
    assert_eq!(spaces, b"\t\n\x0b\x0c\r ");
}

#[test]
fn iamat_valid() {
    let line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";
    let expected = Iamat {
        client: b"kiwi.cs.ucla.edu",
        coords: b"+34.068930-118.445127",
        time: b"1520023934.918963997",
        position: Position {
            lat: b"34.068930",
            lng: b"-118.445127",
        },
        sent_at: 1520023934 * S + 918963997,
    };
    assert_eq!(parse(line), Command::Iamat(expected));
}

#[test]
fn iamat_clients() {
    // Any run of non-white-space bytes, UTF-8 or not.
    let cases: &[&[u8]] = &[
        b"c",
        b"\xff\xfe",
        b"\x00\x1f\x7f\x85\xa0",
        b"IAMAT",
        b"+1+1",
        b"\xe2\x82\xac",
    ];
    for &client in cases {
        let line = [&b"IAMAT "[..], client, b" +1+1 1"].concat();
        assert_eq!(iamat_of(&line).client, client, "{}", show(&line));
    }
}

#[test]
fn coords_valid() {
    // COORDS -> lat, lng (a `+` dropped, a `-` kept).
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        ("+34.068930-118.445127", "34.068930", "-118.445127"),
        ("-33.86+151.2", "-33.86", "151.2"),
        ("+0+0", "0", "0"),
        ("-0-0", "-0", "-0"),
        ("+0.0-0.000", "0.0", "-0.000"),
        // Integer and fractional degrees mixed.
        ("+1.5-2", "1.5", "-2"),
        ("-1+2.25", "-1", "2.25"),
        // The bounds, exactly, with and without fraction zeros.
        ("+90+180", "90", "180"),
        ("-90-180", "-90", "-180"),
        ("+90.0000-180.000000", "90.0000", "-180.000000"),
        ("-90.0+180.00000000000000000000", "-90.0", "180.00000000000000000000"),
        ("+89.999999999+179.9999999999", "89.999999999", "179.9999999999"),
        ("-89.99999999999999999999-179.99999999999999999999",
         "-89.99999999999999999999", "-179.99999999999999999999"),
        // Leading zeros, any number of them.
        ("+034.5-0000000000000000000000118.4", "034.5", "-0000000000000000000000118.4"),
        ("+00090.0+00180", "00090.0", "00180"),
        ("+000000000000000000000+00000000000000000000000", "000000000000000000000", "00000000000000000000000"),
    ];
    for &(coords, lat, lng) in cases {
        let line = format!("IAMAT c {coords} 1");
        let i = iamat_of(line.as_bytes());
        assert_eq!(i.coords, coords.as_bytes(), "{line}");
        let position = Position {
            lat: lat.as_bytes(),
            lng: lng.as_bytes(),
        };
        assert_eq!(i.position, position, "{line}");
    }
}

#[test]
fn iamat_time() {
    // 0 to 9 fraction digits, leading zeros, 18 integer digits.
    let cases: &[(&[u8], Nanos)] = &[
        (b"0", 0),
        (b"0.0", 0),
        (b"5", 5 * S),
        (b"5.1", 5 * S + 100_000_000),
        (b"5.12", 5 * S + 120_000_000),
        (b"5.123", 5 * S + 123_000_000),
        (b"5.1234", 5 * S + 123_400_000),
        (b"5.12345", 5 * S + 123_450_000),
        (b"5.123456", 5 * S + 123_456_000),
        (b"5.1234567", 5 * S + 123_456_700),
        (b"5.12345678", 5 * S + 123_456_780),
        (b"5.123456789", 5 * S + 123_456_789),
        (b"5.000000001", 5 * S + 1),
        (b"0.999999999", S - 1),
        (b"0000000001.5", S + S / 2),
        (b"999999999999999999", 999_999_999_999_999_999 * S),
        (
            b"999999999999999999.999999999",
            999_999_999_999_999_999 * S + S - 1,
        ),
        (b"000000000000000000", 0),
    ];
    for &(time, nanos) in cases {
        let mut line = b"IAMAT c +1+1 ".to_vec();
        line.extend_from_slice(time);
        let i = iamat_of(&line);
        assert_eq!(i.sent_at, nanos, "{}", show(time));
        assert_eq!(i.time, time);
    }
}

#[test]
fn iamat_invalid() {
    let cases: &[&[u8]] = &[
        // Field count.
        b"IAMAT",
        b"IAMAT c",
        b"IAMAT c +1+1",
        b"IAMAT c +1+1 1 extra",
        b"IAMAT c +1+1 1 a b c d e f g",
        // Case and spelling.
        b"iamat c +1+1 1",
        b"Iamat c +1+1 1",
        b"IAMAT: c +1+1 1",
        b"IAMATc +1+1 1",
        // Signs: missing, doubled, both.
        b"IAMAT c 1+1 1",
        b"IAMAT c +1 1",
        b"IAMAT c +11 1",
        b"IAMAT c 34.068930-118.445127 1",
        b"IAMAT c ++1+1 1",
        b"IAMAT c +1++1 1",
        b"IAMAT c +-1+1 1",
        b"IAMAT c +1+-1 1",
        b"IAMAT c -+1+1 1",
        b"IAMAT c +1+1+1 1",
        b"IAMAT c +1+1- 1",
        b"IAMAT c +1+ 1",
        b"IAMAT c + +1 1",
        b"IAMAT c +1- 1",
        b"IAMAT c + 1",
        b"IAMAT c +- 1",
        // Ranges past the bounds.
        b"IAMAT c +90.0000000000000001+0 1",
        b"IAMAT c -90.0000000000000001+0 1",
        b"IAMAT c +90.1+0 1",
        b"IAMAT c +91+0 1",
        b"IAMAT c +100+0 1",
        b"IAMAT c +0+180.0000000000000001 1",
        b"IAMAT c +0-180.0000000000000001 1",
        b"IAMAT c +0+181 1",
        b"IAMAT c +0-1000 1",
        b"IAMAT c +0+99999999999999999999999999 1",
        b"IAMAT c +00000000000000000091+0 1",
        // Dots without digits, stray characters.
        b"IAMAT c +.5+1 1",
        b"IAMAT c +5.+1 1",
        b"IAMAT c +1+.5 1",
        b"IAMAT c +1+5. 1",
        b"IAMAT c +.+1 1",
        b"IAMAT c +1.2.3+1 1",
        b"IAMAT c +1,5+1 1",
        b"IAMAT c +1e1+1 1",
        b"IAMAT c +1+1e1 1",
        b"IAMAT c +1+1x 1",
        b"IAMAT c +\xff+1 1",
        b"IAMAT c +\xd9\xa1+1 1",
        // TIME: signs, exponents, dots, too many digits.
        b"IAMAT c +1+1 -1",
        b"IAMAT c +1+1 +1",
        b"IAMAT c +1+1 1e9",
        b"IAMAT c +1+1 .5",
        b"IAMAT c +1+1 5.",
        b"IAMAT c +1+1 .",
        b"IAMAT c +1+1 1.2.3",
        b"IAMAT c +1+1 1.1234567890",
        b"IAMAT c +1+1 1.000000000000",
        b"IAMAT c +1+1 1234567890123456789",
        b"IAMAT c +1+1 0000000000000000000",
        b"IAMAT c +1+1 x",
        b"IAMAT c +1+1 1_000",
    ];
    for &line in cases {
        assert_eq!(parse(line), Command::Invalid, "{}", show(line));
    }
}

#[test]
fn white_space() {
    let expected = iamat_of(b"IAMAT c +1+1 1");
    for sep in [
        &b" "[..],
        b"\t",
        b"\r",
        b"\n",
        b"\x0b",
        b"\x0c",
        b"  ",
        b" \t\x0b\x0c\r\n ",
    ] {
        let mut line = Vec::new();
        line.extend_from_slice(sep);
        for field in [&b"IAMAT"[..], b"c", b"+1+1", b"1"] {
            line.extend_from_slice(field);
            line.extend_from_slice(sep);
        }
        assert_eq!(parse(&line), Command::Iamat(expected), "{}", show(&line));
        // Without the white space around the line too.
        let inner = &line[sep.len()..line.len() - sep.len()];
        assert_eq!(parse(inner), Command::Iamat(expected), "{}", show(inner));
    }
    // CRLF: the `\n` is gone, the `\r` stays and is white space.
    assert_eq!(parse(b"IAMAT c +1+1 1\r"), Command::Iamat(expected));
    assert_eq!(parse(b"IAMAT c +1+1 1\r\r"), Command::Iamat(expected));
    // Bytes that look like space but are not the protocol's.
    for not_space in [
        &b"\x00"[..],
        b"\x1f",
        b"\x85",
        b"\xa0",
        b"\xc2\xa0",
        b"\xe3\x80\x80",
    ] {
        let mut line = b"IAMAT".to_vec();
        line.extend_from_slice(not_space);
        line.extend_from_slice(b"c +1+1 1");
        assert_eq!(parse(&line), Command::Invalid, "{}", show(&line));
    }
}

#[test]
fn blank() {
    let cases: &[&[u8]] = &[
        b"",
        b" ",
        b"\r",
        b"\t",
        b"\x0b",
        b"\x0c",
        b"\n",
        b" \t\r\n\x0b\x0c  \r",
    ];
    for &line in cases {
        assert_eq!(parse(line), Command::Blank, "{}", show(line));
    }
}

#[test]
fn unknown_commands() {
    let cases: &[&[u8]] = &[
        b"x",
        b"HELLO world",
        b"\xff\xfe",
        b"IAMATX c +1+1 1",
        b"WHATSATS c 10 5",
        b"ATT s +0.000000000 c +1+1 1",
        b"at s +0.000000000 c +1+1 1",
        b"herd Goloman",
        b"Herd Goloman",
        b"WHATSAT",
        b"AT",
        b"HERD",
        b"?",
        b"? IAMAT c +1+1 1",
        b"\x00IAMAT c +1+1 1",
    ];
    for &line in cases {
        assert_eq!(parse(line), Command::Invalid, "{}", show(line));
    }
}

#[test]
fn whatsat_valid() {
    #[rustfmt::skip]
    let cases: &[(Bytes, Bytes, Bytes, u8)] = &[
        (b"WHATSAT kiwi.cs.ucla.edu 10 5", b"kiwi.cs.ucla.edu", b"10", 5),
        (b"WHATSAT c 50 20", b"c", b"50", 20),
        (b"WHATSAT c 50.0 1", b"c", b"50.0", 1),
        (b"WHATSAT c 50.000000000000000000000 1", b"c", b"50.000000000000000000000", 1),
        (b"WHATSAT c 49.999999999999999999 1", b"c", b"49.999999999999999999", 1),
        (b"WHATSAT c 0.5 1", b"c", b"0.5", 1),
        (b"WHATSAT c 0.0001 1", b"c", b"0.0001", 1),
        (b"WHATSAT c 0.000000000000000000001 1", b"c", b"0.000000000000000000001", 1),
        (b"WHATSAT c 1 1", b"c", b"1", 1),
        (b"WHATSAT c 007 05", b"c", b"007", 5),
        (b"WHATSAT c 000000000000000000000050 000000000000000000020", b"c", b"000000000000000000000050", 20),
        (b"WHATSAT c 1.2345 19", b"c", b"1.2345", 19),
        (b"WHATSAT \xff\xfe 10 5", b"\xff\xfe", b"10", 5),
        (b"\tWHATSAT\x0bc\x0c10\r5\r", b"c", b"10", 5),
    ];
    for &(line, client, radius_km, bound) in cases {
        let expected = Whatsat {
            client,
            radius_km,
            bound,
        };
        assert_eq!(parse(line), Command::Whatsat(expected), "{}", show(line));
    }
}

#[test]
fn whatsat_invalid() {
    let cases: &[&[u8]] = &[
        b"WHATSAT c",
        b"WHATSAT c 10",
        b"WHATSAT c 10 5 5",
        b"whatsat c 10 5",
        // Radius.
        b"WHATSAT c 0 5",
        b"WHATSAT c 0.000 5",
        b"WHATSAT c 000 5",
        b"WHATSAT c 50.0001 5",
        b"WHATSAT c 50.00000000000000000001 5",
        b"WHATSAT c 51 5",
        b"WHATSAT c 100 5",
        b"WHATSAT c 99999999999999999999999 5",
        b"WHATSAT c -10 5",
        b"WHATSAT c +10 5",
        b"WHATSAT c .5 5",
        b"WHATSAT c 5. 5",
        b"WHATSAT c 1e1 5",
        b"WHATSAT c ten 5",
        b"WHATSAT c 10km 5",
        b"WHATSAT c 1.2.3 5",
        // Bound.
        b"WHATSAT c 10 0",
        b"WHATSAT c 10 00",
        b"WHATSAT c 10 21",
        b"WHATSAT c 10 100",
        b"WHATSAT c 10 4294967297",
        b"WHATSAT c 10 99999999999999999999999",
        b"WHATSAT c 10 -5",
        b"WHATSAT c 10 +5",
        b"WHATSAT c 10 5.0",
        b"WHATSAT c 10 5x",
        b"WHATSAT c 10 five",
    ];
    for &line in cases {
        assert_eq!(parse(line), Command::Invalid, "{}", show(line));
    }
}

#[test]
fn bound_range() {
    for bound in 0..=30u8 {
        let line = format!("WHATSAT c 10 {bound}");
        match parse(line.as_bytes()) {
            Command::Whatsat(w) => {
                assert!((1..=20).contains(&bound) && w.bound == bound, "{line}")
            }
            other => assert!(
                other == Command::Invalid && !(1..=20).contains(&bound),
                "{line}"
            ),
        }
    }
}

const AT_LINE: &[u8] =
    b"AT Goloman +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";

#[test]
fn at_valid() {
    let expected = At {
        server: b"Goloman",
        diff: b"+0.263873386",
        client: b"kiwi.cs.ucla.edu",
        coords: b"+34.068930-118.445127",
        time: b"1520023934.918963997",
        sent_at: 1520023934 * S + 918963997,
    };
    assert_eq!(parse(AT_LINE), Command::At(expected));
    let mut crlf = AT_LINE.to_vec();
    crlf.extend_from_slice(b"\r");
    assert_eq!(parse(&crlf), Command::At(expected));

    let cases: &[(&[u8], &[u8], Nanos)] = &[
        (b"AT s -0.000000123 c +1+1 1", b"-0.000000123", S),
        (
            b"AT s +123456789012.000000000 c +90-180 1.5",
            b"+123456789012.000000000",
            S + S / 2,
        ),
        (b"AT s -000.000000000 c +1+1 0", b"-000.000000000", 0),
        (
            b"AT \xff \x2b0.000000000 \xfe -1-1 7",
            b"+0.000000000",
            7 * S,
        ),
    ];
    for &(line, diff, sent_at) in cases {
        match parse(line) {
            Command::At(at) => {
                assert_eq!(at.diff, diff, "{}", show(line));
                assert_eq!(at.sent_at, sent_at, "{}", show(line));
            }
            other => panic!("{}: {other:?}", show(line)),
        }
    }
}

#[test]
fn at_invalid() {
    let cases: &[&[u8]] = &[
        // Field count.
        b"AT Goloman +0.263873386 kiwi +34.068930-118.445127",
        b"AT Goloman +0.263873386 kiwi +34.068930-118.445127 1520023934.918963997 x",
        b"AT +0.263873386 kiwi +34.068930-118.445127 1520023934.918963997",
        // DIFF.
        b"AT s 0.263873386 c +1+1 1",
        b"AT s ++0.263873386 c +1+1 1",
        b"AT s +0.26387338 c +1+1 1",
        b"AT s +0.2638733861 c +1+1 1",
        b"AT s +0 c +1+1 1",
        b"AT s +0. c +1+1 1",
        b"AT s +.263873386 c +1+1 1",
        b"AT s + c +1+1 1",
        b"AT s +0.26387338x c +1+1 1",
        b"AT s +1e3.000000000 c +1+1 1",
        // COORDS.
        b"AT s +0.000000000 c 1+1 1",
        b"AT s +0.000000000 c +91+1 1",
        b"AT s +0.000000000 c +1+181 1",
        b"AT s +0.000000000 c +1 1",
        // TIME.
        b"AT s +0.000000000 c +1+1 -1",
        b"AT s +0.000000000 c +1+1 1.1234567890",
        b"AT s +0.000000000 c +1+1 1234567890123456789",
        b"AT s +0.000000000 c +1+1 x",
    ];
    for &line in cases {
        assert_eq!(parse(line), Command::Invalid, "{}", show(line));
    }
}

#[test]
fn position_of_stored_at() {
    let at = match parse(AT_LINE) {
        Command::At(at) => at,
        other => panic!("{other:?}"),
    };
    let p = position(at.coords);
    assert_eq!(
        p,
        Some(Position {
            lat: b"34.068930",
            lng: b"-118.445127"
        })
    );
    for bad in [&b""[..], b"+", b"+1", b"1+1", b"+91+0", b"+0+181", b"+1+1 "] {
        assert_eq!(position(bad), None, "{}", show(bad));
    }
}

#[test]
fn herd() {
    assert_eq!(
        parse(b"HERD Goloman"),
        Command::Herd {
            name: b"Goloman",
            nonce: None
        }
    );
    assert_eq!(
        parse(b" HERD\tGoloman\r"),
        Command::Herd {
            name: b"Goloman",
            nonce: None
        }
    );
    assert_eq!(
        parse(b"HERD \xff"),
        Command::Herd {
            name: b"\xff",
            nonce: None
        }
    );
    assert_eq!(parse(b"HERD"), Command::Invalid);
    assert_eq!(
        parse(b"HERD Goloman 00ff"),
        Command::Herd {
            name: b"Goloman",
            nonce: Some(b"00ff")
        }
    );
    assert_eq!(parse(b"HERD Goloman 00ff x"), Command::Invalid);
    assert_eq!(
        parse(b"CHALLENGE n m"),
        Command::Challenge {
            nonce: b"n",
            mac: b"m"
        }
    );
    assert_eq!(parse(b"CHALLENGE n"), Command::Invalid);
    assert_eq!(parse(b"AUTH m"), Command::Auth { mac: b"m" });
    assert_eq!(parse(b"AUTH"), Command::Invalid);
    assert_eq!(parse(b"auth m"), Command::Invalid);
    assert_eq!(parse(b"SYNC 0"), Command::Sync { count: 0 });
    assert_eq!(parse(b"SYNC 100000"), Command::Sync { count: 100_000 });
    assert_eq!(
        parse(b"SYNC 9999999999999999999"),
        Command::Sync {
            count: 9_999_999_999_999_999_999
        }
    );
    assert_eq!(parse(b"SYNC 99999999999999999999"), Command::Invalid);
    assert_eq!(parse(b"SYNC -1"), Command::Invalid);
    assert_eq!(parse(b"SYNC"), Command::Invalid);
    assert_eq!(parse(b"SYNC 1 2"), Command::Invalid);
    assert_eq!(parse(b"herd Goloman"), Command::Invalid);
}

#[test]
fn diffs() {
    let cases: &[(Nanos, &str)] = &[
        (0, "+0.000000000"),
        (1, "+0.000000001"),
        (-1, "-0.000000001"),
        (-123, "-0.000000123"),
        (263_873_386, "+0.263873386"),
        (12 * S, "+12.000000000"),
        (-(3 * S + S / 2), "-3.500000000"),
        (-S, "-1.000000000"),
        (S - 1, "+0.999999999"),
        (-(S - 1), "-0.999999999"),
        (1520023934 * S + 918963997, "+1520023934.918963997"),
        (
            999_999_999_999_999_999 * S + S - 1,
            "+999999999999999999.999999999",
        ),
        (
            -(999_999_999_999_999_999 * S + S - 1),
            "-999999999999999999.999999999",
        ),
        (i64::MAX as Nanos, "+9223372036.854775807"),
        (u64::MAX as Nanos, "+18446744073.709551615"),
        (u64::MAX as Nanos + 1, "+18446744073.709551616"),
        (Nanos::MAX, "+170141183460469231731687303715.884105727"),
        (Nanos::MIN, "-170141183460469231731687303715.884105728"),
    ];
    for &(diff, text) in cases {
        let mut out = b"x".to_vec();
        write_diff(&mut out, diff);
        assert_eq!(show(&out[1..]), text, "{diff}");
    }
}

#[test]
fn write_at_reply() {
    let i = iamat_of(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997");
    let mut out = b"before\n".to_vec();
    write_at(&mut out, "Goloman", 1520023935 * S + 182837383, &i);
    assert_eq!(show(&out), show(&[b"before\n", AT_LINE, b"\n"].concat()));

    // A client clock ahead of ours: a negative difference.
    let i = iamat_of(b"IAMAT c +0+0 100.5");
    let mut out = Vec::new();
    write_at(&mut out, "S", 97 * S, &i);
    assert_eq!(show(&out), "AT S -3.500000000 c +0+0 100.5\\n");

    // Fields are copied as received, odd bytes and leading zeros included.
    let i = iamat_of(b"IAMAT \xff\xfe +034.5-0 007");
    let mut out = Vec::new();
    write_at(&mut out, "S", 7 * S, &i);
    assert_eq!(out, b"AT S +0.000000000 \xff\xfe +034.5-0 007\n");

    // Extremes of the types saturate instead of overflowing.
    let mut out = Vec::new();
    write_at(
        &mut out,
        "S",
        Nanos::MIN,
        &Iamat {
            sent_at: Nanos::MAX,
            ..i
        },
    );
    assert!(out.starts_with(b"AT S -170141183460469231731687303715.884105728 "));
}

#[test]
fn at_round_trip() {
    // What write_at produces is an AT line, and write_at_update gives it back.
    let i = iamat_of(b"IAMAT \xff\xfe -33.86+151.2 1520023934.5");
    let mut reply = Vec::new();
    write_at(&mut reply, "Hands", 1520023934 * S, &i);
    assert_eq!(
        reply,
        b"AT Hands -0.500000000 \xff\xfe -33.86+151.2 1520023934.5\n"
    );
    let at = match parse(&reply[..reply.len() - 1]) {
        Command::At(at) => at,
        other => panic!("{other:?}"),
    };
    assert_eq!(at.sent_at, i.sent_at);
    let mut update = Vec::new();
    write_at_update(&mut update, &at);
    assert_eq!(update, reply);

    // Odd white space is normalised to single spaces.
    let at = match parse(b"\tAT  s\x0b+0.000000000\x0cc  +1+1 1 \r") {
        Command::At(at) => at,
        other => panic!("{other:?}"),
    };
    let mut update = b"x\n".to_vec();
    write_at_update(&mut update, &at);
    assert_eq!(update, b"x\nAT s +0.000000000 c +1+1 1\n");
}

#[test]
fn invalid_reply() {
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"WHATSAT nobody.example 10 5",
            b"? WHATSAT nobody.example 10 5\n",
        ),
        (
            b"WHATSAT nobody.example 10 5\r",
            b"? WHATSAT nobody.example 10 5\n",
        ),
        (b"x\r\r", b"? x\r\n"),
        (b" x \t", b"?  x \t\n"),
        (b"", b"? \n"),
        (b"\r", b"? \n"),
        (b"\xff\xfe", b"? \xff\xfe\n"),
    ];
    for &(line, reply) in cases {
        let mut out = Vec::new();
        write_invalid(&mut out, line);
        assert_eq!(show(&out), show(reply), "{}", show(line));
    }
}

#[test]
fn herd_line() {
    let mut out = Vec::new();
    write_herd(&mut out, "Goloman", None);
    assert_eq!(out, b"HERD Goloman\n");
    assert_eq!(
        parse(&out[..out.len() - 1]),
        Command::Herd {
            name: b"Goloman",
            nonce: None
        }
    );
}

#[test]
fn radius_in_metres() {
    let cases: &[(&[u8], &str)] = &[
        (b"10", "10000"),
        (b"0.5", "500"),
        (b"1.2345", "1234.5"),
        (b"50", "50000"),
        (b"50.0", "50000"),
        (b"50.000000", "50000"),
        (b"0.0001", "0.1"),
        (b"0.000000000000000000001", "0.000000000000000001"),
        (b"007", "7000"),
        (b"1.5000", "1500"),
        (b"1.5", "1500"),
        (b"1.25", "1250"),
        (b"1.125", "1125"),
        (b"1.1250", "1125"),
        (b"0.001", "1"),
        (b"0.010", "10"),
        (b"0.0010", "1"),
        (b"49.99999", "49999.99"),
        (b"000.5", "500"),
    ];
    for &(km, metres) in cases {
        assert_eq!(radius_metres(km), metres, "{}", show(km));
    }
    // Not reachable from a valid WHATSAT, but no panic.
    for junk in [&b""[..], b".", b"..", b"\xff", b"0", b"1.2.3", b".000"] {
        let _ = radius_metres(junk);
    }
}

#[test]
fn radius_metres_of_every_valid_whatsat_parses_back() {
    // The metres text is itself a plain decimal of the same value.
    for km in ["0.001", "2.5", "10", "12.3456789", "50.0", "0.0000001"] {
        let line = format!("WHATSAT c {km} 1");
        let Command::Whatsat(w) = parse(line.as_bytes()) else {
            panic!("{line}")
        };
        let metres = radius_metres(w.radius_km);
        assert!(split_decimal(metres.as_bytes()).is_some(), "{metres}");
    }
}

#[test]
fn never_panics() {
    // Random lines over the bytes that matter to the grammar.
    const ALPHABET: &[u8] = b"+-.0123456789 \t\r\x0b\x0c\n\xffIAMTWHSDER";
    let words: [&[u8]; 7] = [
        b"IAMAT ",
        b"WHATSAT ",
        b"AT ",
        b"HERD ",
        b"WATCH ",
        b"UNWATCH ",
        b"",
    ];
    let mut rng = fastrand::Rng::with_seed(6709);
    let mut line = Vec::new();
    let mut out = Vec::new();
    for _ in 0..200_000 {
        line.clear();
        line.extend_from_slice(words[rng.usize(..words.len())]);
        for _ in 0..rng.usize(..48) {
            line.push(ALPHABET[rng.usize(..ALPHABET.len())]);
        }
        out.clear();
        match parse(&line) {
            Command::Iamat(i) => {
                write_at(&mut out, "S", rng.i128(..), &i);
            }
            Command::At(at) => {
                write_at_update(&mut out, &at);
            }
            Command::Whatsat(w) => out.extend_from_slice(radius_metres(w.radius_km).as_bytes()),
            Command::Herd { .. }
            | Command::Challenge { .. }
            | Command::Auth { .. }
            | Command::Sync { .. }
            | Command::Ping
            | Command::Blank => {}
            Command::Watch(Watched::Clients(c)) | Command::Unwatch(Some(Watched::Clients(c))) => {
                c.for_each(|c| out.extend_from_slice(c))
            }
            Command::Watch(_) | Command::Unwatch(_) => {}
            Command::Invalid => write_invalid(&mut out, &line),
        }
    }
}

#[test]
fn link_lines_parse_back_as_what_they_say() {
    let mut out = Vec::new();
    write_herd(&mut out, "Hands", Some("00ff"));
    write_challenge(&mut out, "0a0b", "cafe");
    write_auth(&mut out, "beef");
    write_sync(&mut out, 100_000);
    write_ping(&mut out);
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert_eq!(
        lines,
        [
            &b"HERD Hands 00ff"[..],
            b"CHALLENGE 0a0b cafe",
            b"AUTH beef",
            b"SYNC 100000",
            b"PING",
            b""
        ]
    );
    assert_eq!(
        parse(lines[0]),
        Command::Herd {
            name: b"Hands",
            nonce: Some(b"00ff")
        }
    );
    assert_eq!(
        parse(lines[1]),
        Command::Challenge {
            nonce: b"0a0b",
            mac: b"cafe"
        }
    );
    assert_eq!(parse(lines[2]), Command::Auth { mac: b"beef" });
    assert_eq!(parse(lines[3]), Command::Sync { count: 100_000 });
    assert_eq!(parse(lines[4]), Command::Ping);
    assert_eq!(parse(b"PING x"), Command::Invalid);
}

#[test]
fn the_coords_an_at_writer_returns_split_as_position_does() {
    let cases: &[&[u8]] = &[
        b"IAMAT kiwi +34.068930-118.445127 1520023934.918963997",
        b"IAMAT kiwi -34.5+118 1",
        b"IAMAT a -0-0 1",
        b"IAMAT a +90.000+180 1.5",
    ];
    for line in cases {
        let Command::Iamat(iamat) = parse(line) else {
            panic!("{}", show(line));
        };
        let mut out = b"junk before".to_vec();
        let start = out.len();
        let coords = write_at(&mut out, "Goloman", 1, &iamat);
        let at_line = &out[start..out.len() - 1];
        assert_eq!(coords.position(at_line), iamat.position, "{}", show(line));
        let Command::At(at) = parse(at_line) else {
            panic!("{}", show(at_line));
        };
        let mut again = Vec::new();
        let coords = write_at_update(&mut again, &at);
        assert_eq!(again, &out[start..]);
        assert_eq!(
            coords.position(&again),
            position(at.coords).unwrap(),
            "{}",
            show(line)
        );
    }
}

#[test]
fn a_canonical_at_line_parses_in_one_pass_as_parse_reads_it() {
    let canonical: &[&[u8]] = &[
        AT_LINE,
        b"AT s -12.000000001 c -90+180 0",
        b"AT s -0.000000123 c +1+1 1",
        b"AT \xff +0.000000000 \x00\xfe -0.5-0.25 1.5",
        b"AT s +0.000000001 c +090.000-180.0 999999999999999999.999999999",
        b"AT s +0.000000001 c +00-000.0 000",
    ];
    for &line in canonical {
        let Command::At(at) = parse(line) else {
            panic!("{}: not an AT line", show(line));
        };
        let coords = Coords::of_canonical(&at);
        assert_eq!(
            parse_canonical_at(line),
            Some((at, coords)),
            "{}",
            show(line)
        );
    }
    // Not canonical, or not an AT update: left to `parse`.
    let others: &[&[u8]] = &[
        b"",
        b"AT",
        b"AT ",
        b"AT s +0.000000001 c +1+1 1\r",
        b"AT s +0.000000001 c +1+1 1 ",
        b" AT s +0.000000001 c +1+1 1",
        b"AT  s +0.000000001 c +1+1 1",
        b"AT s +0.000000001  c +1+1 1",
        b"AT\ts +0.000000001 c +1+1 1",
        b"AT s\t+0.000000001 c +1+1 1",
        b"AT s +0.000000001 c\t+1+1 1",
        b"AT s +0.000000001 c +1+1\x0b1",
        b"AT s +0.000000001 c +1+1\x0c1",
        b"AT s +0.000000001 c\r+1+1 1",
        b"AT s +0.000000001 c +1+1",
        b"AT s +0.000000001 c +1+1 1 x",
        b"AT s +0.00000001 c +1+1 1",
        b"AT s +0.0000000012 c +1+1 1",
        b"AT s 0.000000001 c +1+1 1",
        b"AT s +0.000000001 c +91+1 1",
        b"AT s +0.000000001 c +90.1+1 1",
        b"AT s +0.000000001 c +1+181 1",
        b"AT s +0.000000001 c +1+1+1 1",
        b"AT s +0.000000001 c +1.+1 1",
        b"AT s +0.000000001 c 1+1 1",
        b"AT s +0.000000001 c +1+1 1.",
        b"AT s +0.000000001 c +1+1 .1",
        b"AT s +0.000000001 c +1+1 1.1234567890",
        b"AT s +0.000000001 c +1+1 1234567890123456789",
        b"AT s +0.000000001 c +1+1 1x",
        b"IAMAT c +1+1 1",
        b"ATs +0.000000001 c +1+1 1",
    ];
    for &line in others {
        assert_eq!(parse_canonical_at(line), None, "{}", show(line));
    }
}

#[test]
fn word_at_a_time_scans_agree_with_byte_at_a_time() {
    // Every byte value at every place of a digit run and of a field.
    for b in 0..=255u8 {
        for at in 0..=17 {
            let mut digits = b"12345678901234567".to_vec();
            let mut field = b"kiwi.cs.ucla.edu-".to_vec();
            if at < digits.len() {
                digits[at] = b;
                field[at] = b;
            }
            for n in 0..=digits.len() {
                let (digits, field) = (&digits[..n], &field[..n]);
                let naive = digits.iter().take_while(|d| d.is_ascii_digit()).count();
                assert_eq!(digit_run(digits), naive, "{}", show(digits));
                let naive = field.iter().position(|&b| is_space(b));
                assert_eq!(first_space(field), naive, "{}", show(field));
            }
        }
    }
    for digits in [
        &b""[..],
        b"0",
        b"9",
        b"12345678",
        b"99999999",
        b"000000001",
        b"123456789012345678",
        b"999999999999999999",
    ] {
        let naive = digits
            .iter()
            .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
        assert_eq!(digits_value(digits), naive, "{}", show(digits));
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let digits = (x % 1_000_000_000_000_000_000).to_string();
        let digits = &digits.as_bytes()[..(x >> 59) as usize % (digits.len() + 1)];
        let naive = digits
            .iter()
            .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
        assert_eq!(digits_value(digits), naive, "{}", show(digits));
    }
}

/// The client IDs of a WATCH or UNWATCH, as text; `*` for every client.
fn watched_of(w: Option<Watched<'_>>) -> Vec<String> {
    match w {
        None => vec![],
        Some(Watched::All) => vec!["*".into()],
        Some(Watched::Clients(c)) => c.map(show).collect(),
    }
}

#[test]
fn watch_and_unwatch() {
    // (line, Some(true) WATCH / Some(false) UNWATCH / None invalid, IDs)
    let cases: &[(Bytes, Option<bool>, &[&str])] = &[
        (b"WATCH a", Some(true), &["a"]),
        (b"WATCH a b\tc ", Some(true), &["a", "b", "c"]),
        (b"  WATCH  a\r", Some(true), &["a"]),
        // Any number of IDs, past the six fields of other commands.
        (
            b"WATCH 1 2 3 4 5 6 7 8 9",
            Some(true),
            &["1", "2", "3", "4", "5", "6", "7", "8", "9"],
        ),
        (b"WATCH \xff\xfe", Some(true), &["\\xff\\xfe"]),
        (b"WATCH *", Some(true), &["*"]),
        (b"WATCH * ", Some(true), &["*"]),
        (b"WATCH a*", Some(true), &["a*"]),
        (b"UNWATCH", Some(false), &[]),
        (b"UNWATCH \r", Some(false), &[]),
        (b"UNWATCH a b", Some(false), &["a", "b"]),
        (b"UNWATCH *", Some(false), &["*"]),
        (b"WATCH", None, &[]),
        (b"WATCH * a", None, &[]),
        (b"WATCH a *", None, &[]),
        (b"UNWATCH a * b c d e f g", None, &[]),
        (b"watch a", None, &[]),
        (b"WATCHa", None, &[]),
    ];
    for &(line, kind, ids) in cases {
        let got = match parse(line) {
            Command::Watch(w) => (Some(true), watched_of(Some(w))),
            Command::Unwatch(w) => (Some(false), watched_of(w)),
            Command::Invalid => (None, vec![]),
            other => panic!("{}: {other:?}", show(line)),
        };
        assert_eq!(
            got,
            (kind, ids.iter().map(|s| s.to_string()).collect()),
            "{}",
            show(line)
        );
    }
}

/// `split_fields` as the grammar says it, a byte at a time: every field
/// (not only the first [`MAX_FIELDS`]).
fn naive_fields(line: &[u8]) -> Vec<&[u8]> {
    line.split(|&b| is_space(b))
        .filter(|f| !f.is_empty())
        .collect()
}

/// `split_fields` agrees with [`naive_fields`], down to where each field
/// sits in the line.
fn assert_split_like_naive(line: &[u8]) {
    let (fields, n) = split_fields(line);
    let naive = naive_fields(line);
    if naive.len() > MAX_FIELDS {
        assert_eq!(n, MAX_FIELDS + 1, "{}", show(line));
    } else {
        assert_eq!(n, naive.len(), "{}", show(line));
    }
    for (got, want) in fields.iter().zip(&naive).take(n.min(MAX_FIELDS)) {
        assert_eq!(got, want, "{}", show(line));
        assert_eq!(got.as_ptr(), want.as_ptr(), "{}", show(line));
    }
}

#[test]
fn split_fields_agrees_with_a_byte_at_a_time_split() {
    // Every byte value at every place of lines of every length up to 26
    // (shorter than a word, fields straddling one or two word boundaries).
    let template = b"IAMAT kiwi.c +34.0-118.4 15";
    for b in 0..=255u8 {
        for at in 0..template.len() {
            let mut line = template.to_vec();
            line[at] = b;
            for n in 0..=line.len() {
                assert_split_like_naive(&line[..n]);
                assert_split_like_naive(&line[at.min(n)..n]);
            }
        }
    }
    // Each kind of white space, in runs of every length, at every place.
    for &space in b" \t\n\x0b\x0c\r" {
        for run in 1..=17 {
            for at in 0..=24 {
                let mut line = b"abcdefghijklmnopqrstuvwx".to_vec();
                line.splice(at..at, std::iter::repeat_n(space, run));
                for n in 0..=line.len() {
                    assert_split_like_naive(&line[..n]);
                }
            }
        }
    }
    // Longer lines: a white-space byte, or a run, at every place of a line
    // of up to 140 bytes, with fields of every length before it.
    for len in [63, 64, 65, 127, 128, 129, 140] {
        for at in 0..len {
            for run in [1, 2, 9] {
                let mut line = vec![b'x'; len];
                for b in line.iter_mut().skip(at).take(run) {
                    *b = b'\t';
                }
                assert_split_like_naive(&line);
                line[at / 2] = b' ';
                assert_split_like_naive(&line);
            }
        }
    }
    // Random lines from an alphabet of white space, neighbours of white
    // space (0x08, 0x0e, 0x1f, 0x21), bytes >= 0x80, NUL and letters.
    const ALPHABET: &[u8] = b" \t\n\x0b\x0c\r\x08\x0e\x1f\x21\x00\x80\xa0\xff\x89\x8dab+.9";
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..100_000 {
        let len = (next() % 200) as usize;
        // Sometimes mostly white space, sometimes mostly not.
        let spaces = next() % 4;
        let line: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if r % 4 < spaces {
                    b" \t\n\x0b\x0c\r"[(r >> 8) as usize % 6]
                } else {
                    ALPHABET[(r >> 8) as usize % ALPHABET.len()]
                }
            })
            .collect();
        assert_split_like_naive(&line);
    }
}

#[test]
fn eight_digits_at_once_are_the_digits() {
    // The two divisions by multiplication, for every value they get.
    for x in 0..10_000u64 {
        assert_eq!((x * 10_486) >> 20, x / 100, "{x}");
    }
    for x in 0..100u64 {
        assert_eq!((x * 103) >> 10, x / 10, "{x}");
    }
    // Every value of each four-digit half with the other half's extremes,
    // a stride through all of them, and the ends.
    let halves = (0..10_000u64).flat_map(|h| [h, h * 10_000, h * 10_000 + 9_999, h + 99_990_000]);
    let stride = (0..100_000_000u64).step_by(9_973);
    for n in halves.chain(stride).chain([99_999_999, 10_000_000, 1]) {
        let got = eight_ascii_digits(n).to_le_bytes();
        assert_eq!(got, format!("{n:08}").as_bytes(), "{n}");
    }
    // DIFFs around every power of ten of the fraction and the seconds.
    for p in 0..=18 {
        let t = 10i128.pow(p);
        for diff in [t - 1, t, t + 1, -t, 1 - t, 123_456_789 * t] {
            let mut out = Vec::new();
            write_diff(&mut out, diff);
            let sign = if diff < 0 { '-' } else { '+' };
            let m = diff.unsigned_abs();
            let want = format!("{sign}{}.{:09}", m / 1_000_000_000, m % 1_000_000_000);
            assert_eq!(out, want.as_bytes(), "{diff}");
        }
    }
}

#[test]
fn the_split_parse_found_is_where_coords_are_split() {
    for coords in [
        &b"+34.068930-118.445127"[..],
        b"-34.5+118",
        b"-0-0",
        b"+0+0",
        b"+90.000+180",
        b"-00000000000000089.9999999-179.999999999999",
    ] {
        let line = [&b"IAMAT kiwi "[..], coords, b" 1"].concat();
        let iamat = iamat_of(&line);
        assert_eq!(
            Coords::of_iamat(9, &iamat),
            Coords::at(9, coords),
            "{}",
            show(coords)
        );
        // Made by hand, its position taken from other bytes (or none):
        // COORDS is read again.
        let elsewhere = coords.to_vec();
        for lng in [position(&elsewhere).unwrap().lng, b"", b"-", &coords[..1]] {
            let mut made = iamat;
            made.position.lng = lng;
            assert_eq!(
                Coords::of_iamat(9, &made),
                Coords::at(9, coords),
                "{}",
                show(lng)
            );
        }
    }
}

#[test]
fn degrees_valued_from_a_word_agree_with_at_most() {
    let fracs: &[&[u8]] = &[b"", b"0", b"00000000", b"1", b"0000000001", b"9"];
    let tails: &[&[u8]] = &[b"", b"-118.4", b"+0", b" 15200239", b"x"];
    for v in (0..=200).chain([999, 1000, 99_999_999, 123_456_789]) {
        for zeros in 0..=9 {
            let int = format!("{}{v}", "0".repeat(zeros)).into_bytes();
            for &frac in fracs {
                for &tail in tails {
                    let mut text = int.clone();
                    if !frac.is_empty() {
                        text.push(b'.');
                        text.extend_from_slice(frac);
                    }
                    text.extend_from_slice(tail);
                    for max in [90, 180] {
                        assert_eq!(
                            degrees_at_most(&text, &int, frac, max),
                            at_most(&int, frac, max),
                            "{} <= {max}",
                            show(&text)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn fraction_scales_are_the_powers_of_ten() {
    for (n, &scale) in FRACTION_SCALE.iter().enumerate() {
        assert_eq!(scale, 10u64.pow(9 - n as u32), "{n}");
    }
    // And a fraction of every length is that many nanoseconds.
    for n in 0..=9 {
        let frac = "7".repeat(n);
        let time = if n == 0 {
            "5".to_string()
        } else {
            format!("5.{frac}")
        };
        let want = 5 * S + format!("{frac:0<9}").parse::<Nanos>().unwrap();
        assert_eq!(timestamp(time.as_bytes()), Some(want), "{time}");
    }
}
