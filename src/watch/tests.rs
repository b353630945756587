//! The conflation structures, without a loop: the pending set, a watcher's
//! owed positions against a store that moves on, and the hub's marks.
use super::*;
use crate::store::tests::offer;

fn at(client: &str, t: u64) -> String {
    format!("AT S +0.000000000 {client} +1+1 {t}")
}

/// Everything `w` delivers from `store` now, as text.
fn drain(w: &mut Watch, store: &Store) -> Vec<String> {
    let mut got = Vec::new();
    w.fill(store, |l| {
        got.push(String::from_utf8_lossy(l).into_owned());
        true
    });
    got
}

#[test]
fn pending_is_a_set_taken_round_robin() {
    let mut p = Pending::default();
    assert_eq!(p.pop(), None);
    for i in [5, 700, 3, 70_000, 5] {
        p.insert(i);
    }
    assert_eq!(p.len(), 4);
    assert!(!p.insert(700), "already there: replaced, not added");
    assert_eq!(p.pop(), Some(3));
    // Marked again behind the cursor: it waits for the others.
    p.insert(3);
    assert_eq!(p.pop(), Some(5));
    assert_eq!(p.pop(), Some(700));
    assert_eq!(p.pop(), Some(70_000));
    assert_eq!(p.pop(), Some(3));
    assert_eq!((p.pop(), p.len()), (None, 0));
    assert!(!p.remove(9));
    assert!(p.insert(9));
    assert!(p.remove(9));
    assert!(p.is_empty());
}

#[test]
fn pending_finds_members_across_sparse_words() {
    // Members far apart, in every position of a word and of a summary word.
    let members: Vec<usize> = (0..200).map(|k| k * 4_099 + k % 64).collect();
    let mut p = Pending::default();
    for &m in members.iter().rev() {
        p.insert(m);
    }
    let mut got = Vec::new();
    while let Some(i) = p.pop() {
        got.push(i);
    }
    assert_eq!(got, members);
    let mut p = Pending::default();
    p.insert_below(130);
    assert_eq!(p.len(), 130);
    assert_eq!(
        (0..130).map(|_| p.pop().unwrap()).collect::<Vec<_>>(),
        (0..130).collect::<Vec<_>>()
    );
}

#[test]
fn a_slow_watcher_is_owed_one_position_per_client_the_newest() {
    let mut store = Store::new();
    let mut w = Watch::default();
    let (a, b) = (w.add(b"a").unwrap(), w.add(b"b").unwrap());
    assert_eq!(w.add(b"a"), None, "watched already");
    // The snapshot: a is unknown yet, so only what the store has.
    offer(&mut store, at("b", 1).as_bytes());
    assert_eq!(drain(&mut w, &store), [at("b", 1)]);
    // A thousand updates of each while it does not read: two owed, 1,998
    // replaced, and what it gets is the newest.
    for t in 2..1002 {
        offer(&mut store, at("a", t).as_bytes());
        w.mark(a);
        offer(&mut store, at("b", t).as_bytes());
        w.mark(b);
    }
    assert_eq!(w.replaced, 1998);
    assert_eq!(drain(&mut w, &store), [at("a", 1001), at("b", 1001)]);
    assert!(!w.has_owed());
    assert_eq!(w.pushed, 3);
}

#[test]
fn a_slot_that_holds_another_client_is_not_believed() {
    let mut store = Store::new();
    offer(&mut store, at("a", 1).as_bytes());
    offer(&mut store, at("b", 1).as_bytes());
    let mut w = Watch::default();
    let a = w.add(b"a").unwrap();
    assert_eq!(drain(&mut w, &store), [at("a", 1)]);
    // As if a's slot had been reused by b: a is looked up by name.
    w.mark_at(a, store.last_slot(), 1);
    assert_eq!(drain(&mut w, &store), [at("a", 1)]);
    offer(&mut store, at("a", 2).as_bytes());
    w.mark_at(a, store.last_slot(), 1);
    assert_eq!(drain(&mut w, &store), [at("a", 2)]);
}

#[test]
fn unwatching_drops_what_is_owed_and_a_place_is_reused() {
    let mut store = Store::new();
    offer(&mut store, at("a", 1).as_bytes());
    offer(&mut store, at("b", 1).as_bytes());
    let mut w = Watch::default();
    let a = w.add(b"a").unwrap();
    w.add(b"b").unwrap();
    assert!(w.remove(b"a") && !w.remove(b"a"));
    w.mark(a);
    assert_eq!(drain(&mut w, &store), [at("b", 1)]);
    assert_eq!(w.add(b"c"), Some(a), "the freed place");
    assert_eq!(w.names().collect::<Vec<_>>(), [&b"c"[..], b"b"]);
    assert_eq!(w.len(), 2);
}

#[test]
fn watching_every_client_is_a_bit_per_store_slot() {
    let mut store = Store::new();
    for c in ["a", "b", "c"] {
        offer(&mut store, at(c, 1).as_bytes());
    }
    let mut w = Watch::default();
    w.add(b"a").unwrap();
    w.add_all(&store);
    // The snapshot is every client, once (a's name adds nothing).
    assert_eq!(drain(&mut w, &store), [at("a", 1), at("b", 1), at("c", 1)]);
    offer(&mut store, at("d", 2).as_bytes());
    w.mark_slot(store.last_slot(), 1);
    offer(&mut store, at("d", 3).as_bytes());
    w.mark_slot(store.last_slot(), 1);
    w.mark(0);
    assert_eq!((w.replaced, drain(&mut w, &store)), (1, vec![at("d", 3)]));
    // UNWATCH *: what a named client was owed stays owed, nothing else.
    offer(&mut store, at("a", 4).as_bytes());
    w.mark_slot(store.last_slot(), 1);
    offer(&mut store, at("b", 4).as_bytes());
    w.mark_slot(store.last_slot(), 1);
    assert!(w.remove_all(&store) && !w.remove_all(&store));
    w.mark_slot(1, 1);
    assert_eq!(drain(&mut w, &store), [at("a", 4)]);
    w.mark(0);
    assert_eq!(drain(&mut w, &store), [at("a", 4)], "named again");
}

#[test]
fn fill_stops_when_there_is_no_room_and_goes_on_later() {
    let mut store = Store::new();
    let mut w = Watch::default();
    for i in 0..10 {
        let c = format!("c{i}");
        offer(&mut store, at(&c, 1).as_bytes());
        w.add(c.as_bytes());
    }
    let mut got = 0;
    assert_eq!(
        w.fill(&store, |_| {
            got += 1;
            got < 4
        }),
        4
    );
    assert!(w.has_owed());
    assert_eq!(drain(&mut w, &store).len(), 6);
}

#[test]
fn the_hub_notes_nothing_while_nobody_watches_and_marks_by_client() {
    let mut store = Store::new();
    let mut hub = Hub::new(1);
    offer(&mut store, at("a", 1).as_bytes());
    hub.stored(store.last_slot());
    assert!(hub.touched.is_empty(), "idle: nothing noted");
    hub.add(b"a", 7, 70, 0);
    hub.add(b"a", 8, 80, 3);
    assert!(hub.add_all(9, 90));
    assert!(!hub.add_all(10, 100), "past the limit of WATCH * watchers");
    offer(&mut store, at("a", 2).as_bytes());
    hub.stored(store.last_slot());
    offer(&mut store, at("b", 2).as_bytes());
    hub.stored(store.last_slot());
    let mut marks = Vec::new();
    hub.take_marks(&store, |k, s, m, _| marks.push((k, s, m)));
    assert_eq!(
        marks,
        [
            (7, 70, Mark::Named(0, 0)),
            (8, 80, Mark::Named(3, 0)),
            (9, 90, Mark::Slot(0)),
            (9, 90, Mark::Slot(1)),
        ]
    );
    hub.remove(b"a", 7, 70);
    let mut w = Watch::default();
    w.add(b"a");
    hub.forget(8, 80, &w);
    hub.remove_all(9, 90);
    assert!(hub.is_idle());
}

#[test]
fn stores_waiting_for_marks_are_one_per_client_with_a_count_and_bounded() {
    let mut store = Store::new();
    let mut hub = Hub::new(1);
    hub.add(b"a", 7, 70, 0);
    offer(&mut store, at("a", 1).as_bytes());
    let a = store.last_slot();
    offer(&mut store, at("b", 1).as_bytes());
    let b = store.last_slot();
    // Marking waits (a fan-out is under way) while both move many times.
    for t in 2..=100_000 {
        offer(&mut store, at("a", t).as_bytes());
        hub.stored(a);
        if t % 10 == 0 {
            offer(&mut store, at("b", t).as_bytes());
            hub.stored(b);
        }
    }
    assert!(
        hub.touched.len() <= TOUCHED_MERGE,
        "{} noted stores held for two clients",
        hub.touched.len()
    );
    assert!(hub.has_marks());
    let mut marks = Vec::new();
    hub.take_marks(&store, |k, s, m, n| marks.push((k, s, m, n)));
    assert_eq!(marks, [(7, 70, Mark::Named(0, a), 99_999)]);
    assert!(!hub.has_marks());

    // All but the newest of those stores were never shown: replaced.
    let mut w = Watch::default();
    let place = w.add(b"a").expect("a place");
    // (Its snapshot first: a new place starts out owed.)
    assert_eq!(drain(&mut w, &store), [at("a", 100_000)]);
    w.mark_at(place, a, 99_999);
    assert_eq!(w.replaced, 99_998);
    w.mark_at(place, a, 1);
    assert_eq!(w.replaced, 99_999, "still owed: replaced once more");
    assert_eq!(drain(&mut w, &store), [at("a", 100_000)]);
}
