use proptest::prelude::*;

use super::*;
use crate::protocol::Command;

const NOW: Nanos = 2_000_000_000 * NANOS_PER_SEC;

/// Offers an AT line as the server does: parsed, canonical.
pub(crate) fn offer(s: &mut Store, line: &[u8]) -> bool {
    offer_at_time(s, line, NOW)
}

fn offer_at_time(s: &mut Store, line: &[u8], now: Nanos) -> bool {
    let Command::At(at) = protocol::parse(line) else {
        panic!("not an AT line: {line:?}");
    };
    s.offer_at(&at, &mut Vec::new(), now)
}

fn at(client: &str, t: u64) -> Vec<u8> {
    format!("AT S +0.000000001 {client} +1+1 {t}").into_bytes()
}

fn known(s: &Store) -> Vec<String> {
    let mut v: Vec<String> = s
        .iter()
        .map(|e| String::from_utf8_lossy(field(e.line, 3).unwrap()).into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn newest_timestamp_wins_whatever_the_order() {
    let mut s = Store::new();
    assert!(offer(&mut s, b"AT A +0.100000000 kiwi +1+1 5"));
    assert!(!offer(&mut s, b"AT B +0.100000000 kiwi +2+2 4"));
    assert!(offer(&mut s, b"AT B +0.100000000 kiwi +2+2 6"));
    assert_eq!(
        s.get(b"kiwi").unwrap().line,
        b"AT B +0.100000000 kiwi +2+2 6"
    );
    assert_eq!(s.len(), 1);
}

#[test]
fn the_stored_position_is_that_of_the_stored_line() {
    let mut s = Store::new();
    offer(&mut s, b"AT A +0.100000000 kiwi +34.068930-118.445127 5");
    offer(&mut s, b"AT B +0.100000000 kiwi -1.5+2.25 6");
    let p = s.get(b"kiwi").unwrap().position();
    assert_eq!((p.lat, p.lng), (&b"-1.5"[..], &b"2.25"[..]));
    // A longer line elsewhere in the arena: still its own position.
    offer(&mut s, b"AT B +0.100000000 kiwi +34.068930-118.445127 7");
    let p = s.get(b"kiwi").unwrap().position();
    assert_eq!((p.lat, p.lng), (&b"34.068930"[..], &b"-118.445127"[..]));
}

#[test]
fn equal_timestamps_break_ties_on_the_line_the_same_way_in_any_order() {
    let a: &[u8] = b"AT Goloman +0.100000000 kiwi +1+1 5";
    let b: &[u8] = b"AT Hands +0.200000000 kiwi +2+2 5";
    let mut s1 = Store::new();
    offer(&mut s1, a);
    offer(&mut s1, b);
    let mut s2 = Store::new();
    offer(&mut s2, b);
    assert!(!offer(&mut s2, a));
    assert_eq!(s1.get(b"kiwi"), s2.get(b"kiwi"));
    assert_eq!(s1.get(b"kiwi").unwrap().line, b);
}

#[test]
fn the_same_update_twice_is_not_newer() {
    let mut s = Store::new();
    assert!(offer(&mut s, b"AT A +0.000000000 c +1+1 1"));
    assert!(!offer(&mut s, b"AT A +0.000000000 c +1+1 1"));
}

#[test]
fn slots_are_stable_while_stored_and_holes_are_skipped() {
    let mut s = Store::with_bounds(2, None);
    offer(&mut s, &at("a", 1));
    offer(&mut s, &at("b", 2));
    offer(&mut s, &at("a", 3));
    assert_eq!(s.entry(0).unwrap().line, &at("a", 3)[..]);
    assert_eq!(s.entry(1).unwrap().line, &at("b", 2)[..]);
    assert!(s.entry(2).is_none());
    // c evicts b (the oldest); its slot is reused.
    assert!(offer(&mut s, &at("c", 4)));
    assert_eq!(s.entry(1).unwrap().line, &at("c", 4)[..]);
    assert_eq!(s.slot_end(), 2);
}

#[test]
fn a_full_store_evicts_exactly_the_oldest_and_refuses_what_is_older_still() {
    let mut s = Store::with_bounds(3, None);
    for (c, t) in [("a", 10), ("b", 20), ("c", 30)] {
        assert!(offer(&mut s, &at(c, t)));
    }
    // Older than all three: answered by the engine, not stored.
    assert!(!offer(&mut s, &at("old", 5)));
    assert_eq!(s.evicted(), 0);
    assert!(offer(&mut s, &at("d", 40)));
    assert_eq!(known(&s), ["b", "c", "d"]);
    assert_eq!(s.evicted(), 1);
    assert!(s.get(b"a").is_none());
    // An update of a stored client evicts nobody, and moves it up.
    assert!(offer(&mut s, &at("b", 50)));
    assert!(offer(&mut s, &at("e", 60)));
    assert_eq!(known(&s), ["b", "d", "e"]);
}

#[test]
fn an_evicted_client_never_comes_back_through_an_old_update() {
    let mut s = Store::with_bounds(2, None);
    offer(&mut s, &at("a", 10));
    offer(&mut s, &at("b", 20));
    offer(&mut s, &at("c", 30)); // evicts a@10
                                 // A catch-up re-sends a@10, b@20 from a neighbour that still has them:
    assert!(!offer(&mut s, &at("a", 10)));
    // Even after b is gone and there is room again, a@10 is below the floor.
    assert_eq!(known(&s), ["b", "c"]);
    // Newer than the floor: a client may come back with a new position.
    assert!(offer(&mut s, &at("a", 40)));
    assert_eq!(known(&s), ["a", "c"]);
}

#[test]
fn ties_at_the_eviction_point_go_by_the_line_on_every_server() {
    let lines = [
        b"AT X +0.000000001 p +1+1 7".to_vec(),
        b"AT Y +0.000000001 q +1+1 7".to_vec(),
        b"AT Z +0.000000001 r +1+1 7".to_vec(),
        at("s", 9),
    ];
    let orders = [[0, 1, 2, 3], [2, 1, 0, 3], [1, 3, 2, 0], [3, 2, 1, 0]];
    let mut results = Vec::new();
    for order in orders {
        let mut s = Store::with_bounds(2, None);
        for i in order {
            offer(&mut s, &lines[i]);
        }
        results.push(known(&s));
    }
    assert!(results.iter().all(|r| r == &results[0]), "{results:?}");
    assert_eq!(results[0], ["r", "s"]);
}

#[test]
fn a_ttl_forgets_old_positions_and_refuses_them() {
    let sec = NANOS_PER_SEC;
    let mut s = Store::with_bounds(100, Some(10 * sec));
    let now = 1000 * sec;
    assert!(offer_at_time(&mut s, &at("a", 995), now));
    assert!(offer_at_time(&mut s, &at("b", 999), now));
    // Older than now - 10 s: answered, not stored.
    assert!(!offer_at_time(&mut s, &at("c", 985), now));
    assert_eq!(s.expire(now), 0);
    assert_eq!(s.expire(1006 * sec), 1);
    assert_eq!(known(&s), ["b"]);
    assert_eq!(s.expired(), 1);
    assert_eq!(s.expire(1010 * sec), 1);
    assert!(s.is_empty());
    assert!(s.get(b"b").is_none());
}

#[test]
fn many_updates_keep_the_heap_and_the_arena_small() {
    let mut s = Store::with_bounds(10, None);
    for t in 0..200_000u64 {
        let client = format!("c{}", t % 20);
        // Lines of changing length: the arena gets dead bytes.
        let line = format!(
            "AT S +0.000000001 {client} +1.5{}+1 {t}",
            "5".repeat((t % 7) as usize)
        );
        offer(&mut s, line.as_bytes());
    }
    assert_eq!(s.len(), 10);
    assert!(
        s.heap.len() <= 2 * s.len() + 1024,
        "heap {} ordered {} evicted {}",
        s.heap.len(),
        s.ordered,
        s.evicted()
    );
    assert!(s.arena.len() < 4 * ARENA_SLACK, "{}", s.arena.len());
    for e in s.iter() {
        let client = field(e.line, 3).unwrap();
        assert_eq!(s.get(client).unwrap(), e);
    }
}

/// A slot's entry as a test compares it.
type Stored<'a> = Option<(Nanos, Vec<u8>, Position<'a>)>;

/// A store's whole state as a test compares it: every slot's entry, and
/// what it evicted and expired.
fn contents(s: &Store) -> (Vec<Stored<'_>>, u64, u64) {
    let entries = (0..s.slot_end())
        .map(|i| {
            s.entry(i)
                .map(|e| (e.sent_at, e.line.to_vec(), e.position()))
        })
        .collect();
    (entries, s.evicted(), s.expired())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..Default::default()
    })]

    /// `offer_all` is `offer` one update after another, whatever the
    /// updates: duplicates, older and equal timestamps, ties, a store that
    /// fills and evicts, a TTL; with room reserved or not.
    #[test]
    fn offer_all_is_offer_one_after_another(
        updates in prop::collection::vec((0u8..40, 0u64..60, 0u8..3), 0..200),
        limit in prop_oneof![Just(1000usize), 1usize..30],
        ttl in prop::option::of(1u64..30),
        reserve in prop::option::of((0usize..300, 0usize..30_000)),
    ) {
        let lines: Vec<Vec<u8>> = updates
            .iter()
            .map(|&(c, t, server)| format!("AT S{server} +0.000000001 c{c} -{c}.5+{server} {t}").into_bytes())
            .collect();
        let updates: Vec<Update<'_>> = lines
            .iter()
            .map(|line| {
                let (at, coords) = protocol::parse_canonical_at(line).expect("canonical");
                Update { client: at.client, sent_at: at.sent_at, line, coords }
            })
            .collect();
        let now = 50 * NANOS_PER_SEC;
        let ttl = ttl.map(|t| Nanos::from(t) * NANOS_PER_SEC);
        let (mut one, mut all) = (Store::with_bounds(limit, ttl), Store::with_bounds(limit, ttl));
        if let Some((clients, bytes)) = reserve {
            all.reserve(clients, bytes);
        }
        let stored = updates
            .iter()
            .filter(|u| one.offer(u.client, u.sent_at, u.line, u.coords, now))
            .count();
        prop_assert_eq!(all.offer_all(&updates, now), stored);
        all.shrink_to_fit();
        prop_assert_eq!(contents(&all), contents(&one));
        for u in &updates {
            prop_assert_eq!(all.get(u.client), one.get(u.client));
        }
    }
}

#[test]
fn a_client_is_found_from_the_coords_offset_and_only_as_a_whole_field() {
    let line = b"AT S +0.1 abc +1+2 5.0";
    let coords = line.windows(4).position(|w| w == b"+1+2").unwrap() as u16;
    assert!(client_is(line, coords, b"abc"));
    // A tail of the field, a field before it, a longer ID, more than the line holds
    // (IDs never hold a space).
    for other in [
        &b"bc"[..],
        b"c",
        b"0.1",
        b"+0.1",
        b"xabc",
        b"AT-S-+0.1-abc-with-more",
        b"",
    ] {
        assert!(!client_is(line, coords, other), "{other:?}");
    }
    // Without the offset (a line over 64 KiB), field 3 is scanned for.
    assert!(client_is(line, 0, b"abc"));
    assert!(!client_is(line, 0, b"bc"));
}

#[test]
fn clients_whose_ids_end_alike_stay_apart() {
    let mut s = Store::new();
    for (i, c) in ["b", "ab", "aab", "x-ab"].iter().enumerate() {
        assert!(offer(&mut s, &at(c, 10 + i as u64)));
    }
    assert_eq!(s.len(), 4);
    for (i, c) in ["b", "ab", "aab", "x-ab"].iter().enumerate() {
        let e = s.get(c.as_bytes()).unwrap();
        assert_eq!(e.client(), c.as_bytes());
        assert!(e.line.ends_with(format!(" {}", 10 + i).as_bytes()));
    }
    assert!(s.get(b"a").is_none());
}
