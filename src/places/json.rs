//! The Places answer as it goes to the client (docs/PROTOCOL.md §3): Google's bytes with
//! the `results` array cut after the bound-th element, and a writer of
//! Google's layout for the answers we make ourselves (failures, and the
//! Places API (New) answer translated to the legacy shape).
//!
//! # The cut
//!
//! [`cut_results`] does not parse and re-serialise: a small scanner that knows
//! strings and escapes finds the top-level `"results"` key and the byte
//! ranges of its elements, keeps the text up to the end of the bound-th
//! element and continues with the text that closed the original array (the
//! white space and `]`). Everything else — layout, key order, number
//! spellings, escapes — stays byte for byte. [`finish`] then collapses runs
//! of newlines and ends the text with exactly two.
//!
//! # Google's layout ([`write_google`])
//!
//! Three-space indent; `"key" : value`; object keys in byte order (Google's
//! writer keeps them sorted); `{}` and `[]` when empty; an array of scalars
//! on one line as `[ "a", "b" ]` while that text fits in 74 columns, else
//! one element a line; an array holding any object or array one element a
//! line; strings in raw UTF-8 with `"`, `\`, control characters, `<` and `>`
//! escaped (`\u003c`, `\u003e`); numbers as serde_json spells them.
//!
//! # Places API (New) → legacy shape ([`translate_new`])
//!
//! | legacy result field         | New API place field        |
//! |-----------------------------|----------------------------|
//! | `business_status`           | `businessStatus`           |
//! | `geometry.location.lat`     | `location.latitude`        |
//! | `geometry.location.lng`     | `location.longitude`       |
//! | `name`                      | `displayName.text`         |
//! | `place_id`                  | `id`                       |
//! | `rating`                    | `rating`                   |
//! | `types`                     | `types`                    |
//! | `user_ratings_total`        | `userRatingCount`          |
//! | `vicinity`                  | `formattedAddress`         |
//!
//! Each field only where the place has it (values copied as they are). The
//! answer is `{"html_attributions": [], "results": [...], "status": S}` with
//! `S` = `"OK"`, or `"ZERO_RESULTS"` when there is no place (the New API
//! then answers `{}`). At most `bound` places are kept, in the order given.

use serde_json::{Map, Value};

/// The widest one-line array of scalars in Google's layout.
pub const RIGHT_MARGIN: usize = 74;
const INDENT: &str = "   ";

/// Where the top-level `results` array is in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsArray {
    /// Offset of the `[`.
    pub open: usize,
    /// Offset of the `]`.
    pub close: usize,
    /// Each element's byte range (value only, no white space or comma).
    pub elements: Vec<(usize, usize)>,
}

/// The body is not the JSON the scanner expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(pub &'static str);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(text: &[u8], mut pos: usize) -> usize {
    while pos < text.len() && is_ws(text[pos]) {
        pos += 1;
    }
    pos
}

/// `pos` is at `"`; returns the offset just after the closing quote.
fn skip_string(text: &[u8], mut pos: usize) -> Result<usize, ScanError> {
    pos += 1;
    while pos < text.len() {
        match text[pos] {
            b'\\' => pos += 2,
            b'"' => return Ok(pos + 1),
            _ => pos += 1,
        }
    }
    Err(ScanError("unterminated string"))
}

/// `pos` is at the first byte of a value; returns the offset just after it.
/// Containers are skipped with a depth count, without recursion.
fn skip_value(text: &[u8], mut pos: usize) -> Result<usize, ScanError> {
    match text.get(pos) {
        None => Err(ScanError("value expected")),
        Some(b'"') => skip_string(text, pos),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            while pos < text.len() {
                match text[pos] {
                    b'"' => {
                        pos = skip_string(text, pos)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(pos + 1);
                        }
                    }
                    _ => {}
                }
                pos += 1;
            }
            Err(ScanError("unterminated array or object"))
        }
        Some(b',' | b':' | b']' | b'}') => Err(ScanError("value expected")),
        Some(_) => {
            let start = pos;
            while pos < text.len() && !is_ws(text[pos]) && !matches!(text[pos], b',' | b']' | b'}')
            {
                pos += 1;
            }
            debug_assert!(pos > start);
            Ok(pos)
        }
    }
}

/// Finds the top-level `"results"` array (the first, if the key repeats).
/// `Ok(None)` when the body is an object without one.
pub fn find_results(text: &[u8]) -> Result<Option<ResultsArray>, ScanError> {
    let mut pos = skip_ws(text, 0);
    if text.get(pos) != Some(&b'{') {
        return Err(ScanError("not a JSON object"));
    }
    pos = skip_ws(text, pos + 1);
    if text.get(pos) == Some(&b'}') {
        return Ok(None);
    }
    loop {
        if text.get(pos) != Some(&b'"') {
            return Err(ScanError("key expected"));
        }
        let key_end = skip_string(text, pos)?;
        let key = &text[pos + 1..key_end - 1];
        pos = skip_ws(text, key_end);
        if text.get(pos) != Some(&b':') {
            return Err(ScanError("':' expected"));
        }
        pos = skip_ws(text, pos + 1);
        if key == b"results" && text.get(pos) == Some(&b'[') {
            return scan_array(text, pos).map(Some);
        }
        pos = skip_ws(text, skip_value(text, pos)?);
        match text.get(pos) {
            Some(b',') => pos = skip_ws(text, pos + 1),
            Some(b'}') => return Ok(None),
            _ => return Err(ScanError("',' or '}' expected")),
        }
    }
}

fn scan_array(text: &[u8], open: usize) -> Result<ResultsArray, ScanError> {
    let mut elements = Vec::new();
    let mut pos = skip_ws(text, open + 1);
    if text.get(pos) == Some(&b']') {
        return Ok(ResultsArray {
            open,
            close: pos,
            elements,
        });
    }
    loop {
        let end = skip_value(text, pos)?;
        elements.push((pos, end));
        pos = skip_ws(text, end);
        match text.get(pos) {
            Some(b',') => pos = skip_ws(text, pos + 1),
            Some(b']') => {
                return Ok(ResultsArray {
                    open,
                    close: pos,
                    elements,
                })
            }
            _ => return Err(ScanError("',' or ']' expected")),
        }
    }
}

/// Keeps the first `bound` elements of the top-level `results` array, the
/// rest of the text untouched: the text up to the end of the bound-th
/// element, then what followed the last element (the white space and `]`
/// that closed the array, and everything after). The body unchanged when it
/// has no `results` array or at most `bound` results.
pub fn cut_results(text: &[u8], bound: usize) -> Result<Vec<u8>, ScanError> {
    let Some(array) = find_results(text)? else {
        return Ok(text.to_vec());
    };
    if array.elements.len() <= bound {
        return Ok(text.to_vec());
    }
    let keep_until = match bound {
        0 => array.open + 1,
        _ => array.elements[bound - 1].1,
    };
    let resume = match bound {
        // No element left: Google writes an empty array as `[]`.
        0 => array.close,
        _ => array.elements[array.elements.len() - 1].1,
    };
    let mut out = Vec::with_capacity(keep_until + text.len() - resume);
    out.extend_from_slice(&text[..keep_until]);
    out.extend_from_slice(&text[resume..]);
    Ok(out)
}

/// Collapses every run of two or more newlines into one, removes trailing
/// newlines and appends exactly two.
pub fn finish(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    for &b in text {
        if b == b'\n' && out.last() == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    while out.last() == Some(&b'\n') {
        out.pop();
    }
    out.extend_from_slice(b"\n\n");
    out
}

/// A legacy answer's reply: checked to be JSON, cut, finished. The error
/// says why the body was refused.
pub fn legacy_reply(body: &[u8], bound: usize) -> Result<Vec<u8>, String> {
    // Parsed only to check it: the reply keeps Google's bytes.
    if let Err(e) = serde_json::from_slice::<Value>(body) {
        return Err(format!("Places answer is not JSON: {e}"));
    }
    match cut_results(body, bound) {
        Ok(cut) => Ok(finish(&cut)),
        Err(e) => Err(format!("Places answer is not a JSON object: {e}")),
    }
}

/// Appends `s` as a JSON string the way Google escapes it.
pub fn quote_google(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `value` in Google's layout (see the module header), without a final newline.
pub fn write_google(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, 0, &mut out);
    out
}

fn write_scalar(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => quote_google(s, out),
        Value::Array(_) | Value::Object(_) => write_value(value, 0, out),
    }
}

fn indent(depth: usize, out: &mut String) {
    for _ in 0..depth {
        out.push_str(INDENT);
    }
}

fn write_value(value: &Value, depth: usize, out: &mut String) {
    match value {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, key) in keys.iter().enumerate() {
                indent(depth + 1, out);
                quote_google(key, out);
                out.push_str(" : ");
                write_value(&map[key.as_str()], depth + 1, out);
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            indent(depth, out);
            out.push('}');
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            if let Some(line) = one_line_array(items) {
                out.push_str(&line);
                return;
            }
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                indent(depth + 1, out);
                write_value(item, depth + 1, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            indent(depth, out);
            out.push(']');
        }
        scalar => write_scalar(scalar, out),
    }
}

/// `[ a, b ]` when every item is a scalar and the text fits the margin.
fn one_line_array(items: &[Value]) -> Option<String> {
    let mut line = String::from("[ ");
    for (i, item) in items.iter().enumerate() {
        if matches!(item, Value::Array(_) | Value::Object(_)) {
            return None;
        }
        if i > 0 {
            line.push_str(", ");
        }
        write_scalar(item, &mut line);
        if line.len() + 2 > RIGHT_MARGIN {
            return None;
        }
    }
    line.push_str(" ]");
    Some(line)
}

/// A Places API (New) `searchNearby` answer, translated to the legacy shape
/// (mapping in the module header), at most `bound` results, finished.
pub fn translate_new(body: &[u8], bound: usize) -> Result<Vec<u8>, String> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("Places answer is not JSON: {e}"))?;
    let Value::Object(answer) = answer else {
        return Err("Places answer is not a JSON object".to_string());
    };
    let places = match answer.get("places") {
        None => &[][..],
        Some(Value::Array(places)) => places.as_slice(),
        Some(_) => return Err("Places answer's \"places\" is not an array".to_string()),
    };
    let mut results = Vec::new();
    for place in places.iter().take(bound) {
        let Value::Object(place) = place else {
            return Err("Places answer holds a place that is not an object".to_string());
        };
        results.push(Value::Object(translate_place(place)));
    }
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    let mut legacy = Map::new();
    legacy.insert("html_attributions".into(), Value::Array(Vec::new()));
    legacy.insert("results".into(), Value::Array(results));
    legacy.insert("status".into(), Value::String(status.into()));
    Ok(finish(write_google(&Value::Object(legacy)).as_bytes()))
}

fn translate_place(place: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut copy = |from: &str, to: &str| {
        if let Some(v) = place.get(from) {
            out.insert(to.to_string(), v.clone());
        }
    };
    copy("businessStatus", "business_status");
    copy("id", "place_id");
    copy("rating", "rating");
    copy("types", "types");
    copy("userRatingCount", "user_ratings_total");
    copy("formattedAddress", "vicinity");
    if let Some(Value::Object(loc)) = place.get("location") {
        let mut location = Map::new();
        if let Some(lat) = loc.get("latitude") {
            location.insert("lat".into(), lat.clone());
        }
        if let Some(lng) = loc.get("longitude") {
            location.insert("lng".into(), lng.clone());
        }
        let mut geometry = Map::new();
        geometry.insert("location".into(), Value::Object(location));
        out.insert("geometry".into(), Value::Object(geometry));
    }
    if let Some(Value::Object(name)) = place.get("displayName") {
        if let Some(text) = name.get("text") {
            out.insert("name".into(), text.clone());
        }
    }
    out
}

/// The failure answer of docs/PROTOCOL.md §3 in Google's layout, finished.
pub fn failure(status: &str, message: &str) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("error_message".into(), Value::String(message.into()));
    map.insert("html_attributions".into(), Value::Array(Vec::new()));
    map.insert("results".into(), Value::Array(Vec::new()));
    map.insert("status".into(), Value::String(status.into()));
    finish(write_google(&Value::Object(map)).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_table() {
        // (input, bound, expected)
        let cases: &[(&str, usize, &str)] = &[
            (r#"{"results":[1,2,3]}"#, 2, r#"{"results":[1,2]}"#),
            (r#"{"results":[1,2,3]}"#, 1, r#"{"results":[1]}"#),
            (r#"{"results":[1,2,3]}"#, 3, r#"{"results":[1,2,3]}"#),
            (r#"{"results":[1,2,3]}"#, 20, r#"{"results":[1,2,3]}"#),
            (r#"{"results":[1,2,3]}"#, 0, r#"{"results":[]}"#),
            (r#"{"results":[]}"#, 1, r#"{"results":[]}"#),
            (r#"{"results" : [ ] , "x" : 1}"#, 1, r#"{"results" : [ ] , "x" : 1}"#),
            (r#"{"status":"OK"}"#, 1, r#"{"status":"OK"}"#),
            (r#"{}"#, 1, r#"{}"#),
            // Strings holding brackets, braces, commas and escaped quotes.
            (
                r#"{"results":["a]b","c}d\"],","e\\"]}"#,
                2,
                r#"{"results":["a]b","c}d\"],"]}"#,
            ),
            (r#"{"results":["\\\"]","x"]}"#, 1, r#"{"results":["\\\"]"]}"#),
            // Nested arrays and objects inside elements.
            (
                r#"{"results":[[1,[2,3]],{"a":[{"b":"]"}]},[[]]]}"#,
                2,
                r#"{"results":[[1,[2,3]],{"a":[{"b":"]"}]}]}"#,
            ),
            // A "results" key nested deeper, or as a string value, is not the one.
            (
                r#"{"a":{"results":[1,2]},"b":"results","results":[3,4]}"#,
                1,
                r#"{"a":{"results":[1,2]},"b":"results","results":[3]}"#,
            ),
            // A key that only looks like "results" through an escape.
            (r#"{"res\"ults":[1,2],"results":[5,6]}"#, 1, r#"{"res\"ults":[1,2],"results":[5]}"#),
            // Google's layout: the closing text of the array is kept.
            (
                "{\n   \"results\" : [\n      {\n         \"a\" : 1\n      },\n      {\n         \"a\" : 2\n      }\n   ],\n   \"status\" : \"OK\"\n}\n",
                1,
                "{\n   \"results\" : [\n      {\n         \"a\" : 1\n      }\n   ],\n   \"status\" : \"OK\"\n}\n",
            ),
            // Scalars of every kind as elements.
            (r#"{"results":[true,null,-1.5e3,"s"]}"#, 3, r#"{"results":[true,null,-1.5e3]}"#),
        ];
        for (input, bound, expected) in cases {
            let got = cut_results(input.as_bytes(), *bound).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                *expected,
                "{input} bound {bound}"
            );
            serde_json::from_str::<Value>(expected).expect("expected output is JSON");
        }
    }

    #[test]
    fn cut_refuses_non_objects() {
        for input in [
            "[1,2]",
            "",
            "  ",
            "{\"results\":[1,",
            "{\"a\" 1}",
            "{\"results\":[\"x]}",
        ] {
            assert!(cut_results(input.as_bytes(), 1).is_err(), "{input}");
        }
    }

    #[test]
    fn finish_collapses_newlines() {
        let cases: &[(&str, &str)] = &[
            ("{}", "{}\n\n"),
            ("{}\n", "{}\n\n"),
            ("{}\n\n\n\n", "{}\n\n"),
            ("{\n\n\n   \"a\" : 1\n\n}\n", "{\n   \"a\" : 1\n}\n\n"),
            ("\n\n{}", "\n{}\n\n"),
            ("", "\n\n"),
        ];
        for (input, expected) in cases {
            assert_eq!(finish(input.as_bytes()), expected.as_bytes(), "{input:?}");
        }
    }

    #[test]
    fn legacy_reply_checks_json() {
        assert!(legacy_reply(b"<html>nope</html>", 5)
            .unwrap_err()
            .contains("not JSON"));
        assert!(legacy_reply(b"[1, 2]", 5).is_err());
        assert_eq!(
            legacy_reply(b"{\"results\" : [ 1, 2 ],\n\n\"status\" : \"OK\"}\n", 1).unwrap(),
            b"{\"results\" : [ 1 ],\n\"status\" : \"OK\"}\n\n"
        );
    }

    #[test]
    fn writer_layout() {
        let v: Value = serde_json::from_str(
            r#"{"z":1,"a":{"y":[],"x":{}},"m":["cafe","food"],"n":[{"k":"<v>"}],"q":[[1]],
                "long":["grocery_or_supermarket","supermarket","food","store","point_of_interest"],
                "s":"é\"\\\n\u0001"}"#,
        )
        .unwrap();
        let expected = r#"{
   "a" : {
      "x" : {},
      "y" : []
   },
   "long" : [
      "grocery_or_supermarket",
      "supermarket",
      "food",
      "store",
      "point_of_interest"
   ],
   "m" : [ "cafe", "food" ],
   "n" : [
      {
         "k" : "\u003cv\u003e"
      }
   ],
   "q" : [
      [ 1 ]
   ],
   "s" : "é\"\\\n\u0001",
   "z" : 1
}"#;
        assert_eq!(write_google(&v), expected);
        assert_eq!(write_google(&Value::Array(vec![])), "[]");
        assert_eq!(write_google(&serde_json::json!(4.5)), "4.5");
    }

    #[test]
    fn writer_margin() {
        // "[ " + 8 × `"abcdef"` + 7 × ", " + " ]" = 2 + 64 + 14 + 2 = 82: too wide.
        let wide = Value::Array(vec![Value::String("abcdef".into()); 8]);
        assert!(write_google(&wide).starts_with("[\n"));
        // Exactly 74: "[ " + 6 × `"abcdef"` + `"abcdefgh"` + 6 × ", " + " ]" = 2 + 48 + 10 + 12 + 2.
        let mut items = vec![Value::String("abcdef".into()); 6];
        items.push(Value::String("abcdefgh".into()));
        let line = write_google(&Value::Array(items));
        assert_eq!(line.len(), 74);
        assert!(!line.contains('\n'));
        // One more byte and it goes one element a line.
        let mut items = vec![Value::String("abcdef".into()); 6];
        items.push(Value::String("abcdefghi".into()));
        assert!(write_google(&Value::Array(items)).contains('\n'));
    }

    #[test]
    fn writer_reproduces_googles_sample() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/places/nearbysearch-legacy.json"
        );
        let Ok(sample) = std::fs::read_to_string(path) else {
            eprintln!("skipped: no {path}");
            return;
        };
        let value: Value = serde_json::from_str(&sample).unwrap();
        assert_eq!(write_google(&value) + "\n", sample);
    }

    #[test]
    fn failure_layout() {
        assert_eq!(
            String::from_utf8(failure("UNKNOWN_ERROR", "bad <thing> \"x\"")).unwrap(),
            "{\n   \"error_message\" : \"bad \\u003cthing\\u003e \\\"x\\\"\",\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"UNKNOWN_ERROR\"\n}\n\n"
        );
    }

    #[test]
    fn translate_minimal() {
        let got = translate_new(br#"{}"#, 5).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "{\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"ZERO_RESULTS\"\n}\n\n"
        );
        let got = translate_new(
            br#"{"places":[{"id":"a","displayName":{"text":"<A>"}},{"id":"b"},{"id":"c"}]}"#,
            2,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n         \"name\" : \"\\u003cA\\u003e\",\n         \"place_id\" : \"a\"\n      },\n      {\n         \"place_id\" : \"b\"\n      }\n   ],\n   \"status\" : \"OK\"\n}\n\n"
        );
        assert!(translate_new(b"nope", 5).is_err());
        assert!(translate_new(b"[]", 5).is_err());
        assert!(translate_new(br#"{"places":{}}"#, 5).is_err());
        assert!(translate_new(br#"{"places":[1]}"#, 5).is_err());
    }
}
