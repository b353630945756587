//! Phones and browsers reach the herd (docs/PROTOCOL.md §14): the built
//! binary with `http` and `https` ports, driven by the clients people use —
//! `curl` for OsmAnd reports and the JSON API, a WebSocket client crate
//! (tungstenite) for lines over WebSocket — and by raw sockets where a test
//! must send what no well-behaved client would.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use support::certs::Ca;
use support::herd::{wait_for, Client, PATIENCE};
use support::procs::{free_port, write, HerdProc, HERD};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

/// Two servers in one process, Goloman and Hands, linked, each with a
/// line port and an `http` port.
struct Pair {
    dir: tempfile::TempDir,
    herd: HerdProc,
    line: HashMap<&'static str, SocketAddr>,
    http: HashMap<&'static str, SocketAddr>,
}

impl Pair {
    fn start(extra_conf: &str, flags: &[&str], env: &[(&str, &str)]) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let (mut line, mut http) = (HashMap::new(), HashMap::new());
        let mut conf = String::new();
        for name in ["Goloman", "Hands"] {
            let (l, h) = (free_port(), free_port());
            conf += &format!("server {name} 127.0.0.1:{l} http 127.0.0.1:{h}\n");
            line.insert(name, format!("127.0.0.1:{l}").parse().unwrap());
            http.insert(name, format!("127.0.0.1:{h}").parse().unwrap());
        }
        conf += "link Goloman Hands\n";
        conf += extra_conf;
        let path = write(dir.path(), "herd.conf", &conf);
        let mut cmd = Command::new(HERD);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let herd = HerdProc::start(cmd, dir.path(), &path, &["Goloman", "Hands"], flags);
        Pair {
            dir,
            herd,
            line,
            http,
        }
    }

    fn url(&self, server: &str, path: &str) -> String {
        format!("http://{}{path}", self.http[server])
    }

    fn log(&self, server: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("logs/{server}.log")))
            .unwrap_or_default()
    }
}

/// What curl got: the status of the last response, its body, and curl's
/// verbose trace (standard error).
struct Got {
    status: u16,
    body: String,
    trace: String,
}

/// Runs `curl ARGS` (silent, verbose trace on standard error).
fn curl(args: &[&str]) -> Got {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (Debian's curl package; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    Got {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_string(),
        trace: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The TIME field (the last) of an AT line.
fn time_of(at: &str) -> &str {
    at.trim_end().rsplit(' ').next().unwrap()
}

#[test]
fn osmand_reports_from_curl_are_iamats_the_whole_herd_sees() {
    let p = Pair::start("", &[], &[]);
    // GET with the query string, as the OsmAnd app sends it.
    let got = curl(&[&p.url(
        "Goloman",
        "/?id=kiwi.cs.ucla.edu&lat=34.068930&lon=-118.445127&timestamp=1520023934.918963997&speed=0&batt=87",
    )]);
    assert_eq!(got.status, 200, "{}", got.trace);
    let at = got.body.clone();
    assert!(at.starts_with("AT Goloman +"), "{at:?}");
    assert!(
        at.ends_with(" kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997\n"),
        "{at:?}"
    );
    assert!(got.trace.contains("Content-Length: "), "{}", got.trace);
    // Acknowledged over HTTP, it is then the first line of a WHATSAT on the
    // other server's line port.
    let mut hands = Client::connect(p.line["Hands"]);
    let first = wait_for("Hands to know kiwi", || {
        let reply = hands.ask("WHATSAT kiwi.cs.ucla.edu 10 1");
        reply.starts_with("AT ").then_some(reply)
    });
    assert_eq!(format!("{first}\n"), at);
    let _ = hands.whatsat_reply();

    // POST with a form body, as Traccar Client's older versions send it.
    let got = curl(&[
        "-d",
        "id=phone-2&lat=-33.8688&lon=151.2093&timestamp=1700000000",
        &p.url("Hands", "/"),
    ]);
    assert_eq!(got.status, 200);
    assert!(got.body.starts_with("AT Hands +"));
    assert!(
        got.body
            .ends_with(" phone-2 -33.8688+151.2093 1700000000\n"),
        "{}",
        got.body
    );

    // POST JSON, Traccar Client's newer format; numbers keep their digits.
    let json = r#"{"location": {"timestamp": "2016-01-27T18:55:47.123Z", "coords": {"latitude": 34.10, "longitude": -118.40, "speed": 0, "accuracy": 5}, "battery": {"level": 0.5, "is_charging": false}, "activity": {"type": "still"}, "is_moving": false}, "device_id": "phone-3"}"#;
    let got = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        json,
        &p.url("Goloman", "/"),
    ]);
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(
        got.body
            .ends_with(" phone-3 +34.10-118.40 1453920947.123\n"),
        "{}",
        got.body
    );

    // A batch of positions buffered while offline: stored in order.
    let batch = r#"{"device_id": "phone-4", "location": [
        {"timestamp": "2016-01-27T18:55:47Z", "coords": {"latitude": 1.5, "longitude": 2.5}},
        {"timestamp": "2016-01-27T18:55:48Z", "coords": {"latitude": 1.6, "longitude": 2.6}},
        {"timestamp": "2016-01-27T18:55:49Z", "coords": {"latitude": 3.4e1, "longitude": -1.25E-2}}]}"#;
    let got = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        batch,
        &p.url("Goloman", "/"),
    ]);
    assert_eq!(got.status, 200, "{}", got.body);
    let lines: Vec<&str> = got.body.lines().collect();
    assert_eq!(lines.len(), 3, "{}", got.body);
    assert!(lines[0].ends_with(" phone-4 +1.5+2.5 1453920947"));
    assert!(lines[1].ends_with(" phone-4 +1.6+2.6 1453920948"));
    assert!(
        lines[2].ends_with(" phone-4 +34-0.0125 1453920949"),
        "{}",
        lines[2]
    );
    let known = curl(&[&p.url("Goloman", "/v1/clients/phone-4")]);
    assert!(
        known.body.contains("\"time\": \"1453920949\""),
        "{}",
        known.body
    );

    // Expect: 100-continue is answered before the body is sent.
    let got = curl(&[
        "-H",
        "Expect: 100-continue",
        "-d",
        "id=phone-5&lat=1&lon=2&timestamp=1700000001",
        &p.url("Goloman", "/osmand"),
    ]);
    assert_eq!(got.status, 200);
    assert!(got.trace.contains("HTTP/1.1 100 Continue"), "{}", got.trace);
    assert!(got.body.ends_with(" phone-5 +1+2 1700000001\n"));

    // Two requests in one curl run share the kept-alive connection.
    let one = p.url("Hands", "/?id=ka&lat=1&lon=1&timestamp=1");
    let two = p.url("Hands", "/?id=ka&lat=2&lon=2&timestamp=2");
    let got = curl(&[&one, &two]);
    assert_eq!(got.status, 200);
    assert!(
        got.trace.contains("Re-using existing connection")
            || got.trace.contains("Reusing existing"),
        "{}",
        got.trace
    );
}

#[test]
fn every_timestamp_form_is_converted_exactly() {
    let p = Pair::start("", &[], &[]);
    let cases = [
        ("1520023934.918963997", "1520023934.918963997"),
        ("1520023934", "1520023934"),
        ("1520023934.5", "1520023934.5"),
        ("1520023934918", "1520023934.918"),
        ("2016-01-27T18:55:47Z", "1453920947"),
        ("2016-01-27T18:55:47.5Z", "1453920947.5"),
        ("2016-01-27T18:55:47.123456789Z", "1453920947.123456789"),
        ("2016-01-27T20:55:47+02:00", "1453920947"),
        ("2016-01-27T13:55:47-0500", "1453920947"),
        ("2016-01-27T18:55:47", "1453920947"),
        ("2016-01-27 18:55:47", "1453920947"),
    ];
    for (i, (given, want)) in cases.iter().enumerate() {
        let got = curl(&[
            "-G",
            "--data-urlencode",
            &format!("id=t{i}"),
            "--data-urlencode",
            "lat=1",
            "--data-urlencode",
            "lon=1",
            "--data-urlencode",
            &format!("timestamp={given}"),
            &p.url("Goloman", "/"),
        ]);
        assert_eq!(got.status, 200, "{given}: {}", got.body);
        assert_eq!(time_of(&got.body), *want, "{given}");
    }
    // No timestamp: the server's clock at receipt, with 9 fraction digits.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let got = curl(&[&p.url("Goloman", "/?id=now&lat=1&lon=1")]);
    assert_eq!(got.status, 200);
    let (secs, frac) = time_of(&got.body).split_once('.').unwrap();
    assert_eq!(frac.len(), 9);
    let secs: u64 = secs.parse().unwrap();
    assert!(secs >= before && secs <= before + 60, "{secs} vs {before}");
}

#[test]
fn every_rejection_is_400_and_stores_nothing() {
    let p = Pair::start("", &[], &[]);
    let stored = |p: &Pair| p.herd.stored("Goloman");
    let before = stored(&p);
    let cases: &[&[&str]] = &[
        &["lat=1", "lon=1", "timestamp=1"],
        &["id=", "lat=1", "lon=1"],
        &["id=a b", "lat=1", "lon=1"],
        &["id=a\u{1}b", "lat=1", "lon=1"],
        &["id=x", "timestamp=1"],
        &["id=x", "lat=1"],
        &["id=x", "lat=91", "lon=1"],
        &["id=x", "lat=1", "lon=-180.5"],
        &["id=x", "lat=north", "lon=1"],
        &["id=x", "location=1;2"],
        &["id=x", "lat=1", "lon=1", "timestamp=yesterday"],
        &["id=x", "lat=1", "lon=1", "timestamp=2016-13-27T18:55:47Z"],
    ];
    for fields in cases {
        let mut args = vec!["-G".to_string()];
        for f in *fields {
            args.push("--data-urlencode".into());
            args.push(f.to_string());
        }
        args.push(p.url("Goloman", "/"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = curl(&args);
        assert_eq!(got.status, 400, "{fields:?}: {}", got.body);
        assert_eq!(got.body.lines().count(), 1, "one line: {:?}", got.body);
    }
    // A batch with one bad position is refused whole.
    let batch = r#"{"device_id": "batch", "location": [
        {"timestamp": "2016-01-27T18:55:47Z", "coords": {"latitude": 1, "longitude": 2}},
        {"timestamp": "2016-01-27T18:55:48Z", "coords": {"latitude": 100, "longitude": 2}}]}"#;
    let got = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        batch,
        &p.url("Goloman", "/"),
    ]);
    assert_eq!(got.status, 400, "{}", got.body);
    let got = curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        "{not json",
        &p.url("Goloman", "/"),
    ]);
    assert_eq!(got.status, 400, "{}", got.body);
    // Nothing of any of them was stored (a good request then is).
    assert_eq!(stored(&p), before);
    assert_eq!(curl(&[&p.url("Goloman", "/v1/clients/batch")]).status, 404);
    let got = curl(&[&p.url("Goloman", "/?id=good&lat=1&lon=1")]);
    assert_eq!(got.status, 200);
    wait_for("the good report stored", || {
        (stored(&p) == before + 1.0).then_some(())
    });
}

#[test]
fn the_json_api_answers_as_the_line_protocol_would() {
    let p = Pair::start("", &[], &[]);
    let mut line = Client::connect(p.line["Goloman"]);
    let at = line.ask("IAMAT kiwi +34.068930-118.445127 1520023934.918963997");

    let got = curl(&[&p.url("Goloman", "/v1/clients/kiwi")]);
    assert_eq!(got.status, 200);
    assert!(got.trace.contains("Content-Type: application/json"));
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(v["client"], "kiwi");
    assert_eq!(v["latitude"].to_string(), "34.06893");
    assert!(
        got.body.contains("\"latitude\": 34.068930,"),
        "digits kept: {}",
        got.body
    );
    assert!(
        got.body.contains("\"longitude\": -118.445127,"),
        "{}",
        got.body
    );
    assert_eq!(v["time"], "1520023934.918963997");
    assert_eq!(v["server"], "Goloman");
    assert_eq!(v["at"], at.as_str());

    let got = curl(&[&p.url("Goloman", "/v1/clients/nobody")]);
    assert_eq!(got.status, 404);
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert!(v["error"].is_string());

    // The places of a WHATSAT: exactly the JSON the line port carries.
    let (head, json) = {
        line.send(b"WHATSAT kiwi 10 2\n");
        line.whatsat_reply().unwrap()
    };
    let got = curl(&[&p.url("Goloman", "/v1/clients/kiwi/places?radius=10&bound=2")]);
    assert_eq!(got.status, 200, "{}", got.body);
    let v: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(v["at"], head.trim_end());
    let places = got.body.split_once("\"places\": ").unwrap().1;
    assert_eq!(
        places.trim_end().strip_suffix('}').unwrap(),
        json.trim_end()
    );
    for (query, status) in [
        ("radius=0&bound=2", 400),
        ("radius=51&bound=2", 400),
        ("radius=10&bound=21", 400),
        ("radius=10", 400),
    ] {
        let got = curl(&[&p.url("Goloman", &format!("/v1/clients/kiwi/places?{query}"))]);
        assert_eq!(got.status, status, "{query}");
    }
    let got = curl(&[&p.url("Goloman", "/v1/clients/nobody/places?radius=1&bound=1")]);
    assert_eq!(got.status, 404);

    // POST /v1/lines: the bytes the line protocol would write, in order.
    let lines = "WHATSAT kiwi 10 1\nnonsense here\n\nWHATSAT nobody 1 1\n";
    let got = curl(&["--data-binary", lines, &p.url("Goloman", "/v1/lines")]);
    assert_eq!(got.status, 200);
    let mut raw = TcpStream::connect(p.line["Goloman"]).unwrap();
    raw.write_all(lines.as_bytes()).unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let mut expected = String::new();
    raw.read_to_string(&mut expected).unwrap();
    assert_eq!(got.body, expected);

    let got = curl(&[
        "--data-binary",
        "IAMAT lines +1+1 1\n",
        &p.url("Goloman", "/v1/lines"),
    ]);
    assert!(got.body.starts_with("AT Goloman ") && got.body.ends_with(" lines +1+1 1\n"));

    // Unknown paths under /v1/ and wrong methods.
    let got = curl(&[&p.url("Goloman", "/v1/nothing")]);
    assert_eq!(got.status, 404);
    assert!(serde_json::from_str::<serde_json::Value>(&got.body).unwrap()["error"].is_string());
    let got = curl(&["-X", "PUT", &p.url("Goloman", "/v1/lines")]);
    assert_eq!(got.status, 405);
    assert!(got.trace.contains("Allow: POST"), "{}", got.trace);
    let got = curl(&["-X", "DELETE", &p.url("Goloman", "/v1/clients/kiwi")]);
    assert_eq!(got.status, 405);
    // Herd traffic never comes over HTTP.
    let got = curl(&[
        "--data-binary",
        "AT X +0.1 spoof +1+1 1\n",
        &p.url("Goloman", "/v1/lines"),
    ]);
    assert_eq!(got.body, "? AT X +0.1 spoof +1+1 1\n");
}

#[test]
fn https_and_the_api_token() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("herd test CA");
    ca.write(&dir.path().join("ca.pem"));
    ca.leaf(&["localhost"]).write(dir.path(), "public");
    let (line, https) = (free_port(), free_port());
    let conf = format!(
        "server Solo 127.0.0.1:{line} https 127.0.0.1:{https}\npublic_cert public.pem\npublic_key public.key\napi_token_env HERD_TEST_TOKEN\n"
    );
    let path = write(dir.path(), "herd.conf", &conf);
    // --check-config knows the new port and directives.
    let check = Command::new(HERD)
        .args(["--check-config", "--config"])
        .arg(&path)
        .env("HERD_TEST_TOKEN", "x")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(said.contains(&format!("https 127.0.0.1:{https}")), "{said}");
    assert!(said.contains("public  cert "), "{said}");
    assert!(
        said.contains("requests need the token in $HERD_TEST_TOKEN: set"),
        "{said}"
    );
    let mut cmd = Command::new(HERD);
    cmd.env("HERD_TEST_TOKEN", "s3cret-t0ken");
    let _herd = HerdProc::start(cmd, dir.path(), &path, &["Solo"], &["--log-level", "debug"]);
    let ca_file = dir.path().join("ca.pem");
    let tls = |extra: &[&str], path: &str| {
        let resolve = format!("localhost:{https}:127.0.0.1");
        let url = format!("https://localhost:{https}{path}");
        let mut args = vec!["--cacert", ca_file.to_str().unwrap(), "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let got = tls(&[], "/?id=secure&lat=1&lon=2&timestamp=5");
    assert_eq!(got.status, 401, "{}", got.trace);
    assert!(got.trace.contains("WWW-Authenticate: Bearer"));
    let got = tls(&["-H", "Authorization: Bearer wrong"], "/v1/clients/secure");
    assert_eq!(got.status, 401);
    assert!(serde_json::from_str::<serde_json::Value>(&got.body).unwrap()["error"].is_string());
    let got = tls(
        &[],
        "/?id=secure&lat=1&lon=2&timestamp=5&token=s3cret-t0ken",
    );
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.ends_with(" secure +1+2 5\n"));
    let got = tls(
        &["-H", "Authorization: Bearer s3cret-t0ken"],
        "/v1/clients/secure",
    );
    assert_eq!(got.status, 200);
    assert!(
        got.trace.contains("SSL connection using TLS"),
        "{}",
        got.trace
    );
    // Line ports take no token.
    let mut c = Client::connect(format!("127.0.0.1:{line}").parse().unwrap());
    assert!(c.ask("WHATSAT secure 1 1").starts_with("AT Solo "));
    // The token never reaches the log.
    let log_path = dir.path().join("logs/Solo.log");
    let log = wait_for("the request in the log", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains("token=(hidden)").then_some(log)
    });
    assert!(!log.contains("s3cret-t0ken"), "the token was logged");
}

/// A WebSocket client on `addr`'s `/v1/ws`.
fn websocket(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let (ws, response) = tungstenite::client(format!("ws://{addr}/v1/ws"), stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The next data message, as bytes.
fn message(ws: &mut tungstenite::WebSocket<TcpStream>) -> Vec<u8> {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.as_bytes().to_vec(),
            Message::Binary(b) => return b.to_vec(),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(c) => panic!("closed: {c:?}"),
        }
    }
}

#[test]
fn websocket_carries_lines_and_each_reply_is_a_message() {
    let p = Pair::start("", &[], &[]);
    let mut ws = websocket(p.http["Goloman"]);
    ws.send(Message::text("IAMAT wsclient +1.5-2.5 1700000000"))
        .unwrap();
    let at = String::from_utf8(message(&mut ws)).unwrap();
    assert!(
        at.starts_with("AT Goloman +") && at.ends_with(" wsclient +1.5-2.5 1700000000\n"),
        "{at:?}"
    );
    // Several lines in one message: one message per reply; a blank line
    // gets none; a WHATSAT's reply is one message.
    ws.send(Message::text(
        "IAMAT second +1+1 1\n\nWHATSAT wsclient 5 1\nnonsense\n",
    ))
    .unwrap();
    let first = String::from_utf8(message(&mut ws)).unwrap();
    assert!(first.ends_with(" second +1+1 1\n"), "{first:?}");
    let whatsat = String::from_utf8(message(&mut ws)).unwrap();
    assert!(whatsat.starts_with(&at), "{whatsat:?}");
    assert!(whatsat.ends_with("}\n\n"), "{whatsat:?}");
    assert_eq!(message(&mut ws), b"? nonsense\n");
    // A fragmented message; a ping between its fragments.
    ws.write(Message::Frame(Frame::message(
        "IAMAT frag +",
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    ws.write(Message::Ping("are you there".into())).unwrap();
    ws.write(Message::Frame(Frame::message(
        "3+4 1700000002",
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    let mut pong = false;
    let reply = loop {
        match ws.read().unwrap() {
            Message::Pong(b) => {
                assert_eq!(&b[..], b"are you there");
                pong = true;
            }
            Message::Text(t) => break t.to_string(),
            other => panic!("{other:?}"),
        }
    };
    assert!(reply.ends_with(" frag +3+4 1700000002\n"), "{reply:?}");
    assert!(pong, "the ping was answered");
    // Binary messages are lines too; bytes that are not UTF-8 come back binary.
    ws.send(Message::binary(b"\xffbad\n".to_vec())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], b"? \xffbad\n"),
        other => panic!("{other:?}"),
    }
    // What came over WebSocket is the herd's: Hands knows it.
    let mut hands = Client::connect(p.line["Hands"]);
    wait_for("Hands to know frag", || hands.known("frag"));
    // A close is answered with a close.
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

/// Reads a whole HTTP response head (and `Content-Length` body) from `r`.
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// True once the peer has closed (EOF or reset) within the patience.
fn closed(r: &mut BufReader<TcpStream>) -> bool {
    r.get_ref().set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Sends `bytes` on a fresh connection to `addr`.
fn send(addr: SocketAddr, bytes: &[u8]) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    (&s).write_all(bytes).unwrap();
    BufReader::new(s)
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Writes a masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n < 65536 => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// A raw socket upgraded to WebSocket on `addr`.
fn raw_websocket(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut r = send(
        addr,
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let mut head = String::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        head += &l;
        if l == "\r\n" {
            break;
        }
    }
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    r
}

/// The close code of the next frame, which must be a close.
fn close_code(r: &mut BufReader<TcpStream>) -> u16 {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).unwrap();
    assert_eq!(head[0] & 0x0f, 8, "a close frame");
    let mut payload = vec![0; (head[1] & 0x7f) as usize];
    r.read_exact(&mut payload).unwrap();
    u16::from_be_bytes([payload[0], payload[1]])
}

#[test]
fn hostile_http_and_websocket_input_is_refused_and_costs_nothing_lasting() {
    let p = Pair::start("", &["--request-timeout", "1s"], &[]);
    let addr = p.http["Goloman"];
    // Oversized head: 431, closed.
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let mut r = send(addr, &big);
    assert_eq!(read_response(&mut r).0, 431);
    assert!(closed(&mut r));
    // Oversized body: 413 before it is read, closed.
    let mut r = send(
        addr,
        b"POST /v1/lines HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
    );
    assert_eq!(read_response(&mut r).0, 413);
    assert!(closed(&mut r));
    let mut chunked =
        b"POST /v1/lines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..70 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend(std::iter::repeat_n(b'x', 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    let mut r = send(addr, &chunked);
    assert_eq!(read_response(&mut r).0, 413);
    // Garbage: 400, closed.
    let mut r = send(addr, b"\x00\x01\x02 garbage\r\n\r\n");
    assert_eq!(read_response(&mut r).0, 400);
    assert!(closed(&mut r));
    // A slow request gets 408 at its deadline; others are served meanwhile.
    let started = Instant::now();
    let mut slow = send(addr, b"GET /?id=slow&lat=1&lon=1 HTTP/1.1\r\nHo");
    let got = curl(&[&p.url("Goloman", "/?id=fast&lat=1&lon=1")]);
    assert_eq!(got.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "served while the slow one waits"
    );
    assert_eq!(read_response(&mut slow).0, 408);
    assert!(closed(&mut slow));
    // A chunked body in pieces is read whole.
    let mut r = send(
        addr,
        b"POST /v1/lines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nIAMAT \r\n",
    );
    r.get_mut()
        .write_all(b"c\r\nchunk +1+1 1\r\n0\r\n\r\n")
        .unwrap();
    let (status, body) = read_response(&mut r);
    assert_eq!(status, 200);
    assert!(body.ends_with(" chunk +1+1 1\n"), "{body:?}");

    // WebSocket: an unmasked frame is 1002, a message over the line limit
    // 1009, bad UTF-8 in a text message 1007.
    let mut ws = raw_websocket(addr);
    ws.get_mut()
        .write_all(&frame(true, 1, b"IAMAT a +1+1 1", false))
        .unwrap();
    assert_eq!(close_code(&mut ws), 1002);
    assert!(closed(&mut ws));
    let mut ws = raw_websocket(addr);
    ws.get_mut()
        .write_all(&frame(true, 2, &vec![b'x'; 9000], true))
        .unwrap();
    assert_eq!(close_code(&mut ws), 1009);
    let mut ws = raw_websocket(addr);
    ws.get_mut()
        .write_all(&frame(true, 1, b"IAMAT \xc3\x28 +1+1 1", true))
        .unwrap();
    assert_eq!(close_code(&mut ws), 1007);
    // A bad handshake is 400.
    let mut r = send(addr, b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n");
    assert_eq!(read_response(&mut r).0, 400);

    // 2,000 abrupt connections, each with half a request: memory comes
    // back, nothing panics, others are served.
    let pid = p.herd.pid;
    let before = rss_kib(pid);
    for round in 0..4 {
        let mut conns = Vec::new();
        for i in 0..500 {
            let Ok(s) = TcpStream::connect(addr) else {
                continue;
            };
            let junk =
                format!("POST /?id=abrupt{round}x{i} HTTP/1.1\r\nContent-Length: 60000\r\n\r\n");
            let _ = (&s).write_all(junk.as_bytes());
            let _ = (&s).write_all(&[b'z'; 30000]);
            conns.push(s);
        }
        for s in conns {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        }
    }
    let got = curl(&[&p.url("Goloman", "/?id=after&lat=1&lon=1")]);
    assert_eq!(got.status, 200);
    let after = wait_for("RSS to settle", || {
        let now = rss_kib(pid);
        (now < before + 32 * 1024).then_some(now)
    });
    eprintln!("RSS {before} KiB before 2,000 abrupt connections, {after} KiB after");
    assert!(p.log("Goloman").lines().all(|l| !l.contains("panicked")));
}

#[test]
fn a_report_is_not_acknowledged_until_it_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = support::tmpfs::Tmpfs::mount(&dir.path().join("state"), "4m") else {
        return;
    };
    let (line, http) = (free_port(), free_port());
    let conf = format!("server Solo 127.0.0.1:{line} http 127.0.0.1:{http}\n");
    let path = write(dir.path(), "herd.conf", &conf);
    let mut cmd = Command::new(HERD);
    cmd.args(["Solo", "--config"])
        .arg(&path)
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .arg("--state-dir")
        .arg(fs.path())
        .args(["--log-level", "info", "--metrics", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let herd = HerdProc::spawn(cmd);
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let got = curl(&[&format!("http://{addr}/?id=before&lat=1&lon=1&timestamp=1")]);
    assert_eq!(got.status, 200);
    fs.fill();
    // Line clients fill what is left of the journal's last page, until the
    // server says it holds replies.
    let mut filler = TcpStream::connect(format!("127.0.0.1:{line}")).unwrap();
    let mut lines = String::new();
    for i in 0..400 {
        lines += &format!("IAMAT filler{i} +34.068930-118.445127 1700000000.{i:09}\n");
    }
    filler.write_all(lines.as_bytes()).unwrap();
    let log = dir.path().join("logs/Solo.log");
    wait_for("the journal failure in the log", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("holding the replies")
            .then_some(())
    });
    // The journal is full: the report is answered only once space is back.
    let mut r = send(
        addr,
        b"GET /?id=held&lat=1&lon=2&timestamp=2 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut first = [0u8; 1];
    match r.read(&mut first) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("a reply before the journal had the record: {other:?}"),
    }
    fs.resize("16m");
    r.get_ref().set_read_timeout(Some(PATIENCE)).unwrap();
    let (status, body) = read_response(&mut r);
    assert_eq!(status, 200);
    assert!(body.ends_with(" held +1+2 2\n"), "{body:?}");
    // And it is in the journal.
    let journal = std::fs::read_to_string(fs.path().join("Solo.journal")).unwrap();
    assert!(journal.contains(" held +1+2 2\n"), "journaled");
    drop(herd);
}
