//! Property tests of [`LineReader`] against a reference model, whatever the
//! chunking of its input: the same pieces, and the same count of discarded
//! bytes (what the invalid-input throttle is charged), for small limits and
//! at the server's own.
//!
//! Failures print the minimal input (bytes escaped); nothing is persisted to
//! disk. `PROPTEST_CASES` overrides every case count.

#[path = "support/grammar.rs"]
mod grammar;

use herd::conn::{LineReader, Piece};
use herd::server::DEFAULT_LINE_LIMIT;
use proptest::prelude::*;
use proptest::sample::{select, Index};

use grammar::{config, B};

// ---------------------------------------------------------------------------
// The reference model.

/// A piece as the tests keep it: `(too long, bytes)`.
type Owned = (bool, B);

fn owned(p: Piece<'_>) -> Owned {
    match p {
        Piece::Line(l) => (false, B(l.to_vec())),
        Piece::TooLong(l) => (true, B(l.to_vec())),
    }
}

/// The reference: split on `\n`; a line longer than `limit` (not counting a
/// final `\r`, which belongs to a `\r\n` or ends the input) gives its first
/// `limit` bytes as too long, and the rest of it (a final `\r` included) is
/// discarded; an unterminated last line counts at EOF. Returns the pieces
/// and how many bytes were discarded.
fn reference_pieces(input: &[u8], limit: usize) -> (Vec<Owned>, usize) {
    let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        // Input ended with `\n` (or was empty): nothing after it.
        lines.pop();
    }
    let mut discarded = 0;
    let pieces = lines
        .into_iter()
        .map(|l| {
            let content = l.strip_suffix(b"\r").unwrap_or(l);
            match content.len() > limit {
                true => {
                    discarded += l.len() - limit;
                    (true, B(l[..limit].to_vec()))
                }
                false => (false, B(l.to_vec())),
            }
        })
        .collect();
    (pieces, discarded)
}

/// Feeds `input` cut at `cuts` (positions, any order), then finishes.
/// Returns the pieces and the bytes `feed` said it discarded.
fn reader_pieces(
    input: &[u8],
    cuts: &[usize],
    limit: usize,
) -> Result<(Vec<Owned>, usize), String> {
    let mut cuts = cuts.to_vec();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut reader = LineReader::default();
    let mut got = Vec::new();
    let mut discarded = 0;
    let mut start = 0;
    for end in cuts {
        discarded += reader.feed(&input[start..end], limit, |p| got.push(owned(p)));
        // The limit, and one `\r` that may turn out to start a `\r\n`.
        if reader.pending() > limit + 1 {
            return Err(format!("{} bytes pending, limit {limit}", reader.pending()));
        }
        start = end;
    }
    reader.finish(|p| got.push(owned(p)));
    if reader.pending() != 0 {
        return Err(format!("{} bytes pending after finish", reader.pending()));
    }
    Ok((got, discarded))
}

fn reader_input() -> impl Strategy<Value = B> {
    let byte = prop_oneof![
        3 => Just(b'\n'),
        1 => Just(b'\r'),
        4 => b'a'..=b'c',
        4 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..160).prop_map(B)
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn line_reader_matches_the_reference_whatever_the_chunking(
        input in reader_input(),
        limit in 0usize..24,
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let input = &input.0;
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        let expected = reference_pieces(input, limit);
        prop_assert_eq!(reader_pieces(input, &[], limit), Ok(expected.clone()), "whole");
        prop_assert_eq!(reader_pieces(input, &cuts, limit), Ok(expected), "cut at {:?}", cuts);
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn line_reader_at_the_server_limit(
        runs in prop::collection::vec(
            (
                prop_oneof![
                    DEFAULT_LINE_LIMIT - 2..DEFAULT_LINE_LIMIT + 3,
                    0..DEFAULT_LINE_LIMIT + 40,
                ],
                select(b"x\r\n".to_vec()),
                any::<bool>(),
            ),
            1..5,
        ),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        // Runs of a byte around the limit's length, with or without a `\n` after.
        let mut input = Vec::new();
        for (len, byte, newline) in runs {
            input.resize(input.len() + len, byte);
            if newline {
                input.push(b'\n');
            }
        }
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        let expected = reference_pieces(&input, DEFAULT_LINE_LIMIT);
        prop_assert_eq!(reader_pieces(&input, &cuts, DEFAULT_LINE_LIMIT), Ok(expected));
    }
}
