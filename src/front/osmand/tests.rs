use super::*;
use crate::front::fuzzing::assert_iamat;

/// The server clock of these tests: 1520023934.918963997.
const NOW: Nanos = 1_520_023_934_918_963_997;

const JSON: Option<&[u8]> = Some(b"application/json");
const FORM: Option<&[u8]> = Some(b"application/x-www-form-urlencoded");

/// The IAMAT lines a request should make, or the reason it is refused.
type Expected = Result<Vec<&'static str>, &'static str>;

/// The IAMAT lines of a request (each checked against the line protocol).
fn lines(query: &str, content_type: Option<&[u8]>, body: &str) -> Result<Vec<String>, String> {
    let reports =
        parse(query.as_bytes(), content_type, body.as_bytes()).map_err(|r| r.to_string())?;
    Ok(reports
        .iter()
        .map(|r| {
            assert_iamat(r, NOW);
            let mut line = Vec::new();
            r.write_iamat(&mut line, NOW);
            String::from_utf8(line).expect("UTF-8 in these tests")
        })
        .collect())
}

fn line(query: &str) -> String {
    match lines(query, None, "") {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        other => panic!("{query}: {other:?}"),
    }
}

#[test]
fn traccar_query_examples() {
    // The requests of Traccar's OsmAndProtocolDecoderTest.testDecodeQuery.
    let table = [
        (
            "id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0&altitude=224.0&speed=0.0",
            "IAMAT 902064 +42.06288-88.23412 1453920947",
        ),
        (
            "id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0&altitude=224.0&speed=0.0",
            "IAMAT 902064 +42.06288-88.23412 1442068686.579",
        ),
        (
            "lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0&id=353861053849681",
            "IAMAT 353861053849681 +49.60688+6.15788 1401873011",
        ),
        (
            "id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0&altitude=0&hdop=0.0",
            "IAMAT 123456 +60.0+30.0 1377177267",
        ),
        ("id=123456&timestamp=1377177267&lat=60.0&lon=30.0", "IAMAT 123456 +60.0+30.0 1377177267"),
        (
            "lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456",
            "IAMAT 123456 +60.0+30.0 1520023934.918963997",
        ),
        (
            "id=861001000719969&lat=41.666667&lon=-0.883333&altitude=350.059479&speed=0.000000&batt=87",
            "IAMAT 861001000719969 +41.666667-0.883333 1520023934.918963997",
        ),
        ("id=123456&timestamp=1377177267&location=60.0,30.0", "IAMAT 123456 +60.0+30.0 1377177267"),
        (
            "id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571&bearing=7.19889788244&speed=40&ignition=true&rpm=933&fuel=24",
            "IAMAT 123456789012345 +40.7232948571-74.0061408571 1504763810",
        ),
        (
            "id=123456&timestamp=1377177267&lat=60.0&lon=30.0&cell=257,02,16,2224&wifi=00-14-22-01-23-45,-80",
            "IAMAT 123456 +60.0+30.0 1377177267",
        ),
    ];
    for (query, expected) in table {
        assert_eq!(line(query), expected, "{query}");
    }
}

#[test]
fn every_timestamp_form() {
    let table = [
        ("1520023934", "1520023934"),
        ("1520023934.918963997", "1520023934.918963997"),
        ("1520023934.5", "1520023934.5"),
        ("1520023934.50", "1520023934.50"),
        ("0", "0"),
        ("0001520023934", "1520023934"),
        ("10000000000", "10000000000"),
        ("10000000001", "10000000.001"),
        ("1442068686579", "1442068686.579"),
        ("1442068686000", "1442068686.000"),
        ("1442068686005", "1442068686.005"),
        ("2016-01-27T18:55:47Z", "1453920947"),
        ("2016-01-27T18:55:47z", "1453920947"),
        ("2016-01-27T18:55:47", "1453920947"),
        ("2016-01-27T18:55:47.5Z", "1453920947.5"),
        ("2016-01-27T18:55:47.123456789Z", "1453920947.123456789"),
        ("2025-06-15T13:45:12.862Z", "1749995112.862"),
        ("2016-01-27T18:55:47%2B02:00", "1453913747"),
        ("2016-01-27T18:55:47%2B0200", "1453913747"),
        ("2016-01-27T18:55:47+02:00", "1453913747"),
        ("2016-01-27T18:55:47-05:30", "1453940747"),
        ("2016-01-27T18:55:47.25-0530", "1453940747.25"),
        ("2016-01-27T18:55:47+00:00", "1453920947"),
        ("2016-01-27%2018:55:47", "1453920947"),
        ("2016-01-27+18:55:47", "1453920947"),
        ("2016-01-27+18%3A55%3A47", "1453920947"),
        ("2000-02-29T00:00:00Z", "951782400"),
        ("1970-01-01T00:00:00Z", "0"),
        ("9999-12-31T23:59:59Z", "253402300799"),
        ("+1520023934", "1520023934"),
    ];
    for (ts, time) in table {
        let query = format!("id=k&lat=1&lon=2&timestamp={ts}");
        assert_eq!(line(&query), format!("IAMAT k +1+2 {time}"), "{ts}");
    }
}

#[test]
fn bad_timestamps() {
    for ts in [
        "",
        "x",
        "-1",
        "1.",
        ".5",
        "1.1234567890",
        "1e9",
        "0x10",
        "1000000000000000000.5",
        "1000000000000000000000",
        "99999999999999999999999",
        "2016-13-01T00:00:00Z",
        "2016-00-01T00:00:00Z",
        "2015-02-29T00:00:00Z",
        "2016-04-31T00:00:00Z",
        "2016-01-27T24:00:00Z",
        "2016-01-27T18:60:00Z",
        "2016-01-27T18:55:60Z",
        "2016-01-27T18:55Z",
        "2016-01-27",
        "2016-01-27T18:55:47.Z",
        "2016-01-27T18:55:47.1234567890Z",
        "2016-01-27T18:55:47+2",
        "2016-01-27T18:55:47+24:00",
        "2016-01-27T18:55:47+02:60",
        "2016-01-27T18:55:47Zjunk",
        "2016-1-27T18:55:47Z",
        "1970-01-01T00:00:00%2B00:01",
        "1969-12-31T23:59:59Z",
        "0000-01-01T00:00:00Z",
        "2016-01-27X18:55:47",
    ] {
        let query = format!("id=k&lat=1&lon=2&timestamp={ts}");
        assert_eq!(
            lines(&query, None, ""),
            Err("bad timestamp".to_string()),
            "{ts}"
        );
    }
}

#[test]
fn degrees_as_written_with_a_sign() {
    let table = [
        ("lat=34.068930&lon=-118.445127", "+34.068930-118.445127"),
        (
            "lat=%2B34.068930&lon=%2D118.445127",
            "+34.068930-118.445127",
        ),
        ("lat=+34&lon=+118", "+34+118"),
        ("lat=034.5&lon=0", "+034.5+0"),
        ("lat=-0&lon=-0.0", "-0-0.0"),
        ("lat=90&lon=-180", "+90-180"),
        ("lat=90.000&lon=180.0000", "+90.000+180.0000"),
        ("lat=-90&lon=180", "-90+180"),
        ("lat=3.4e1&lon=-1.25E-2", "+34-0.0125"),
        ("lat=1.50e1&lon=5e-3", "+15.0+0.005"),
        ("lat=0.5e0&lon=12e-1", "+0.5+1.2"),
        ("lat=0.05e3&lon=1E%2B2", "+50+100"),
        ("lat=9e1&lon=18e1", "+90+180"),
        ("lat=0e0&lon=0e-3", "+0+0"),
        ("location=60.0,30.0", "+60.0+30.0"),
        ("location=-60.5,%2B30", "-60.5+30"),
        ("location=60.0, 30.0", "+60.0+30.0"),
    ];
    for (fields, coords) in table {
        let query = format!("id=k&{fields}&timestamp=1");
        assert_eq!(line(&query), format!("IAMAT k {coords} 1"), "{fields}");
    }
}

#[test]
fn degree_text() {
    let table: &[(&str, Option<&str>)] = &[
        ("1", Some("+1")),
        ("-1.5", Some("-1.5")),
        ("1e0", Some("+1")),
        ("1e-0", Some("+1")),
        ("123e-5", Some("+0.00123")),
        ("0.000e2", Some("+0.0")),
        ("1.0e-1", Some("+0.10")),
        ("-0.0001e4", Some("-1")),
        ("1e1000000000000", None),
        ("1e-1000", None),
        ("1.", None),
        (".1", None),
        ("1e", None),
        ("1e+", None),
        ("--1", None),
        ("1,5", None),
        ("", None),
        ("nan", None),
        ("inf", None),
    ];
    for (text, expected) in table {
        let got = degree(text.as_bytes()).map(|d| String::from_utf8(d).unwrap_or_default());
        assert_eq!(got.as_deref(), *expected, "{text}");
    }
    let long = format!("1.{}", "0".repeat(MAX_DEGREE_LEN - 3));
    assert_eq!(
        degree(long.as_bytes()).map(|d| d.len()),
        Some(MAX_DEGREE_LEN)
    );
    let longer = format!("1.{}", "0".repeat(MAX_DEGREE_LEN - 2));
    assert_eq!(degree(longer.as_bytes()), None);
}

#[test]
fn ids() {
    let table = [
        ("id=kiwi.cs.ucla.edu", "kiwi.cs.ucla.edu"),
        ("deviceid=kiwi", "kiwi"),
        ("id=a&deviceid=b", "b"),
        ("deviceid=a&id=b", "b"),
        ("id=a&id=b", "b"),
        ("id=%E2%82%AC", "€"),
        ("id=a%2Bb", "a+b"),
    ];
    for (fields, id) in table {
        let query = format!("{fields}&lat=1&lon=2&timestamp=1");
        assert_eq!(line(&query), format!("IAMAT {id} +1+2 1"), "{fields}");
    }
    // Any non-white-space byte, UTF-8 or not.
    let reports = parse(b"id=%FF%FE&lat=1&lon=2&timestamp=1", None, b"").expect("accepted");
    assert_eq!(reports[0].client, b"\xff\xfe");
    assert_iamat(&reports[0], NOW);
}

#[test]
fn rejections() {
    let long_id = format!("id={}&lat=1&lon=2", "k".repeat(MAX_ID_LEN + 1));
    let table = [
        ("lat=1&lon=2", "no client id (id or deviceid)"),
        ("id=&lat=1&lon=2", "empty client id"),
        (
            "id=a+b&lat=1&lon=2",
            "client id holds white space or control bytes",
        ),
        (
            "id=a%20b&lat=1&lon=2",
            "client id holds white space or control bytes",
        ),
        (
            "id=a%09&lat=1&lon=2",
            "client id holds white space or control bytes",
        ),
        (
            "id=a%0D%0A&lat=1&lon=2",
            "client id holds white space or control bytes",
        ),
        (
            "id=a%00&lat=1&lon=2",
            "client id holds white space or control bytes",
        ),
        (
            "id=a%7F&lat=1&lon=2",
            "client id holds white space or control bytes",
        ),
        (
            "id=a%0B&lat=1&lon=2",
            "client id holds white space or control bytes",
        ),
        (&long_id, "client id too long"),
        ("id=k", "no position (lat and lon, or location)"),
        ("id=k&lat=1", "no position (lat and lon, or location)"),
        ("id=k&lon=1", "no position (lat and lon, or location)"),
        ("id=k&location=1", "location is not LAT,LON"),
        ("id=k&location=1,2,3", "longitude is not a number"),
        ("id=k&lat=x&lon=1", "latitude is not a number"),
        ("id=k&lat=1&lon=", "longitude is not a number"),
        ("id=k&lat=1.&lon=1", "latitude is not a number"),
        ("id=k&lat=1&lon=1%2C5", "longitude is not a number"),
        ("id=k&lat=90.0000000001&lon=1", "latitude out of range"),
        ("id=k&lat=-91&lon=1", "latitude out of range"),
        ("id=k&lat=9.1e1&lon=1", "latitude out of range"),
        ("id=k&lat=1&lon=180.5", "longitude out of range"),
        ("id=k&lat=1&lon=-1000", "longitude out of range"),
        ("id=k&lat=1&lon=2&timestamp=soon", "bad timestamp"),
    ];
    for (query, reason) in table {
        assert_eq!(lines(query, None, ""), Err(reason.to_string()), "{query}");
    }
}

#[test]
fn form_bodies() {
    let table: [(&str, Option<&[u8]>, &str, Expected); 7] = [
        (
            "",
            FORM,
            "id=k&lat=1&lon=2&timestamp=3",
            Ok(vec!["IAMAT k +1+2 3"]),
        ),
        (
            "",
            None,
            "id=k&lat=1&lon=2&timestamp=3",
            Ok(vec!["IAMAT k +1+2 3"]),
        ),
        (
            "id=k",
            FORM,
            "lat=1&lon=2&timestamp=3",
            Ok(vec!["IAMAT k +1+2 3"]),
        ),
        (
            "token=abc&id=q",
            FORM,
            "id=k&lat=1&lon=2&timestamp=3",
            Ok(vec!["IAMAT k +1+2 3"]),
        ),
        (
            "id=k&lat=1&lon=2&timestamp=3",
            Some(b"text/plain"),
            "id=z",
            Ok(vec!["IAMAT k +1+2 3"]),
        ),
        (
            "",
            Some(b"text/plain"),
            "id=k&lat=1&lon=2",
            Err("no client id (id or deviceid)"),
        ),
        (
            "",
            Some(b"Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
            "id=k&lat=1&lon=2&timestamp=3",
            Ok(vec!["IAMAT k +1+2 3"]),
        ),
    ];
    for (query, content_type, body, expected) in table {
        let expected = expected
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .map_err(str::to_string);
        assert_eq!(lines(query, content_type, body), expected, "{query} {body}");
    }
}

/// Traccar's own JSON test bodies (OsmAndProtocolDecoderTest.testDecodeJson).
#[test]
fn traccar_json_examples() {
    let table = [
        (
            r#"{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},"activity":{"type":"still"},"extras":{},"_":"&id=48241179&lat=37.4219983&lon=-122.084&timestamp=2025-06-15T13:45:12.862Z&"},"device_id":"48241179"}"#,
            "IAMAT 48241179 +37.4219983-122.084 1749995112.862",
        ),
        (
            r#"{"location":{"extras":{},"mock":true,"coords":{"speed_accuracy":-1,"speed":-1,"longitude":-122.406417,"ellipsoidal_altitude":0,"floor":null,"heading_accuracy":-1,"latitude":37.785834000000001,"accuracy":5,"altitude_accuracy":-1,"altitude":0,"heading":-1},"is_moving":false,"age":188,"odometer":0,"uuid":"2FB04C65-99CF-42AB-8DD3-EBCB4B108BF8","event":"motionchange","battery":{"level":-1,"is_charging":false},"activity":{"type":"unknown","confidence":100},"timestamp":"2025-05-09T04:11:30.579Z"},"device_id":"658765"}"#,
            "IAMAT 658765 +37.785834000000001-122.406417 1746763890.579",
        ),
        (
            r#"{"location":{"event":"motionchange","is_moving":false,"uuid":"0e9a2473-a9a7-4c00-997b-fb97d2154e75","timestamp":"2021-07-21T08:06:34.444Z","odometer":0,"coords":{"latitude":-6.1148096,"longitude":106.6837015,"accuracy":3.8,"speed":18.67,"speed_accuracy":0.26,"heading":63,"heading_accuracy":0.28,"altitude":35.7,"altitude_accuracy":3.8},"activity":{"type":"still","confidence":100},"battery":{"is_charging":false,"level":0.79},"extras":{}},"device_id":"8737767034"}"#,
            "IAMAT 8737767034 -6.1148096+106.6837015 1626854794.444",
        ),
    ];
    for (body, expected) in table {
        assert_eq!(
            lines("", JSON, body),
            Ok(vec![expected.to_string()]),
            "{body}"
        );
        // Without a content type, a body starting with `{` is JSON too.
        assert_eq!(
            lines("", None, body),
            Ok(vec![expected.to_string()]),
            "{body}"
        );
    }
}

#[test]
fn json_bodies() {
    let one = |coords: &str, rest: &str| {
        format!(r#"{{"device_id":"kiwi","location":{{"coords":{{{coords}}}{rest}}}}}"#)
    };
    let table: Vec<(String, &str, Expected)> = vec![
        (one(r#""latitude":3.4e1,"longitude":-1.2E+2"#, r#","timestamp":"2016-01-27T18:55:47Z""#), "", Ok(vec!["IAMAT kiwi +34-120 1453920947"])),
        (one(r#""latitude":"34.5","longitude":"-118""#, r#","timestamp":1520023934"#), "", Ok(vec!["IAMAT kiwi +34.5-118 1520023934"])),
        (one(r#""latitude":34.5,"longitude":-118"#, r#","timestamp":1442068686579"#), "", Ok(vec!["IAMAT kiwi +34.5-118 1442068686.579"])),
        (one(r#""latitude":34.5,"longitude":-118"#, r#","timestamp":null"#), "", Ok(vec!["IAMAT kiwi +34.5-118 1520023934.918963997"])),
        (one(r#""latitude":34.5,"longitude":-118"#, ""), "", Ok(vec!["IAMAT kiwi +34.5-118 1520023934.918963997"])),
        (r#"{"location":{"coords":{"latitude":1,"longitude":2},"timestamp":"1"}}"#.into(), "id=q", Ok(vec!["IAMAT q +1+2 1"])),
        (r#"{"device_id":12345,"location":{"coords":{"latitude":1,"longitude":2},"timestamp":"1"}}"#.into(), "", Ok(vec!["IAMAT 12345 +1+2 1"])),
        (r#"{"device_id":"a\u00e9","location":{"coords":{"latitude":1,"longitude":2},"timestamp":"1"}}"#.into(), "", Ok(vec!["IAMAT aé +1+2 1"])),
        (r#"{"location":{"coords":{"latitude":1,"longitude":2}}}"#.into(), "", Err("no client id (device_id, id or deviceid)")),
        (r#"{"device_id":"a b","location":{"coords":{"latitude":1,"longitude":2}}}"#.into(), "", Err("client id holds white space or control bytes")),
        (r#"{"device_id":"","location":{"coords":{"latitude":1,"longitude":2}}}"#.into(), "", Err("empty client id")),
        (r#"{"device_id":true,"location":{"coords":{"latitude":1,"longitude":2}}}"#.into(), "", Err("device_id is not a string")),
        (r#"{"device_id":"k"}"#.into(), "", Err("no position (location)")),
        (r#"{"device_id":"k","location":[]}"#.into(), "", Err("no position (location is empty)")),
        (r#"{"device_id":"k","location":{"timestamp":"1"}}"#.into(), "", Err("no position (location.coords)")),
        (r#"{"device_id":"k","location":{"coords":{"latitude":1}}}"#.into(), "", Err("no position (coords.latitude and coords.longitude)")),
        (r#"{"device_id":"k","location":{"coords":{"latitude":1,"longitude":null}}}"#.into(), "", Err("coordinate is not a number")),
        (r#"{"device_id":"k","location":{"coords":{"latitude":"x","longitude":1}}}"#.into(), "", Err("latitude is not a number")),
        (r#"{"device_id":"k","location":{"coords":{"latitude":91,"longitude":1}}}"#.into(), "", Err("latitude out of range")),
        (r#"{"device_id":"k","location":{"coords":{"latitude":1,"longitude":1.81e2}}}"#.into(), "", Err("longitude out of range")),
        (r#"{"device_id":"k","location":{"coords":{"latitude":1,"longitude":1},"timestamp":"yesterday"}}"#.into(), "", Err("bad timestamp")),
        (r#"{"device_id":"k","location":{"coords":{"latitude":1,"longitude":1},"timestamp":true}}"#.into(), "", Err("bad timestamp")),
        (r#"{"device_id":"k","location":{"coords":[1,2]}}"#.into(), "", Err("location.coords is not an object")),
        (r#"{"device_id":"k","location":7}"#.into(), "", Err("location is not an object")),
        (r#"{"device_id":"k","location":[7]}"#.into(), "", Err("location is not an object")),
        ("[]".into(), "", Err("body is not a JSON object")),
        ("{".into(), "", Err("body is not a JSON object")),
        ("".into(), "", Err("body is not a JSON object")),
        ("{\"device_id\":\"\\ud800\",\"location\":{}}".into(), "", Err("device_id is not a string")),
    ];
    for (body, query, expected) in table {
        let expected = expected
            .map(|v| v.iter().map(|s| s.to_string()).collect())
            .map_err(str::to_string);
        assert_eq!(lines(query, JSON, &body), expected, "{body}");
    }
}

#[test]
fn json_batches_are_all_or_nothing() {
    let loc = |lat: &str, ts: &str| {
        format!(
            r#"{{"coords":{{"latitude":{lat},"longitude":-118.5,"speed":3}},"timestamp":"{ts}","battery":{{"level":0.5}}}}"#
        )
    };
    let batch = format!(
        r#"{{"device_id":"kiwi","location":[{},{},{}]}}"#,
        loc("34.1", "2016-01-27T18:55:47Z"),
        loc("34.2", "2016-01-27T18:55:48.5Z"),
        loc("-3.43e1", "2016-01-27T18:55:49+01:00")
    );
    assert_eq!(
        lines("", JSON, &batch),
        Ok(vec![
            "IAMAT kiwi +34.1-118.5 1453920947".to_string(),
            "IAMAT kiwi +34.2-118.5 1453920948.5".to_string(),
            "IAMAT kiwi -34.3-118.5 1453917349".to_string(),
        ])
    );
    for bad in [
        loc("91", "2016-01-27T18:55:49Z"),
        loc("1", "bad"),
        r#"{"coords":{}}"#.to_string(),
    ] {
        let batch = format!(
            r#"{{"device_id":"kiwi","location":[{},{bad},{}]}}"#,
            loc("34.1", "1"),
            loc("34.2", "2")
        );
        assert!(lines("", JSON, &batch).is_err(), "{batch}");
    }
    let full = vec![loc("1", "1"); MAX_REPORTS].join(",");
    let full = format!(r#"{{"device_id":"k","location":[{full}]}}"#);
    assert_eq!(lines("", JSON, &full).map(|v| v.len()), Ok(MAX_REPORTS));
    let over = vec![loc("1", "1"); MAX_REPORTS + 1].join(",");
    let over = format!(r#"{{"device_id":"k","location":[{over}]}}"#);
    assert_eq!(
        lines("", JSON, &over),
        Err(format!("more than {MAX_REPORTS} locations in one request"))
    );
}

#[test]
fn the_clock_when_no_timestamp() {
    let report = Report {
        client: b"k".to_vec(),
        coords: b"+1+2".to_vec(),
        time: None,
    };
    let table: [(Nanos, &str); 4] = [
        (NOW, "IAMAT k +1+2 1520023934.918963997"),
        (0, "IAMAT k +1+2 0.000000000"),
        (5, "IAMAT k +1+2 0.000000005"),
        (-7, "IAMAT k +1+2 0.000000000"),
    ];
    for (now, expected) in table {
        let mut out = Vec::new();
        report.write_iamat(&mut out, now);
        assert_eq!(String::from_utf8_lossy(&out), expected);
        assert_iamat(&report, now.max(0));
    }
}

#[test]
fn days_from_civil_agrees_with_a_day_count() {
    // Walk day by day from 1970 to 2100 and back to 1900, counting.
    let mut days = 0;
    for year in 1970..2100 {
        for month in 1..=12 {
            for day in 1..=days_in_month(year, month) {
                assert_eq!(
                    days_from_civil(year, month, day),
                    days,
                    "{year}-{month}-{day}"
                );
                days += 1;
            }
        }
    }
    let mut days = 0;
    for year in (1900..1970).rev() {
        for month in (1..=12).rev() {
            for day in (1..=days_in_month(year, month)).rev() {
                days -= 1;
                assert_eq!(
                    days_from_civil(year, month, day),
                    days,
                    "{year}-{month}-{day}"
                );
            }
        }
    }
}

#[test]
fn pretty_printed_json() {
    let body = "{\n  \"device_id\" : \"kiwi\",\n  \"location\" :  [\n    {\n      \"coords\" : { \"latitude\" : 34.5 , \"longitude\" : -118 },\n      \"timestamp\" : \"2016-01-27 18:55:47\"\n    }\n  ]\n}\n";
    assert_eq!(
        lines("", JSON, body),
        Ok(vec!["IAMAT kiwi +34.5-118 1453920947".to_string()])
    );
    let body = "\t{\"device_id\":\"kiwi\",\"location\": {\"coords\": {\"latitude\": 1, \"longitude\": 2}}}";
    assert_eq!(
        lines("", None, body),
        Ok(vec!["IAMAT kiwi +1+2 1520023934.918963997".to_string()])
    );
}
