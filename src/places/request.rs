//! What goes to the Places API and what its answer comes to, as pure
//! functions of bytes: no socket, no clock, no pool state.
//!
//! [`build`] turns a [`Query`] and the key into the whole HTTP/1.1 request,
//! once, at `submit`: the pool then only copies bytes onto a connection, and
//! the same bytes are written again if the request is retried. A query whose
//! numbers the New API's JSON body cannot hold fails here, before any
//! connection is taken for it.
//!
//! [`answer`] maps a parsed response onto the one vocabulary clients know,
//! Google's legacy `status` (the table in the module header): a 200 becomes
//! the reply body (the legacy JSON passed through and cut, or the New API's
//! answer translated), anything else a status and a message that names the
//! HTTP status and, when the body has one, the API's own explanation.
//! Neither function sees the key in a message it returns.

use super::http::Response;
use super::json;
use super::url::{percent_encode, Endpoint};
use super::Query;
use crate::config::PlacesApi;

/// The Places API (New) fields asked for: those the legacy shape needs.
pub const FIELD_MASK: &str = "places.id,places.displayName,places.formattedAddress,places.location,places.types,places.rating,places.userRatingCount,places.businessStatus";

/// A request that cannot be answered with Places JSON: the legacy status
/// and the `error_message` for [`failure_body`].
pub(super) struct Failure {
    pub status: &'static str,
    pub message: String,
}

/// The HTTP request for `query` (it holds `key`: never log it). Err: the
/// query's numbers are not numbers, which only the New API's body notices.
pub(super) fn build(
    api: PlacesApi,
    endpoint: &Endpoint,
    query: &Query,
    key: &str,
) -> Result<Vec<u8>, String> {
    let lat = query.lat.trim_start_matches('+');
    let lng = query.lng.trim_start_matches('+');
    let radius = query.radius_m.trim_start_matches('+');
    let host = endpoint.host_header();
    let agent = concat!("herd/", env!("CARGO_PKG_VERSION"));
    match api {
        PlacesApi::Legacy => {
            let target = endpoint.target_with_query(&format!(
                "location={},{}&radius={}&key={}",
                percent_encode(lat),
                percent_encode(lng),
                percent_encode(radius),
                percent_encode(key)
            ));
            Ok(format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nUser-Agent: {agent}\r\n\r\n"
            )
            .into_bytes())
        }
        PlacesApi::New => {
            let body = serde_json::json!({
                "locationRestriction": {
                    "circle": {
                        "center": {"latitude": json_number(lat)?, "longitude": json_number(lng)?},
                        "radius": json_number(radius)?,
                    }
                },
                "maxResultCount": query.bound.clamp(1, 20),
            });
            let body = body.to_string();
            let mut http = format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json\r\nX-Goog-Api-Key: {key}\r\nX-Goog-FieldMask: {FIELD_MASK}\r\nUser-Agent: {agent}\r\nContent-Length: {len}\r\n\r\n",
                path = endpoint.path,
                len = body.len()
            )
            .into_bytes();
            http.extend_from_slice(body.as_bytes());
            Ok(http)
        }
    }
}

/// The reply body for a complete response, keeping `bound` results, or why
/// there is none.
pub(super) fn answer(
    api: PlacesApi,
    response: &Response,
    bound: usize,
) -> Result<Vec<u8>, Failure> {
    if response.status != 200 {
        let status = match response.status {
            400 => "INVALID_REQUEST",
            401 | 403 => "REQUEST_DENIED",
            429 => "OVER_QUERY_LIMIT",
            _ => "UNKNOWN_ERROR",
        };
        let mut message = format!(
            "the Places API answered HTTP {} {}",
            response.status, response.reason
        );
        if let Some(detail) = error_detail(&response.body) {
            message.push_str(": ");
            message.push_str(&detail);
        }
        return Err(Failure { status, message });
    }
    // A legacy 200 passes through whatever Google's own status in it says.
    let body = match api {
        PlacesApi::Legacy => json::legacy_reply(&response.body, bound),
        PlacesApi::New => json::translate_new(&response.body, bound),
    };
    body.map_err(|message| Failure {
        status: "UNKNOWN_ERROR",
        message,
    })
}

/// A JSON number from the query's decimal text, for the New API's body.
fn json_number(text: &str) -> Result<serde_json::Value, String> {
    if let Ok(n) = text.parse::<serde_json::Number>() {
        return Ok(serde_json::Value::Number(n));
    }
    // `10.` is decimal text a client may send but not JSON.
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(serde_json::Value::Number)
        .ok_or_else(|| format!("{text:?} is not a number"))
}

/// The API's own error message from an error body, if it has one: legacy
/// `error_message` or New API `error.message`; at most 300 characters, so a
/// verbose API cannot bloat the reply.
fn error_detail(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value
        .get("error_message")
        .or_else(|| value.get("error").and_then(|e| e.get("message")))?
        .as_str()?;
    Some(message.chars().take(300).collect())
}

/// The failure framing of docs/PROTOCOL.md §3 in Google's layout, ending in two newlines:
///
/// ```text
/// {
///    "error_message" : "...",
///    "html_attributions" : [],
///    "results" : [],
///    "status" : "..."
/// }
/// ```
///
/// Strings are escaped as Google does (`<` → `\u003c`, `>` → `\u003e`).
pub fn failure_body(status: &str, message: &str) -> Vec<u8> {
    json::failure(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(lat: &str, lng: &str, radius_m: &str, bound: usize) -> Query {
        Query {
            lat: lat.into(),
            lng: lng.into(),
            radius_m: radius_m.into(),
            bound,
        }
    }

    fn response(status: u16, reason: &str, body: &[u8]) -> Response {
        Response {
            status,
            reason: reason.into(),
            body: body.to_vec(),
            keep_alive: true,
        }
    }

    #[test]
    fn legacy_request() {
        let endpoint = Endpoint::parse("https://h:8443/maps/api/place/nearbysearch/json").unwrap();
        let q = query("+34.068930", "-118.445127", "10000", 5);
        let http = build(PlacesApi::Legacy, &endpoint, &q, "k y").unwrap();
        let expected = format!(
            "GET /maps/api/place/nearbysearch/json?location=34.068930,-118.445127&radius=10000&key=k%20y HTTP/1.1\r\nHost: h:8443\r\nAccept: application/json\r\nUser-Agent: herd/{}\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(String::from_utf8(http).unwrap(), expected);
    }

    #[test]
    fn new_request() {
        let endpoint =
            Endpoint::parse("https://places.googleapis.com/v1/places:searchNearby").unwrap();
        let q = query("+34.068930", "-118.445127", "10.", 25);
        let http = String::from_utf8(build(PlacesApi::New, &endpoint, &q, "KEY").unwrap()).unwrap();
        let (head, body) = http.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(
            "POST /v1/places:searchNearby HTTP/1.1\r\nHost: places.googleapis.com\r\n"
        ));
        assert!(head.contains("\r\nX-Goog-Api-Key: KEY\r\n"));
        assert!(head.contains(&format!("\r\nX-Goog-FieldMask: {FIELD_MASK}\r\n")));
        assert!(head.ends_with(&format!("\r\nContent-Length: {}", body.len())));
        assert_eq!(
            body,
            r#"{"locationRestriction":{"circle":{"center":{"latitude":34.06893,"longitude":-118.445127},"radius":10.0}},"maxResultCount":20}"#
        );
        let bad = query("north", "0", "1", 5);
        assert_eq!(
            build(PlacesApi::New, &endpoint, &bad, "KEY").unwrap_err(),
            "\"north\" is not a number"
        );
    }

    #[test]
    fn statuses() {
        // HTTP status, body, legacy status, message.
        let cases: &[(u16, &[u8], &str, &str)] = &[
            (
                400,
                b"",
                "INVALID_REQUEST",
                "the Places API answered HTTP 400 R",
            ),
            (
                401,
                b"",
                "REQUEST_DENIED",
                "the Places API answered HTTP 401 R",
            ),
            (
                403,
                br#"{"error":{"message":"API key not valid."}}"#,
                "REQUEST_DENIED",
                "the Places API answered HTTP 403 R: API key not valid.",
            ),
            (
                429,
                b"",
                "OVER_QUERY_LIMIT",
                "the Places API answered HTTP 429 R",
            ),
            (
                500,
                b"<html>",
                "UNKNOWN_ERROR",
                "the Places API answered HTTP 500 R",
            ),
            (
                204,
                b"",
                "UNKNOWN_ERROR",
                "the Places API answered HTTP 204 R",
            ),
        ];
        for &(code, body, status, message) in cases {
            for api in [PlacesApi::Legacy, PlacesApi::New] {
                let failure = answer(api, &response(code, "R", body), 5).err().unwrap();
                assert_eq!(
                    (failure.status, failure.message.as_str()),
                    (status, message),
                    "{code}"
                );
            }
        }
        let not_json = answer(PlacesApi::Legacy, &response(200, "OK", b"<html>"), 5);
        assert_eq!(not_json.err().map(|f| f.status), Some("UNKNOWN_ERROR"));
        let denied = br#"{"html_attributions":[],"results":[],"status":"REQUEST_DENIED"}"#;
        assert!(answer(PlacesApi::Legacy, &response(200, "OK", denied), 5).is_ok());
    }

    #[test]
    fn failure_body_layout() {
        assert_eq!(
            String::from_utf8(failure_body("REQUEST_DENIED", "no key <here>")).unwrap(),
            "{\n   \"error_message\" : \"no key \\u003chere\\u003e\",\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"REQUEST_DENIED\"\n}\n\n"
        );
    }

    #[test]
    fn json_numbers() {
        assert_eq!(json_number("34.068930").unwrap().to_string(), "34.06893");
        assert_eq!(
            json_number("-118.445127").unwrap().to_string(),
            "-118.445127"
        );
        assert_eq!(json_number("10000").unwrap().to_string(), "10000");
        assert_eq!(json_number("10.").unwrap().to_string(), "10.0");
        assert!(json_number("ten").is_err());
        assert!(json_number("NaN").is_err());
    }

    #[test]
    fn error_details() {
        assert_eq!(
            error_detail(br#"{"error":{"code":403,"message":"API key not valid.","status":"PERMISSION_DENIED"}}"#),
            Some("API key not valid.".to_string())
        );
        assert_eq!(
            error_detail(br#"{"error_message":"denied","status":"REQUEST_DENIED"}"#),
            Some("denied".to_string())
        );
        assert_eq!(error_detail(b"<html>"), None);
    }
}
