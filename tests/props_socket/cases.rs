//! A generated case of the socket-level properties: the lines it sends
//! (valid, invalid, blank, garbage, over-long, exactly at the limit) with
//! their white space and line ends, where the chunked run cuts them, and,
//! once given a run's client prefix, the bytes to send and what each request
//! is, for the model in `main.rs`.

use std::collections::HashMap;

use herd::protocol::Nanos;
use herd::server::DEFAULT_LINE_LIMIT;
use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::grammar::{
    bound, coords, diff_text, join, nanos_of, no_newline_byte, non_space_byte, radius, separators,
    spaces, B, LINE_SPACES,
};

/// The test server's line limit (it runs with default limits).
pub const LIMIT: usize = DEFAULT_LINE_LIMIT;

/// Clients a case talks about; the last one never posts a position.
pub const CLIENTS: usize = 4;
pub const GHOST: usize = CLIENTS - 1;

/// Lines invalid whatever the server knows; `{c}` stands for a client ID.
pub const INVALID: &[&[&str]] = &[
    &["IAMAT", "{c}", "+34.068930-118.445127"],
    &["IAMAT", "{c}", "+34.068930-118.445127", "1", "x"],
    &["IAMAT", "{c}", "34.068930-118.445127", "1"],
    &["IAMAT", "{c}", "+90.000000001+0", "1"],
    &["IAMAT", "{c}", "+0-180.5", "1"],
    &["IAMAT", "{c}", "+1+1", "1.1234567890"],
    &["IAMAT", "{c}", "+1+1", "-1"],
    &["IAMAT", "{c}", "+1+1", "1234567890123456789"],
    &["IAMAT", "{c}", "+1+1", "1."],
    &["iamat", "{c}", "+1+1", "1"],
    &["WHATSAT", "{c}", "0", "5"],
    &["WHATSAT", "{c}", "50.001", "5"],
    &["WHATSAT", "{c}", "10", "0"],
    &["WHATSAT", "{c}", "10", "21"],
    &["WHATSAT", "{c}", "10"],
    &["AT", "Hands", "+0.00000001", "{c}", "+1+1", "1"],
    &["AT", "Hands", "0.000000001", "{c}", "+1+1", "1"],
    &["AT", "Hands", "+0.000000001", "{c}", "+1+1"],
    &["HERDS", "x"],
    &["?", "IAMAT", "{c}", "+1+1", "1"],
];

#[derive(Debug, Clone)]
pub enum Item {
    Iamat {
        who: usize,
        coords: B,
        time: B,
        sent_at: Nanos,
    },
    /// Syntactically valid; the client may be unknown.
    Whatsat {
        who: usize,
        radius: B,
        bound: B,
    },
    /// An AT update as a client may send it (never from `Goloman`, whose
    /// own lines carry a clock-dependent DIFF).
    At {
        server: B,
        diff: B,
        who: usize,
        coords: B,
        time: B,
        sent_at: Nanos,
    },
    Invalid {
        template: usize,
        who: usize,
    },
    /// Bytes whose first field cannot be a command.
    Garbage(B),
    Blank(B),
    /// `head`, then `fill` repeated, `len` (> limit) bytes in all.
    TooLong {
        head: B,
        fill: B,
        len: usize,
    },
    /// An IAMAT of exactly the limit's length (always ended by `\n` alone).
    AtLimit {
        coords: B,
        time: B,
        sent_at: Nanos,
    },
}

#[derive(Debug, Clone)]
pub struct Line {
    item: Item,
    seps: Vec<B>,
    crlf: bool,
}

#[derive(Debug, Clone)]
pub struct Case {
    /// Client ID suffixes (a per-run prefix keeps runs apart in the store).
    clients: Vec<B>,
    lines: Vec<Line>,
    /// The last line ends at EOF, without `\n`.
    unterminated_last: bool,
    /// Where the chunked run cuts the input.
    pub cuts: Vec<Index>,
}

/// TIME from a small pool, so that equal and differently written equal
/// timestamps (`1.5`, `01.500000000`) are common.
pub fn pooled_time() -> impl Strategy<Value = (B, Nanos)> {
    (
        select(vec!["1", "2", "1520023934"]),
        0usize..2,
        select(vec!["", "5", "50", "500000000", "123456789"]),
    )
        .prop_map(|(int, zeros, frac)| {
            let mut text = "0".repeat(zeros) + int;
            if !frac.is_empty() {
                text = format!("{text}.{frac}");
            }
            (
                B(text.into_bytes()),
                nanos_of(int.as_bytes(), frac.as_bytes()),
            )
        })
}

pub fn item() -> impl Strategy<Value = Item> {
    let garbage = (
        spaces(LINE_SPACES, 0, 2),
        select(b"\x00\xff#x\x7f0?~".to_vec()),
        prop::collection::vec(
            prop_oneof![no_newline_byte(), select(b"\r\x00\xff \t".to_vec())],
            0..40,
        ),
    )
        .prop_map(|(lead, first, rest)| {
            let mut g = lead;
            g.push(first);
            g.extend_from_slice(&rest);
            Item::Garbage(B(g))
        });
    let too_long = (
        select(vec!["IAMAT ", "WHATSAT x 1 ", "", "AT "]),
        prop::collection::vec(no_newline_byte(), 1..16),
        1usize..2000,
    )
        .prop_map(|(head, fill, extra)| Item::TooLong {
            head: B(head.as_bytes().to_vec()),
            fill: B(fill),
            len: LIMIT + extra,
        });
    let diff = diff_text();
    prop_oneof![
        4 => (0..GHOST, coords(), pooled_time()).prop_map(|(who, c, (time, sent_at))| {
            Item::Iamat { who, coords: c.text, time, sent_at }
        }),
        3 => (0..CLIENTS, radius(), bound())
            .prop_map(|(who, radius, bound)| Item::Whatsat { who, radius, bound }),
        2 => (
            select(vec!["Hands", "Welsh", "Golo", "\u{fe}\u{ff}"]),
            diff,
            0..GHOST,
            coords(),
            pooled_time(),
        )
            .prop_map(|(server, diff, who, c, (time, sent_at))| Item::At {
                server: B(server.as_bytes().to_vec()),
                diff,
                who,
                coords: c.text,
                time,
                sent_at,
            }),
        2 => (0..INVALID.len(), 0..CLIENTS).prop_map(|(template, who)| Item::Invalid { template, who }),
        2 => garbage,
        1 => spaces(LINE_SPACES, 0, 4).prop_map(|b| Item::Blank(B(b))),
        1 => too_long,
        1 => (coords(), pooled_time())
            .prop_map(|(c, (time, sent_at))| Item::AtLimit { coords: c.text, time, sent_at }),
    ]
}

pub fn case() -> impl Strategy<Value = Case> {
    let line = (item(), separators(LINE_SPACES), any::<bool>())
        .prop_map(|(item, seps, crlf)| Line { item, seps, crlf });
    (
        prop::collection::vec(
            prop::collection::vec(non_space_byte(), 0..6).prop_map(B),
            CLIENTS,
        ),
        prop::collection::vec(line, 1..24),
        prop::bool::weighted(0.3),
        prop::collection::vec(any::<Index>(), 0..16),
    )
        .prop_map(|(clients, mut lines, unterminated_last, cuts)| {
            same_time_same_place(&clients, &mut lines);
            Case {
                clients,
                lines,
                unterminated_last,
                cuts,
            }
        })
}

/// Gives IAMATs of one client with equal timestamps the same fields. The
/// store breaks such ties on the whole AT line, DIFF included, so with
/// different fields the winner would depend on the clock, and the two runs
/// of a case could legitimately disagree. One client is one ID: two of the
/// case's clients with equal suffixes are the same client.
pub fn same_time_same_place(clients: &[B], lines: &mut [Line]) {
    let mut first: HashMap<(&[u8], Nanos), (B, B)> = HashMap::new();
    for line in lines {
        if let Item::Iamat {
            who,
            coords,
            time,
            sent_at,
        } = &mut line.item
        {
            let (c, t) = first
                .entry((&clients[*who].0[..], *sent_at))
                .or_insert_with(|| (coords.clone(), time.clone()));
            *coords = c.clone();
            *time = t.clone();
        }
    }
}

/// What a request is, for the model.
pub enum What {
    Iamat {
        client: Vec<u8>,
        coords: Vec<u8>,
        time: Vec<u8>,
        sent_at: Nanos,
    },
    Whatsat {
        client: Vec<u8>,
    },
    /// An update: stored if newer, no reply.
    At {
        client: Vec<u8>,
        sent_at: Nanos,
        line: Vec<u8>,
    },
    Blank,
    Invalid,
}

pub struct Request {
    /// The line as the server receives it, without its `\n`.
    pub content: Vec<u8>,
    pub what: What,
}

/// The bytes a case sends, and its requests, with client IDs under `prefix`.
pub fn materialize(case: &Case, prefix: &[u8]) -> (Vec<u8>, Vec<Request>) {
    let client = |who: usize| [prefix, &case.clients[who].0].concat();
    let mut input = Vec::new();
    let mut requests = Vec::new();
    for (i, line) in case.lines.iter().enumerate() {
        let seps = &line.seps;
        let mut crlf = line.crlf;
        let (mut content, what) = match &line.item {
            Item::Iamat {
                who,
                coords,
                time,
                sent_at,
            } => {
                let c = client(*who);
                let content = join(&[b"IAMAT", &c, &coords.0, &time.0], seps);
                let what = What::Iamat {
                    client: c,
                    coords: coords.0.clone(),
                    time: time.0.clone(),
                    sent_at: *sent_at,
                };
                (content, what)
            }
            Item::Whatsat { who, radius, bound } => {
                let c = client(*who);
                let content = join(&[b"WHATSAT", &c, &radius.0, &bound.0], seps);
                (content, What::Whatsat { client: c })
            }
            Item::At {
                server,
                diff,
                who,
                coords,
                time,
                sent_at,
            } => {
                let c = client(*who);
                let fields: [&[u8]; 6] = [b"AT", &server.0, &diff.0, &c, &coords.0, &time.0];
                let content = join(&fields, seps);
                let line = fields.join(&b' ');
                let what = What::At {
                    line,
                    client: c.clone(),
                    sent_at: *sent_at,
                };
                (content, what)
            }
            Item::Invalid { template, who } => {
                let c = client(*who);
                let fields: Vec<&[u8]> = INVALID[*template]
                    .iter()
                    .map(|f| if *f == "{c}" { &c[..] } else { f.as_bytes() })
                    .collect();
                (join(&fields, seps), What::Invalid)
            }
            Item::Garbage(g) => (g.0.clone(), What::Invalid),
            Item::Blank(b) => (b.0.clone(), What::Blank),
            Item::TooLong { head, fill, len } => {
                let mut content = head.0.clone();
                while content.len() < *len {
                    content.extend_from_slice(&fill.0);
                }
                content.truncate(*len);
                // A `\r` as the last byte kept is a case of its own
                // (see `an_over_long_line_cut_just_after_a_cr_...`).
                if content[LIMIT - 1] == b'\r' {
                    content[LIMIT - 1] = b'x';
                }
                (content, What::Invalid)
            }
            Item::AtLimit {
                coords,
                time,
                sent_at,
            } => {
                // `\r\n` after a line of exactly the limit is a case of its
                // own (see `a_line_of_exactly_the_limit_ending_in_crlf_...`).
                crlf = false;
                let fixed = b"IAMAT ".len() + 1 + coords.0.len() + 1 + time.0.len();
                let mut c = [prefix, format!("L{i}.").as_bytes()].concat();
                c.resize(LIMIT - fixed, b'k');
                let content = [&b"IAMAT "[..], &c, b" ", &coords.0, b" ", &time.0].concat();
                assert_eq!(content.len(), LIMIT);
                let what = What::Iamat {
                    client: c,
                    coords: coords.0.clone(),
                    time: time.0.clone(),
                    sent_at: *sent_at,
                };
                (content, what)
            }
        };
        let unterminated = case.unterminated_last && i + 1 == case.lines.len();
        if crlf && !unterminated {
            content.push(b'\r');
        }
        input.extend_from_slice(&content);
        if !unterminated {
            input.push(b'\n');
        }
        requests.push(Request { content, what });
    }
    (input, requests)
}

/// The flake of `every_request_is_answered_in_order_whatever_the_chunking`
/// (seen under load): two of a case's clients with equal suffixes are one
/// client ID, and their IAMATs with equal timestamps kept different
/// coordinates, so which one the store kept depended on whether the server
/// read them together (equal DIFFs) or apart (the later DIFF wins).
#[test]
fn clients_with_one_id_get_one_place_per_timestamp() {
    let iamat = |who, coords: &str| Line {
        item: Item::Iamat {
            who,
            coords: B(coords.as_bytes().to_vec()),
            time: B(b"1.5".to_vec()),
            sent_at: 1_500_000_000,
        },
        seps: ["", " ", " ", " ", " ", " ", ""]
            .iter()
            .map(|s| B(s.as_bytes().to_vec()))
            .collect(),
        crlf: false,
    };
    let clients: Vec<B> = ["x", "", "", "g"]
        .iter()
        .map(|s| B(s.as_bytes().to_vec()))
        .collect();
    let mut lines = vec![iamat(1, "+1+1"), iamat(2, "+2+2"), iamat(0, "+3+3")];
    same_time_same_place(&clients, &mut lines);
    let case = Case {
        clients,
        lines,
        unterminated_last: false,
        cuts: Vec::new(),
    };
    let (input, _) = materialize(&case, b"p.");
    assert_eq!(
        String::from_utf8(input).unwrap(),
        "IAMAT p. +1+1 1.5\nIAMAT p. +1+1 1.5\nIAMAT p.x +3+3 1.5\n"
    );
}
