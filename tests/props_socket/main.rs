//! Property tests at socket level (fewer cases): one in-process server per
//! test function. Each case writes a generated mix of lines (valid, invalid,
//! blank, garbage, over-long, exactly at the limit) in arbitrary chunks, one
//! `write` each, half-closes, reads to EOF and checks every reply, in order,
//! against a reference model of the store. The same input sent whole must
//! get the same replies, DIFF fields (which depend on the clock) masked.
//! Then the edge cases the properties leave out on purpose.
//!
//! Failures print the minimal input (bytes escaped); nothing is persisted to
//! disk. `PROPTEST_CASES` overrides every case count.

mod cases;
#[path = "../support/grammar.rs"]
mod grammar;
#[path = "../support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use herd::protocol::{self, Nanos};
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use cases::{materialize, Case, Request, What, LIMIT};
use grammar::{config, diff_value, invalid_reply, show};
use support::herd::{TestHerd, PATIENCE};

// ---------------------------------------------------------------------------
// Sending a case, and the model its replies are checked against.

/// Connects, writes `chunks` (one `write_all` each, from a thread of its
/// own so that neither side can block the other), half-closes, and reads
/// everything until the server closes.
fn exchange(addr: SocketAddr, chunks: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let writer = std::thread::spawn(move || -> io::Result<()> {
        for chunk in &chunks {
            w.write_all(chunk)?;
        }
        w.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    let read = stream.read_to_end(&mut got);
    let wrote = writer.join().map_err(|_| "writer panicked".to_string())?;
    wrote.map_err(|e| format!("writing: {e}"))?;
    read.map_err(|e| format!("reading, after {}: {e}", show(&got)))?;
    Ok(got)
}

/// A cursor over the reply stream.
struct Replies<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Replies<'a> {
    fn line(&mut self, wanted: &str) -> Result<&'a [u8], TestCaseError> {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(TestCaseError::fail(format!(
                "wanted {wanted}, but the replies end with {:?}",
                show(rest)
            ))),
        }
    }
}

/// The store rule (docs/PROTOCOL.md §3, §4.6): a larger timestamp wins, equal ones are
/// broken on the AT line.
fn offer(
    store: &mut HashMap<Vec<u8>, (Nanos, Vec<u8>)>,
    client: &[u8],
    sent_at: Nanos,
    line: &[u8],
) {
    let newer = match store.get(client) {
        Some((t, l)) => (sent_at, line) > (*t, &l[..]),
        None => true,
    };
    if newer {
        store.insert(client.to_vec(), (sent_at, line.to_vec()));
    }
}

/// Checks the replies to `requests`, in order, against the model. The clock
/// read `t0` before connecting and `t1` after EOF bounds every DIFF.
fn check_replies(
    requests: &[Request],
    got: &[u8],
    t0: Nanos,
    t1: Nanos,
) -> Result<(), TestCaseError> {
    let mut store = HashMap::new();
    let mut r = Replies { buf: got, pos: 0 };
    for (n, req) in requests.iter().enumerate() {
        let at = |what: String| format!("request {n} ({}): {what}", show(&req.content));
        let expect_line = |r: &mut Replies<'_>, want: &[u8]| -> Result<(), TestCaseError> {
            let got = r.line(&at(format!("reply {:?}", show(want))))?;
            if got != want {
                return Err(TestCaseError::fail(at(format!(
                    "reply {:?}, want {:?}",
                    show(got),
                    show(want)
                ))));
            }
            Ok(())
        };
        if req.content.len() > LIMIT {
            expect_line(&mut r, &[b"? ", &req.content[..LIMIT]].concat())?;
            continue;
        }
        match &req.what {
            What::Blank => {}
            What::Invalid => expect_line(&mut r, &invalid_reply(&req.content))?,
            What::Iamat {
                client,
                coords,
                time,
                sent_at,
            } => {
                let line = r.line(&at("an AT line".into()))?;
                let tail = [b" ", &client[..], b" ", coords, b" ", time].concat();
                let diff = line
                    .strip_prefix(b"AT Goloman ")
                    .and_then(|l| l.strip_suffix(&tail[..]))
                    .ok_or_else(|| {
                        TestCaseError::fail(at(format!(
                            "reply {:?} is not its AT line",
                            show(line)
                        )))
                    })?;
                let diff = diff_value(diff).map_err(|e| TestCaseError::fail(at(e)))?;
                if diff < t0 - sent_at || diff > t1 - sent_at {
                    return Err(TestCaseError::fail(at(format!(
                        "DIFF {diff} ns outside [{}, {}]",
                        t0 - sent_at,
                        t1 - sent_at
                    ))));
                }
                offer(&mut store, client, *sent_at, line);
            }
            What::Whatsat { client } => match store.get(client) {
                None => expect_line(&mut r, &invalid_reply(&req.content))?,
                Some((_, head)) => {
                    expect_line(&mut r, head)?;
                    let mut json = Vec::new();
                    loop {
                        let l = r.line(&at("JSON, then an empty line".into()))?;
                        if l.is_empty() {
                            break;
                        }
                        json.extend_from_slice(l);
                        json.push(b'\n');
                    }
                    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| {
                        TestCaseError::fail(at(format!("JSON {:?}: {e}", show(&json))))
                    })?;
                    let failure = v["results"] == serde_json::json!([])
                        && v["status"].as_str().is_some_and(|s| s != "OK");
                    if !failure {
                        return Err(TestCaseError::fail(at(format!(
                            "JSON {:?} is not a failure object",
                            show(&json)
                        ))));
                    }
                }
            },
            What::At {
                client,
                sent_at,
                line,
            } => offer(&mut store, client, *sent_at, line),
        }
    }
    let rest = &got[r.pos..];
    if !rest.is_empty() {
        return Err(TestCaseError::fail(format!(
            "bytes after the last reply: {:?}",
            show(rest)
        )));
    }
    Ok(())
}

/// The replies with the run's client prefix replaced and every AT line's
/// DIFF masked, so that two runs compare equal.
fn masked(replies: &[u8], prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(replies.len());
    for line in replies.split_inclusive(|&b| b == b'\n') {
        let line = if line.starts_with(b"AT ") {
            let mut fields: Vec<&[u8]> = line.splitn(4, |&b| b == b' ').collect();
            if fields.len() == 4 {
                fields[2] = b"<DIFF>";
            }
            fields.join(&b' ')
        } else {
            line.to_vec()
        };
        let mut rest = &line[..];
        while let Some(i) = rest.windows(prefix.len()).position(|w| w == prefix) {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(b"<PREFIX>");
            rest = &rest[i + prefix.len()..];
        }
        out.extend_from_slice(rest);
    }
    out
}

/// Numbers each case's runs, so that every run has client IDs of its own.
static RUNS: AtomicU64 = AtomicU64::new(0);

fn check_case(addr: SocketAddr, case: &Case) -> Result<(), TestCaseError> {
    let n = RUNS.fetch_add(1, AtomicOrdering::Relaxed);
    let mut results = Vec::new();
    for (run, whole) in [("a", false), ("b", true)] {
        let prefix = format!("t{n}{run}.").into_bytes();
        let (input, requests) = materialize(case, &prefix);
        let chunks = if whole {
            vec![input]
        } else {
            let mut cuts: Vec<usize> = case.cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            cuts.push(input.len());
            cuts.sort_unstable();
            let mut start = 0;
            cuts.into_iter()
                .map(|end| {
                    let chunk = input[start..end].to_vec();
                    start = end;
                    chunk
                })
                .collect()
        };
        let t0 = protocol::now_nanos();
        let got = exchange(addr, chunks).map_err(TestCaseError::fail)?;
        let t1 = protocol::now_nanos();
        check_replies(&requests, &got, t0, t1).map_err(|e| {
            TestCaseError::fail(format!(
                "{} run: {e}",
                if whole { "whole" } else { "chunked" }
            ))
        })?;
        results.push(masked(&got, &prefix));
    }
    if results[0] != results[1] {
        return Err(TestCaseError::fail(format!(
            "chunked and whole runs differ:\n{}\n{}",
            show(&results[0]),
            show(&results[1])
        )));
    }
    Ok(())
}

#[test]
fn every_request_is_answered_in_order_whatever_the_chunking() {
    let herd = TestHerd::start(&["Goloman"], &[]);
    let addr = herd.addr("Goloman");
    let mut runner = TestRunner::new(Config {
        // Each shrinking step is two connections; keep a failure's report quick.
        max_shrink_iters: 256,
        ..config(64)
    });
    if let Err(e) = runner.run(&cases::case(), |case| check_case(addr, &case)) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Edge cases the property tests leave out on purpose: the server's
// behaviour there disagrees with docs/PROTOCOL.md §2 (see the reasons).

/// An IAMAT line of exactly `len` bytes.
fn iamat_of_length(len: usize) -> Vec<u8> {
    let mut line = b"IAMAT ".to_vec();
    line.resize(len - b" +1+1 1".len(), b'k');
    line.extend_from_slice(b" +1+1 1");
    line
}

#[test]
fn a_line_of_exactly_the_limit_ending_in_crlf_is_served() {
    let herd = TestHerd::start(&["Goloman"], &[]);
    let mut client = herd.client("Goloman");
    let line = iamat_of_length(LIMIT);
    // Ended by `\n`: served.
    client.send(&[&line[..], b"\n"].concat());
    let reply = client.line();
    assert!(reply.starts_with(b"AT Goloman "), "{}", show(&reply));
    // The same line ended by `\r\n` (docs/PROTOCOL.md §2: a line may end in `\r\n`) is
    // no longer than the limit either, but gets `? `.
    client.send(&[&line[..], b"\r\n"].concat());
    let reply = client.line();
    assert!(reply.starts_with(b"AT Goloman "), "{}", show(&reply));
}

#[test]
fn an_over_long_line_cut_just_after_a_cr_is_echoed_with_all_its_first_bytes() {
    let herd = TestHerd::start(&["Goloman"], &[]);
    let mut client = herd.client("Goloman");
    let mut line = vec![b'x'; LIMIT - 1];
    line.push(b'\r');
    line.extend_from_slice(b"yyy\n");
    client.send(&line);
    let reply = client.line();
    let want = [b"? ", &line[..LIMIT]].concat();
    assert!(
        reply == want,
        "reply of {} bytes ending {:?}, want {} bytes ending {:?}",
        reply.len(),
        show(&reply[reply.len().saturating_sub(4)..]),
        want.len(),
        show(&want[want.len() - 4..]),
    );
}
