//! Property tests of the protocol's pure functions against the grammar
//! (many cases, fast): [`protocol::parse`] against the oracle of
//! `support/grammar.rs`, on arbitrary bytes and on command-shaped lines;
//! generated valid IAMATs parse to their exact fields; `write_at` re-parses
//! as the AT it should be, its DIFF checked with digit arithmetic of its
//! own; `write_invalid` is `? ` and the line; replay's one-pass parse of a
//! journal record agrees with `parse` and `write_at_update`.
//!
//! Failures print the minimal input (bytes escaped); nothing is persisted to
//! disk. `PROPTEST_CASES` overrides every case count.

#[path = "support/grammar.rs"]
mod grammar;

use herd::protocol::{self, Command, Iamat, Nanos, Position};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::TestCaseError;

use grammar::{
    bound, client_id, config, coords, diff_text, diff_value, invalid_reply, join, oracle, radius,
    separators, show, time, Coords, B, SPACES,
};

// ---------------------------------------------------------------------------
// Generators of lines.

/// A valid IAMAT line with white space of every kind, and its fields.
#[derive(Debug, Clone)]
struct GenIamat {
    line: B,
    client: B,
    coords: Coords,
    time: B,
    sent_at: Nanos,
}

fn valid_iamat() -> impl Strategy<Value = GenIamat> {
    (client_id(), coords(), time(), separators(SPACES)).prop_map(
        |(client, coords, (time, sent_at), seps)| GenIamat {
            line: B(join(&[b"IAMAT", &client.0, &coords.text.0, &time.0], &seps)),
            client,
            coords,
            time,
            sent_at,
        },
    )
}

/// A number-like field: optional sign, digits (zeros and bounds likely), an
/// optional fraction (possibly empty, possibly too long).
fn numberish() -> impl Strategy<Value = Vec<u8>> {
    let int = prop_oneof![
        prop::collection::vec(prop_oneof![2 => Just(b'0'), 3 => b'0'..=b'9'], 0..=20),
        select(vec![
            "90",
            "180",
            "50",
            "20",
            "21",
            "91",
            "181",
            "0",
            "00",
            "1",
            "999999999999999999",
            "1000000000000000000",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    let frac = prop::option::of(prop::collection::vec(
        prop_oneof![2 => Just(b'0'), 1 => b'0'..=b'9'],
        0..=11,
    ));
    (select(vec!["", "", "", "+", "-"]), int, frac).prop_map(|(sign, int, frac)| {
        let mut text = sign.as_bytes().to_vec();
        text.extend_from_slice(&int);
        if let Some(frac) = frac {
            text.push(b'.');
            text.extend_from_slice(&frac);
        }
        text
    })
}

fn coords_half() -> impl Strategy<Value = Vec<u8>> {
    (select(vec!["+", "-", "+", "-", ""]), numberish())
        .prop_map(|(s, n)| [s.as_bytes(), n.strip_prefix(b"+").unwrap_or(&n)].concat())
}

fn coordsish() -> impl Strategy<Value = Vec<u8>> {
    (coords_half(), coords_half()).prop_map(|(a, b)| [a, b].concat())
}

fn fieldish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        numberish(),
        coordsish(),
        client_id().prop_map(|c| c.0),
        select(vec!["IAMAT", "WHATSAT", "AT", "HERD"]).prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// The fields of a line shaped like a command, sometimes with a field
/// dropped or one too many.
fn shaped_fields() -> impl Strategy<Value = Vec<B>> {
    let word = |w: &'static str| Just(w.as_bytes().to_vec());
    // Each field valid about half the time, so that all outcomes are common.
    let coords = || prop_oneof![coords().prop_map(|c| c.text.0), coordsish()];
    let time = || prop_oneof![time().prop_map(|t| t.0 .0), numberish()];
    let radius = prop_oneof![radius().prop_map(|r| r.0), numberish()];
    let bound = prop_oneof![bound().prop_map(|b| b.0), numberish()];
    let diff = prop_oneof![diff_text().prop_map(|d| d.0), numberish()];
    let shapes = prop_oneof![
        3 => (word("IAMAT"), fieldish(), coords(), time())
            .prop_map(|(a, b, c, d)| vec![a, b, c, d]),
        3 => (word("WHATSAT"), fieldish(), radius, bound)
            .prop_map(|(a, b, c, d)| vec![a, b, c, d]),
        3 => (word("AT"), fieldish(), diff, fieldish(), coords(), time())
            .prop_map(|(a, b, c, d, e, f)| vec![a, b, c, d, e, f]),
        1 => (word("HERD"), fieldish()).prop_map(|(a, b)| vec![a, b]),
        1 => prop::collection::vec(fieldish(), 0..8),
    ];
    (shapes, any::<u8>(), any::<Index>(), fieldish()).prop_map(|(mut fields, mutate, at, extra)| {
        match mutate {
            0..=199 => {}
            200..=227 if !fields.is_empty() => {
                fields.remove(at.index(fields.len()));
            }
            _ => fields.insert(at.index(fields.len() + 1), extra),
        }
        fields.into_iter().map(B).collect()
    })
}

/// A journal-shaped line: an AT update joined by single spaces, each field
/// valid most of the time, then sometimes one byte inserted, replaced or
/// dropped (white space, signs, dots, digits and others are likely).
fn journal_line() -> impl Strategy<Value = B> {
    let diff = prop_oneof![4 => diff_text().prop_map(|d| d.0), 1 => numberish()];
    let coords = prop_oneof![4 => coords().prop_map(|c| c.text.0), 1 => coordsish()];
    let time = prop_oneof![4 => time().prop_map(|t| t.0 .0), 1 => numberish()];
    let byte = prop_oneof![
        select(b" \t\r\x0b\x0c+-.09".to_vec()),
        any::<u8>().prop_filter("not LF", |&b| b != b'\n'),
    ];
    (
        client_id(),
        diff,
        client_id(),
        coords,
        time,
        any::<u8>(),
        any::<Index>(),
        byte,
    )
        .prop_map(|(server, diff, client, coords, time, mutate, at, byte)| {
            let mut line = [&b"AT"[..], &server.0, &diff, &client.0, &coords, &time].join(&b' ');
            let i = at.index(line.len() + 1);
            match mutate {
                0..=127 => {}
                128..=191 => line.insert(i, byte),
                192..=223 if i < line.len() => line[i] = byte,
                _ if i < line.len() => {
                    line.remove(i);
                }
                _ => line.push(byte),
            }
            B(line)
        })
}

// ---------------------------------------------------------------------------
// Pure level: parser and formatters.

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn parse_agrees_with_the_grammar_on_arbitrary_bytes(
        line in prop::collection::vec(any::<u8>(), 0..96).prop_map(B)
    ) {
        prop_assert_eq!(protocol::parse(&line.0), oracle(&line.0));
    }

    #[test]
    fn parse_agrees_with_the_grammar_on_command_shaped_lines(
        fields in shaped_fields(),
        seps in prop::collection::vec(separators(SPACES), 2),
    ) {
        let fields: Vec<&[u8]> = fields.iter().map(|f| &f.0[..]).collect();
        // Up to 8 fields: separators for six, then single spaces.
        let line = |seps: &[B]| {
            let (head, tail) = fields.split_at(fields.len().min(6));
            let mut line = join(head, seps);
            for f in tail {
                line.push(b' ');
                line.extend_from_slice(f);
            }
            line
        };
        let (a, b) = (line(&seps[0]), line(&seps[1]));
        prop_assert_eq!(protocol::parse(&a), oracle(&a), "{}", show(&a));
        // Which white space separates or surrounds the fields does not matter.
        prop_assert_eq!(protocol::parse(&a), protocol::parse(&b), "{} vs {}", show(&a), show(&b));
    }
}

proptest! {
    #![proptest_config(config(4096))]

    /// Replay's one-pass parse of a journal record is `parse` on canonical
    /// lines, and declines every other line (replay gives those to `parse`).
    #[test]
    fn a_journal_record_parses_in_one_pass_exactly_when_parse_reads_a_canonical_at(
        line in prop_oneof![
            3 => journal_line(),
            1 => (shaped_fields(), prop::option::of(separators(SPACES))).prop_map(|(fields, seps)| {
                let fields: Vec<&[u8]> = fields.iter().map(|f| &f.0[..]).collect();
                match seps {
                    Some(seps) if fields.len() <= 6 => B(join(&fields, &seps)),
                    _ => B(fields.join(&b' ')),
                }
            }),
            1 => prop::collection::vec(any::<u8>(), 0..96).prop_map(B),
        ]
    ) {
        let line = &line.0;
        let expected = match protocol::parse(line) {
            Command::At(at) => {
                let mut canonical = Vec::new();
                let coords = protocol::write_at_update(&mut canonical, &at);
                (canonical[..canonical.len() - 1] == line[..]).then_some((at, coords))
            }
            _ => None,
        };
        prop_assert_eq!(protocol::parse_canonical_at(line), expected, "{}", show(line));
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn a_valid_iamat_parses_to_its_exact_fields(g in valid_iamat()) {
        let expected = Iamat {
            client: &g.client.0,
            coords: &g.coords.text.0,
            time: &g.time.0,
            position: Position { lat: &g.coords.lat.0, lng: &g.coords.lng.0 },
            sent_at: g.sent_at,
        };
        prop_assert_eq!(protocol::parse(&g.line.0), Command::Iamat(expected));
    }

    #[test]
    fn write_at_reparses_as_the_at_it_should_be(
        g in valid_iamat(),
        server in prop::collection::vec(b'!'..=b'~', 1..10),
        before in prop::collection::vec(any::<u8>(), 0..8),
        received in prop_oneof![
            any::<i64>().prop_map(|t| (Nanos::from(t), false)),
            (-10i64.pow(15)..10i64.pow(15)).prop_map(|d| (Nanos::from(d), true)),
        ],
    ) {
        let server = String::from_utf8(server).unwrap();
        let Command::Iamat(iamat) = protocol::parse(&g.line.0) else {
            return Err(TestCaseError::fail(format!("not an IAMAT: {}", show(&g.line.0))));
        };
        let received_at = match received {
            (offset, true) => g.sent_at + offset,
            (t, false) => t,
        };
        let mut out = before.clone();
        let coords = protocol::write_at(&mut out, &server, received_at, &iamat);
        prop_assert!(out.starts_with(&before));
        let reply = &out[before.len()..];
        // Where it says COORDS sits, split as the grammar splits them.
        let (start, end) = (coords.start as usize, coords.end as usize);
        prop_assert_eq!(reply.get(start..end), Some(&g.coords.text.0[..]));
        let position = Position { lat: &g.coords.lat.0, lng: &g.coords.lng.0 };
        prop_assert_eq!(coords.position(reply), position);
        prop_assert!(reply.ends_with(b"\n"), "{}", show(reply));
        let line = &reply[..reply.len() - 1];
        let Command::At(at) = protocol::parse(line) else {
            return Err(TestCaseError::fail(format!("not an AT: {}", show(line))));
        };
        prop_assert_eq!(at.server, server.as_bytes());
        prop_assert_eq!(at.client, &g.client.0[..]);
        prop_assert_eq!(at.coords, &g.coords.text.0[..]);
        prop_assert_eq!(at.time, &g.time.0[..]);
        prop_assert_eq!(at.sent_at, g.sent_at);
        prop_assert_eq!(diff_value(at.diff), Ok(received_at - g.sent_at));
        // Single spaces, nothing else.
        let fields: &[&[u8]] = &[b"AT", server.as_bytes(), at.diff, &g.client.0, &g.coords.text.0, &g.time.0];
        prop_assert_eq!(B(line.to_vec()), B(fields.join(&b' ')));
    }

    #[test]
    fn write_invalid_is_a_question_mark_and_the_line(
        before in prop::collection::vec(any::<u8>(), 0..8),
        line in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut out = before.clone();
        protocol::write_invalid(&mut out, &line);
        let mut expected = before;
        expected.extend_from_slice(&invalid_reply(&line));
        expected.push(b'\n');
        prop_assert_eq!(B(out), B(expected));
    }
}
