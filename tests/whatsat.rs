//! WHATSAT end to end (docs/PROTOCOL.md §3, §5): a real server, a real client, and the
//! tests' own HTTPS Places server with a CA made in the test.

mod support;

use std::time::{Duration, Instant};

use herd::config::PlacesApi;
use support::herd::{timestamp, Client, TestHerd};
use support::places_server::{sample, Behaviour, Framing, PlacesServer, LEGACY_SAMPLE};

const KEY: &str = "test-key/with+odd&chars";

fn herd_with(places: &PlacesServer, api: PlacesApi) -> TestHerd {
    let config = places.config(api);
    TestHerd::start_with(&["Goloman"], &[], move |c| {
        c.places = config.clone();
        c.places_key = Some(KEY.to_string());
    })
}

/// The legacy sample cut after its `bound`-th result, found by Google's own
/// layout (each result closes with `\n      }`), independently of herd's scanner.
fn expected_cut(bound: usize) -> Vec<u8> {
    let text = String::from_utf8(sample(LEGACY_SAMPLE)).unwrap();
    let ends: Vec<usize> = text
        .match_indices("\n      }")
        .map(|(i, m)| i + m.len())
        .collect();
    assert_eq!(ends.len(), 20, "the sample has 20 results");
    let close = text.find("\n   ],").expect("results closes");
    let mut cut = text[..ends[bound - 1]].to_string();
    cut.push_str(&text[close..]);
    let mut out = cut.trim_end_matches('\n').as_bytes().to_vec();
    out.extend_from_slice(b"\n\n");
    out
}

#[test]
fn bounds_1_5_and_20_reproduce_googles_bytes_cut_after_the_bound() {
    for framing in [Framing::ContentLength, Framing::Chunked(700)] {
        let places = PlacesServer::start(Behaviour::default().framing(framing));
        let h = herd_with(&places, PlacesApi::Legacy);
        let mut c = h.client("Goloman");
        let at = c.ask("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997");
        for bound in [1, 5, 20] {
            c.send(format!("WHATSAT kiwi.cs.ucla.edu 10 {bound}\n").as_bytes());
            let (head, json) = c.answer();
            assert_eq!(String::from_utf8(head).unwrap(), at);
            assert_eq!(
                String::from_utf8_lossy(&json),
                String::from_utf8_lossy(&expected_cut(bound)),
                "bound {bound}, {framing:?}"
            );
        }
        let reqs = places.requests();
        assert_eq!(reqs.len(), 3);
        for r in &reqs {
            assert_eq!(
                r.query("location").as_deref(),
                Some("34.068930,-118.445127")
            );
            assert_eq!(r.query("radius").as_deref(), Some("10000"));
            // Percent-encoded: `/`, `+` and `&` would change the query's meaning.
            assert_eq!(
                r.query("key").as_deref(),
                Some("test-key%2Fwith%2Bodd%26chars")
            );
        }
        // One kept-alive connection served them all.
        assert_eq!(places.connections(), 1);
    }
}

#[test]
fn the_answer_is_one_write_the_at_line_and_the_json_together() {
    let places = PlacesServer::start(Behaviour::default());
    let h = herd_with(&places, PlacesApi::Legacy);
    let mut c = h.client("Goloman");
    c.ask("IAMAT k +34.068930-118.445127 1520023934.918963997");
    c.send(b"WHATSAT k 0.5 1\n");
    let (_, json) = c.answer();
    assert!(json.ends_with(b"}\n\n"));
    assert_eq!(places.requests()[0].query("radius").as_deref(), Some("500"));
}

#[test]
fn the_new_api_is_asked_properly_and_translated() {
    let places = PlacesServer::start(Behaviour::new_api());
    let h = herd_with(&places, PlacesApi::New);
    let mut c = h.client("Goloman");
    c.ask("IAMAT kiwi +34.068930-118.445127 1520023934.918963997");
    c.send(b"WHATSAT kiwi 1.5 3\n");
    let (_, json) = c.answer();
    let text = String::from_utf8(json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "OK");
    let results = v["results"].as_array().unwrap();
    // Our Places server sends its 5 places whatever it was asked; herd keeps the bound.
    assert_eq!(results.len(), 3, "{text}");
    let r = &places.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("x-goog-api-key"), Some(KEY));
    assert!(r.header("x-goog-fieldmask").is_some());
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["maxResultCount"], 3);
    assert_eq!(body["locationRestriction"]["circle"]["radius"], 1500.0);
    assert_eq!(
        body["locationRestriction"]["circle"]["center"]["latitude"],
        34.06893
    );
    assert_eq!(results[0]["name"], "Café Nº 0 — <Sawtelle>");
    assert!(
        text.contains("\\u003cSawtelle\\u003e"),
        "Google's escapes: {text}"
    );
    assert!(
        text.starts_with("{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n"),
        "{text}"
    );
}

#[test]
fn an_untrusted_places_server_gets_the_failure_framing() {
    let places = PlacesServer::start_untrusted(Behaviour::default());
    let h = herd_with(&places, PlacesApi::Legacy);
    let mut c = h.client("Goloman");
    let at = c.ask("IAMAT k +1+1 1520023934");
    c.send(b"WHATSAT k 1 1\n");
    let (head, json) = c.answer();
    assert_eq!(String::from_utf8(head).unwrap(), at);
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["results"], serde_json::json!([]));
    assert_ne!(v["status"], "OK");
    assert!(v["error_message"].as_str().unwrap().len() > 5, "{v}");
}

#[test]
fn fifty_slow_whatsats_overlap_and_iamats_never_wait_for_them() {
    let places = PlacesServer::start(Behaviour::default().delay(Duration::from_secs(1)));
    let h = herd_with(&places, PlacesApi::Legacy);
    h.client("Goloman")
        .ask(&format!("IAMAT kiwi +34.068930-118.445127 {}", timestamp()));
    let mut askers: Vec<Client> = (0..50).map(|_| h.client("Goloman")).collect();
    let start = Instant::now();
    for c in &mut askers {
        c.send(b"WHATSAT kiwi 10 5\n");
    }
    // While Places holds all fifty, an IAMAT elsewhere is answered.
    let mut other = h.client("Goloman");
    let r = other.ask(&format!("IAMAT quick +1+1 {}", timestamp()));
    let iamat_done = start.elapsed();
    assert!(
        r.ends_with(" quick +1+1 ") || r.contains(" quick +1+1 "),
        "{r}"
    );
    let mut first_answer = None;
    for c in &mut askers {
        let (_, json) = c.answer();
        first_answer.get_or_insert(start.elapsed());
        assert!(json.starts_with(b"{\n"));
    }
    let all = start.elapsed();
    eprintln!("IAMAT answered after {iamat_done:?}; 50 WHATSATs with 1 s Places delay done in {all:?}; Places saw {} at once", places.max_concurrent());
    assert!(
        iamat_done < first_answer.unwrap(),
        "the IAMAT waited for Places"
    );
    assert!(
        all < Duration::from_secs(10),
        "50 delayed requests took {all:?}: not concurrent"
    );
    assert!(
        places.max_concurrent() >= 25,
        "Places saw at most {} at once",
        places.max_concurrent()
    );
}

#[test]
fn replies_keep_request_order_behind_a_slow_whatsat() {
    let places = PlacesServer::start(Behaviour::default().delay(Duration::from_millis(300)));
    let h = herd_with(&places, PlacesApi::Legacy);
    let mut c = h.client("Goloman");
    c.ask("IAMAT kiwi +34.068930-118.445127 1520023934.918963997");
    c.send(b"WHATSAT kiwi 10 1\nIAMAT after +1+1 5\nBAD\n");
    let (head, _) = c.answer();
    assert!(String::from_utf8(head).unwrap().contains(" kiwi "));
    assert!(c.text().ends_with(" after +1+1 5"));
    assert_eq!(c.text(), "? BAD");
}
