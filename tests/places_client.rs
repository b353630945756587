//! The Places client against a real local HTTPS Places server
//! (`support::places_server`), driven by a small mio loop like the server's.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use herd::config::{PlacesApi, PlacesConfig};
use herd::places::{Limits, Places, Query, Reply, RequestId};
use mio::{Events, Poll, Token, Waker};
use serde_json::Value;
use support::places_server::{
    sample, Behaviour, Fault, Framing, PlacesServer, TempFile, LEGACY_PATH, LEGACY_SAMPLE, NEW_PATH,
};

const WAKER: Token = Token(usize::MAX - 1);
/// A key with characters that need percent-encoding; it must never be logged.
const KEY: &str = "test-KEY/with+odd&chars=x";
const KEY_ENCODED: &str = "test-KEY%2Fwith%2Bodd%26chars%3Dx";
/// Generous: the machine is small and busy.
const PATIENCE: Duration = Duration::from_secs(30);

/// Every log line of this test binary, to check the key never shows.
fn logs() -> &'static Mutex<Vec<String>> {
    static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let lines = LOGS.get_or_init(|| Mutex::new(Vec::new()));
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = fern::Dispatch::new()
            .level(log::LevelFilter::Debug)
            .chain(fern::Output::call(|record| {
                let line = format!("{} {}", record.target(), record.args());
                if std::env::var_os("HERD_TEST_LOG").is_some() {
                    eprintln!("{line}");
                }
                LOGS.get_or_init(|| Mutex::new(Vec::new()))
                    .lock()
                    .unwrap()
                    .push(line);
            }))
            .apply();
    });
    lines
}

/// A mio loop with one Places client, as the server runs it.
struct Harness {
    poll: Poll,
    events: Events,
    places: Places,
    done: Vec<Reply>,
    /// When each reply came, by id.
    times: HashMap<RequestId, Instant>,
    next_id: RequestId,
}

impl Harness {
    fn new(config: &PlacesConfig, key: Option<&str>, limits: Limits) -> Harness {
        logs();
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let places = Places::with_limits(config, key.map(str::to_string), waker, "Tester", limits)
            .expect("Places set-up");
        Harness {
            poll,
            events: Events::with_capacity(256),
            places,
            done: Vec::new(),
            times: HashMap::new(),
            next_id: 1,
        }
    }

    fn legacy(server: &PlacesServer) -> Harness {
        Harness::new(
            &server.config(PlacesApi::Legacy),
            Some(KEY),
            Limits::default(),
        )
    }

    /// Submits a query; returns its id.
    fn submit(&mut self, query: Query) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        self.places
            .submit(self.poll.registry(), id, query, now, &mut self.done);
        self.stamp();
        id
    }

    fn stamp(&mut self) {
        let now = Instant::now();
        for reply in &self.done {
            self.times.entry(reply.id).or_insert(now);
        }
    }

    /// One turn of the loop: poll until the next deadline, dispatch events, fire timers.
    fn turn(&mut self, until: Instant) {
        let now = Instant::now();
        let mut timeout = until.saturating_duration_since(now);
        if let Some(deadline) = self.places.next_deadline() {
            timeout = timeout.min(deadline.saturating_duration_since(now));
        }
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        let now = Instant::now();
        let registry = self.poll.registry();
        for event in self.events.iter() {
            if event.token() == WAKER {
                self.places.on_wake(registry, now, &mut self.done);
            } else if self.places.owns(event.token()) {
                self.places.on_event(registry, event, now, &mut self.done);
            } else {
                panic!("unexpected token {:?}", event.token());
            }
        }
        let now = Instant::now();
        if self.places.next_deadline().is_some_and(|d| d <= now) {
            self.places.on_timeout(registry, now, &mut self.done);
        }
        self.stamp();
    }

    /// Runs the loop until `n` replies are in; returns them all, by id.
    fn wait_for(&mut self, n: usize) -> HashMap<RequestId, Vec<u8>> {
        let until = Instant::now() + PATIENCE;
        while self.done.len() < n {
            assert!(
                Instant::now() < until,
                "only {} of {n} replies",
                self.done.len()
            );
            self.turn(until);
        }
        let replies: HashMap<_, _> = self.done.drain(..).map(|r| (r.id, r.body)).collect();
        assert_eq!(replies.len(), n, "one reply per request");
        replies
    }

    /// Runs the loop until `condition` holds.
    fn run_until(&mut self, what: &str, mut condition: impl FnMut(&Places) -> bool) {
        let until = Instant::now() + PATIENCE;
        while !condition(&self.places) {
            assert!(Instant::now() < until, "gave up waiting for {what}");
            self.turn(until);
        }
    }

    /// Asks one query and waits for its reply; returns it and how long it took.
    fn ask(&mut self, query: Query) -> (String, Duration) {
        let start = Instant::now();
        let id = self.submit(query);
        let mut replies = self.wait_for(1);
        let body = replies.remove(&id).expect("the reply to our request");
        let took = self.times[&id] - start;
        (String::from_utf8(body).expect("UTF-8 reply"), took)
    }
}

fn query(bound: usize) -> Query {
    Query {
        lat: "34.068930".into(),
        lng: "-118.445127".into(),
        radius_m: "10000".into(),
        bound,
    }
}

/// The sample cut after `bound` results, computed without the client's
/// scanner: in Google's layout an element ends at a line `      },` and the
/// array closes with a line `   ],`.
fn expected_legacy(bound: usize) -> String {
    let text = String::from_utf8(sample(LEGACY_SAMPLE)).unwrap();
    let ends: Vec<usize> = text
        .match_indices("\n      },\n      {")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ends.len(), 19, "the sample has 20 results");
    let cut = if bound >= 20 {
        text.clone()
    } else {
        let keep = ends[bound - 1] + "\n      }".len();
        let close = text.rfind("\n   ],\n").expect("the results array closes");
        format!("{}{}", &text[..keep], &text[close..])
    };
    format!("{}\n\n", cut.trim_end_matches('\n'))
}

/// Checks a successful legacy reply: JSON with exactly `bound` results (at
/// most 20), the first ones of the sample, framed by two newlines.
fn check_legacy_json(reply: &str, bound: usize) {
    assert!(reply.ends_with("}\n\n") && !reply[..reply.len() - 2].contains("\n\n"));
    let full: Value = serde_json::from_slice(&sample(LEGACY_SAMPLE)).unwrap();
    let got: Value = serde_json::from_str(reply).expect("the reply is JSON");
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), bound.min(20));
    assert_eq!(
        results[..],
        full["results"].as_array().unwrap()[..bound.min(20)]
    );
    assert_eq!(got["status"], "OK");
}

/// Checks the failure framing: JSON, no results, the status, a message
/// holding `needle`, two final newlines.
fn check_failure(reply: &str, status: &str, needle: &str) {
    assert!(reply.ends_with("}\n\n"), "{reply:?}");
    assert!(!reply[..reply.len() - 2].contains("\n\n"), "{reply:?}");
    assert!(reply.starts_with("{\n   \"error_message\" : "), "{reply:?}");
    let got: Value = serde_json::from_str(reply).expect("the failure is JSON");
    assert_eq!(got["status"], status, "{reply}");
    assert_eq!(got["results"], Value::Array(vec![]), "{reply}");
    assert_eq!(got["html_attributions"], Value::Array(vec![]), "{reply}");
    let message = got["error_message"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "{message:?} should contain {needle:?}"
    );
    assert!(!message.contains(KEY) && !message.contains(KEY_ENCODED));
}

#[test]
fn legacy_cut_after_bound_is_googles_bytes() {
    for framing in [
        Framing::ContentLength,
        Framing::Chunked(4096),
        Framing::Chunked(7),
        Framing::UntilClose,
    ] {
        let server = PlacesServer::start(Behaviour::default().framing(framing));
        let mut h = Harness::legacy(&server);
        for bound in [1, 2, 5, 19, 20] {
            let (reply, _) = h.ask(query(bound));
            assert_eq!(reply, expected_legacy(bound), "{framing:?}, bound {bound}");
            check_legacy_json(&reply, bound);
        }
    }
}

#[test]
fn legacy_request_carries_location_radius_and_key() {
    let server = PlacesServer::start(Behaviour::default());
    let mut h = Harness::legacy(&server);
    let (reply, _) = h.ask(Query {
        lat: "-33.8670522".into(),
        lng: "151.1957362".into(),
        radius_m: "1234.5".into(),
        bound: 3,
    });
    check_legacy_json(&reply, 3);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "GET");
    assert_eq!(r.path(), LEGACY_PATH);
    assert_eq!(
        r.query("location").as_deref(),
        Some("-33.8670522,151.1957362")
    );
    assert_eq!(r.query("radius").as_deref(), Some("1234.5"));
    assert_eq!(r.query("key").as_deref(), Some(KEY_ENCODED));
    assert!(!r.target.contains('+'));
    assert_eq!(
        r.header("host"),
        Some(format!("localhost:{}", server.port()).as_str())
    );
    assert!(r.body.is_empty());
}

/// The New API sample translated by hand into Google's legacy layout.
const NEW_TRANSLATED: &str = r#"{
   "html_attributions" : [],
   "results" : [
      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.07003,
               "lng" : -118.445827
            }
         },
         "name" : "Café Nº 0 — \u003cSawtelle\u003e",
         "place_id" : "ChIJsample0000xyz",
         "rating" : 3,
         "types" : [ "cafe", "food", "point_of_interest", "establishment" ],
         "user_ratings_total" : 100,
         "vicinity" : "100 Sawtelle Plaza, Los Angeles"
      },
      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.07113,
               "lng" : -118.446527
            }
         },
         "name" : "Café Nº 1 — \u003cSawtelle\u003e",
         "place_id" : "ChIJsample0001xyz",
         "rating" : 4.5,
         "types" : [ "cafe", "food", "point_of_interest", "establishment" ],
         "user_ratings_total" : 101,
         "vicinity" : "101 Sawtelle Plaza, Los Angeles"
      },
      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.07223,
               "lng" : -118.447227
            }
         },
         "name" : "Café Nº 2 — \u003cSawtelle\u003e",
         "place_id" : "ChIJsample0002xyz",
         "rating" : 4.5,
         "types" : [ "cafe", "food", "point_of_interest", "establishment" ],
         "user_ratings_total" : 102,
         "vicinity" : "102 Sawtelle Plaza, Los Angeles"
      },
      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.07333,
               "lng" : -118.447927
            }
         },
         "name" : "Café Nº 3 — \u003cSawtelle\u003e",
         "place_id" : "ChIJsample0003xyz",
         "rating" : 3,
         "types" : [
            "grocery_or_supermarket",
            "supermarket",
            "food",
            "store",
            "point_of_interest",
            "establishment"
         ],
         "user_ratings_total" : 103,
         "vicinity" : "103 Sawtelle Plaza, Los Angeles"
      },
      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.07443,
               "lng" : -118.448627
            }
         },
         "name" : "Café Nº 4 — \u003cSawtelle\u003e",
         "place_id" : "ChIJsample0004xyz",
         "rating" : 4.5,
         "types" : [ "cafe", "food", "point_of_interest", "establishment" ],
         "user_ratings_total" : 104,
         "vicinity" : "104 Sawtelle Plaza, Los Angeles"
      }
   ],
   "status" : "OK"
}

"#;

#[test]
fn new_api_request_and_translated_answer() {
    let server = PlacesServer::start(Behaviour::new_api().framing(Framing::Chunked(100)));
    let mut h = Harness::new(&server.config(PlacesApi::New), Some(KEY), Limits::default());
    let (reply, _) = h.ask(query(5));
    assert_eq!(reply, NEW_TRANSLATED);

    let requests = server.requests();
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, NEW_PATH);
    assert_eq!(r.header("x-goog-api-key"), Some(KEY));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let mask: Vec<&str> = r.header("x-goog-fieldmask").unwrap().split(',').collect();
    for field in [
        "places.id",
        "places.displayName",
        "places.formattedAddress",
        "places.location",
        "places.types",
        "places.rating",
        "places.userRatingCount",
        "places.businessStatus",
    ] {
        assert!(mask.contains(&field), "field mask lacks {field}");
    }
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let body: Value = serde_json::from_slice(&r.body).expect("the request body is JSON");
    assert_eq!(
        body,
        serde_json::json!({
            "locationRestriction": {"circle": {
                "center": {"latitude": 34.06893, "longitude": -118.445127},
                "radius": 10000
            }},
            "maxResultCount": 5
        })
    );

    // A smaller bound: asked for, and cut even if the API sends more.
    let (reply, _) = h.ask(query(2));
    let cut = NEW_TRANSLATED.find("      },\n      {\n         \"business_status\" : \"OPERATIONAL\",\n         \"geometry\" : {\n            \"location\" : {\n               \"lat\" : 34.07223").unwrap();
    let expected = format!(
        "{}      }}\n   ],\n   \"status\" : \"OK\"\n}}\n\n",
        &NEW_TRANSLATED[..cut]
    );
    assert_eq!(reply, expected);
    let body: Value = serde_json::from_slice(&server.requests()[1].body).unwrap();
    assert_eq!(body["maxResultCount"], 2);

    // No place: ZERO_RESULTS.
    server.set_behaviour(Behaviour::new_api().body("{}\n"));
    let (reply, _) = h.ask(query(5));
    assert_eq!(
        reply,
        "{\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"ZERO_RESULTS\"\n}\n\n"
    );
}

#[test]
fn no_key_is_refused_at_once() {
    let server = PlacesServer::start(Behaviour::default());
    let mut h = Harness::new(&server.config(PlacesApi::Legacy), None, Limits::default());
    h.submit(query(5));
    assert_eq!(h.done.len(), 1, "answered within submit");
    let reply = String::from_utf8(h.done.remove(0).body).unwrap();
    check_failure(&reply, "REQUEST_DENIED", "HERD_TEST_PLACES_KEY");
    assert_eq!(server.connections(), 0);
}

fn short_limits() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

#[test]
fn dns_failure_is_answered_in_time() {
    let config = PlacesConfig {
        api: PlacesApi::Legacy,
        url: "https://no-such-host.invalid/maps/api/place/nearbysearch/json".into(),
        key_env: "K".into(),
        ca: None,
    };
    let mut h = Harness::new(&config, Some(KEY), short_limits());
    let (reply, took) = h.ask(query(5));
    check_failure(
        &reply,
        "UNKNOWN_ERROR",
        "DNS lookup of no-such-host.invalid",
    );
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(1500),
        "{took:?}"
    );
}

#[test]
fn refused_connection_is_answered() {
    // Nothing listens there, and no other test takes it meanwhile.
    let port = support::procs::free_port();
    for host in ["127.0.0.1", "localhost"] {
        let config = PlacesConfig {
            api: PlacesApi::Legacy,
            url: format!("https://{host}:{port}/x"),
            key_env: "K".into(),
            ca: None,
        };
        let mut h = Harness::new(&config, Some(KEY), short_limits());
        let (reply, took) = h.ask(query(5));
        check_failure(&reply, "UNKNOWN_ERROR", "cannot connect to");
        assert!(
            took < Duration::from_secs(2) + Duration::from_millis(1500),
            "{took:?}"
        );
    }
}

#[test]
fn untrusted_certificate_is_refused() {
    let server = PlacesServer::start_untrusted(Behaviour::default());
    let mut h = Harness::new(&server.config(PlacesApi::Legacy), Some(KEY), short_limits());
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "invalid peer certificate");
    assert!(
        server.requests().is_empty(),
        "no request crossed an untrusted connection"
    );
}

#[test]
fn certificate_without_places_ca_is_refused() {
    let server = PlacesServer::start(Behaviour::default());
    let mut config = server.config(PlacesApi::Legacy);
    config.ca = None;
    let mut h = Harness::new(&config, Some(KEY), short_limits());
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "invalid peer certificate");
}

#[test]
fn deadline_is_kept() {
    let server = PlacesServer::start(Behaviour::default().delay(Duration::from_secs(6)));
    let limits = Limits {
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let mut h = Harness::new(&server.config(PlacesApi::Legacy), Some(KEY), limits);
    let (reply, took) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "within 1s");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(h.places.connections(), 0, "the late connection is dropped");
}

#[test]
fn http_errors_are_answered() {
    let server = PlacesServer::start(Behaviour::default().status(500).body("oops"));
    let mut h = Harness::legacy(&server);
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "HTTP 500 Internal Server Error");

    server.set_behaviour(Behaviour::default().status(403).body(
        r#"{"error":{"code":403,"message":"API key not <valid>.","status":"PERMISSION_DENIED"}}"#,
    ));
    let (reply, _) = h.ask(query(5));
    check_failure(
        &reply,
        "REQUEST_DENIED",
        "HTTP 403 Forbidden: API key not <valid>.",
    );
    assert!(
        reply.contains("\\u003cvalid\\u003e"),
        "Google's escapes: {reply}"
    );

    server.set_behaviour(Behaviour::default().status(400).body("{}"));
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "INVALID_REQUEST", "HTTP 400");

    server.set_behaviour(Behaviour::default().status(429).body(""));
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "OVER_QUERY_LIMIT", "HTTP 429");
}

#[test]
fn bad_bodies_are_answered() {
    let server = PlacesServer::start(Behaviour::default().body("<html>not json</html>"));
    let mut h = Harness::legacy(&server);
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "not JSON");

    server.set_behaviour(Behaviour::default().body("[1, 2, 3]"));
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "not a JSON object");

    server.set_behaviour(Behaviour::default().fault(Fault::Garbage));
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "bad HTTP response");

    server.set_behaviour(Behaviour::default().fault(Fault::CloseMidBody));
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "closed mid-response");

    server.set_behaviour(
        Behaviour::default()
            .fault(Fault::CloseMidBody)
            .framing(Framing::Chunked(1000)),
    );
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "closed mid-response");
}

#[test]
fn close_before_response_on_a_fresh_connection_fails() {
    let server = PlacesServer::start(Behaviour::default().fault(Fault::CloseBeforeResponse));
    let mut h = Harness::legacy(&server);
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "closed before any response");
    assert_eq!(
        server.requests().len(),
        1,
        "not retried: the connection was fresh"
    );
}

#[test]
fn oversize_bodies_are_refused() {
    let limits = Limits {
        max_body: 10_000,
        ..Limits::default()
    };
    for framing in [
        Framing::ContentLength,
        Framing::Chunked(1000),
        Framing::UntilClose,
    ] {
        let server = PlacesServer::start(Behaviour::default().framing(framing));
        let mut h = Harness::new(&server.config(PlacesApi::Legacy), Some(KEY), limits);
        let (reply, _) = h.ask(query(5));
        check_failure(&reply, "UNKNOWN_ERROR", "larger than 10000 bytes");
    }
    // The default cap, 4 MiB, against a 5 MiB body.
    let mut big = b"{\"results\" : [], \"pad\" : \"".to_vec();
    big.resize(5 << 20, b'x');
    big.extend_from_slice(b"\"}");
    let server = PlacesServer::start(
        Behaviour::default()
            .body(big)
            .framing(Framing::Chunked(64 * 1024)),
    );
    let mut h = Harness::legacy(&server);
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "larger than 4194304 bytes");
}

#[test]
fn keep_alive_reuses_one_connection() {
    let server = PlacesServer::start(Behaviour::default().framing(Framing::Chunked(512)));
    let mut h = Harness::legacy(&server);
    for i in 0..8 {
        let (reply, _) = h.ask(query(1 + i % 20));
        check_legacy_json(&reply, 1 + i % 20);
    }
    assert_eq!(server.requests().len(), 8);
    assert_eq!(
        server.connections(),
        1,
        "all requests over one kept-alive connection"
    );
    assert!(server.requests().iter().all(|r| r.connection == 0));
    assert_eq!(h.places.connections(), 1);
}

#[test]
fn connection_close_is_honoured() {
    let server = PlacesServer::start(Behaviour::default().keep_alive(false));
    let mut h = Harness::legacy(&server);
    for _ in 0..3 {
        let (reply, _) = h.ask(query(2));
        check_legacy_json(&reply, 2);
    }
    assert_eq!(server.connections(), 3);
    assert_eq!(h.places.connections(), 0);
}

#[test]
fn closed_kept_alive_connection_is_retried_once() {
    let server = PlacesServer::start(Behaviour::default().fault(Fault::CloseReused));
    let mut h = Harness::legacy(&server);
    for _ in 0..3 {
        let (reply, _) = h.ask(query(4));
        check_legacy_json(&reply, 4);
    }
    // Request 1 on connection 0; request 2 tried on 0 (closed), retried on 1;
    // request 3 tried on 1 (closed), retried on 2.
    assert_eq!(server.connections(), 3);
    let connections: Vec<usize> = server.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [0, 0, 1, 1, 2]);
}

#[test]
fn idle_connections_are_closed() {
    let server = PlacesServer::start(Behaviour::default());
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut h = Harness::new(&server.config(PlacesApi::Legacy), Some(KEY), limits);
    let (reply, _) = h.ask(query(1));
    check_legacy_json(&reply, 1);
    assert_eq!(h.places.connections(), 1);
    assert!(
        h.places.next_deadline().is_some(),
        "the idle timer is a deadline"
    );
    h.run_until("the idle connection to close", |p| p.connections() == 0);
    let (reply, _) = h.ask(query(1));
    check_legacy_json(&reply, 1);
    assert_eq!(server.connections(), 2);
}

#[test]
fn fifty_requests_in_flight_at_once() {
    let server = PlacesServer::start(Behaviour::default().delay(Duration::from_secs(1)));
    let mut h = Harness::legacy(&server);
    let start = Instant::now();
    let ids: Vec<RequestId> = (0..50).map(|i| h.submit(query(1 + i % 20))).collect();
    let replies = h.wait_for(50);
    let took = start.elapsed();
    for (i, id) in ids.iter().enumerate() {
        check_legacy_json(std::str::from_utf8(&replies[id]).unwrap(), 1 + i % 20);
    }
    assert!(
        took < Duration::from_secs(10),
        "50 delayed requests took {took:?}"
    );
    assert!(
        server.max_concurrent() >= 40,
        "the server held at most {} at once",
        server.max_concurrent()
    );
    assert_eq!(server.requests().len(), 50);
}

#[test]
fn requests_past_the_limit_wait_their_turn() {
    let server = PlacesServer::start(Behaviour::default().delay(Duration::from_millis(300)));
    let limits = Limits {
        max_in_flight: 4,
        ..Limits::default()
    };
    let mut h = Harness::new(&server.config(PlacesApi::Legacy), Some(KEY), limits);
    let start = Instant::now();
    for _ in 0..12 {
        h.submit(query(3));
    }
    let replies = h.wait_for(12);
    for reply in replies.values() {
        check_legacy_json(std::str::from_utf8(reply).unwrap(), 3);
    }
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "three rounds of four"
    );
    assert!(server.max_concurrent() <= 4, "{}", server.max_concurrent());
    assert!(server.connections() <= 4, "{}", server.connections());
    assert_eq!(h.places.pending(), 0);
}

#[test]
fn queue_overflow_is_refused() {
    let server = PlacesServer::start(Behaviour::default().delay(Duration::from_millis(200)));
    let limits = Limits {
        max_in_flight: 1,
        max_queued: 2,
        ..Limits::default()
    };
    // A literal IP: no DNS lookup holds the first request in the queue.
    let mut config = server.config(PlacesApi::Legacy);
    config.url = config.url.replace("localhost", "127.0.0.1");
    let mut h = Harness::new(&config, Some(KEY), limits);
    for _ in 0..4 {
        h.submit(query(1));
    }
    // One in flight, two queued: the fourth is refused at once.
    assert_eq!(h.done.len(), 1);
    check_failure(
        std::str::from_utf8(&h.done[0].body).unwrap(),
        "OVER_QUERY_LIMIT",
        "too many Places requests waiting",
    );
    let replies = h.wait_for(4);
    let ok = replies
        .values()
        .filter(|r| r.starts_with(b"{\n   \"html_attributions\""))
        .count();
    assert_eq!(ok, 3);
}

#[test]
fn setup_errors() {
    let waker_poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(waker_poll.registry(), WAKER).unwrap());
    let mut config = PlacesConfig {
        api: PlacesApi::Legacy,
        url: "https://localhost:1/x".into(),
        key_env: "K".into(),
        ca: Some("/nonexistent/places-ca.pem".into()),
    };
    let err = Places::new(&config, Some(KEY.into()), Arc::clone(&waker), "Tester").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/places-ca.pem"),
        "{err}"
    );

    let junk = TempFile::new("junk.pem", b"this is no certificate\n");
    config.ca = Some(junk.path().to_path_buf());
    let err = Places::new(&config, Some(KEY.into()), Arc::clone(&waker), "Tester").unwrap_err();
    assert!(err.to_string().contains("no PEM certificate"), "{err}");

    let bad = TempFile::new(
        "bad.pem",
        b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    config.ca = Some(bad.path().to_path_buf());
    assert!(Places::new(&config, Some(KEY.into()), Arc::clone(&waker), "Tester").is_err());

    config.ca = None;
    config.url = "http://localhost/x".into();
    assert!(Places::new(&config, Some(KEY.into()), Arc::clone(&waker), "Tester").is_err());
    config.url = "https://localhost/x".into();
    assert!(Places::new(&config, Some(KEY.into()), waker, "Tester").is_ok());
}

#[test]
fn logs_tell_outcomes_never_the_key() {
    let server = PlacesServer::start(Behaviour::default());
    let mut h = Harness::legacy(&server);
    let (reply, _) = h.ask(query(5));
    check_legacy_json(&reply, 5);
    server.set_behaviour(Behaviour::default().status(500));
    let (reply, _) = h.ask(query(5));
    check_failure(&reply, "UNKNOWN_ERROR", "HTTP 500");
    let logs = logs().lock().unwrap().clone();
    assert!(logs.iter().any(|l| l.starts_with("Tester places request")
        && l.contains(": OK,")
        && l.contains(" ms")));
    assert!(logs
        .iter()
        .any(|l| l.starts_with("Tester places request") && l.contains("failed in")));
    for line in &logs {
        assert!(
            !line.contains(KEY) && !line.contains(KEY_ENCODED),
            "the key leaked: {line}"
        );
    }
}

#[test]
fn hanging_connect_times_out() {
    // A listener that never accepts, its queue filled: further SYNs go unanswered.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let filler =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        filler.set_nonblocking(true).unwrap();
        let _ = filler.connect(&addr.into());
        fillers.push(filler);
    }
    let config = PlacesConfig {
        api: PlacesApi::Legacy,
        url: format!("https://{addr}/x"),
        key_env: "K".into(),
        ca: None,
    };
    let limits = Limits {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut h = Harness::new(&config, Some(KEY), limits);
    let (reply, took) = h.ask(query(5));
    // Either our connect timer fired, or (on a kernel that answers the SYN)
    // the TLS handshake never completed and the request deadline did.
    if took < Duration::from_secs(5) {
        check_failure(&reply, "UNKNOWN_ERROR", "connect timed out after 500ms");
    } else {
        check_failure(&reply, "UNKNOWN_ERROR", "within 10s");
    }
    drop(fillers);
}
