//! The herd simulation (`tools/sim`) in its small form: real servers in this
//! process on a ring of 10 and a binary tree of 10, new clients posted at
//! random servers. Every server must get every update, and the flood must
//! cost exactly the link messages its topology says: on a ring, 2E − (N − 1)
//! = 11 per update, two duplicates beyond the 9 a tree needs; on the tree,
//! those 9 and not one more. The counts are the servers' own
//! (`herd_link_updates_sent_total`), so a flood that sent a line twice on a
//! link, or forwarded a line it did not store, fails here.

#[path = "../tools/cputime.rs"]
mod cputime;
#[path = "../tools/sim/herd_sim.rs"]
mod herd_sim;
#[path = "../tools/inproc.rs"]
mod inproc;

use std::time::Duration;

use herd_sim::{Topology, Workload};

fn workload() -> Workload {
    Workload {
        updates: 100,
        rate: 200.0,
        seed: 7,
        // No link may be taken for dead on a busy machine: a catch-up would
        // add messages the topology does not predict.
        link_timeout: Some(Duration::from_secs(60)),
    }
}

#[test]
fn a_ring_of_ten_gets_every_update_with_two_duplicates_each() {
    let topo = Topology::ring(10);
    assert_eq!(topo.flood_messages(), 11);
    let r = herd_sim::run(&topo, &workload()).expect("the simulation runs");
    assert_eq!((r.complete, r.missing), (100, 0), "{r:?}");
    assert_eq!(r.catchups_during, 0, "{r:?}");
    assert_eq!(r.messages_per_update, 11.0, "{r:?}");
    assert_eq!(r.duplicates(), 2.0, "{r:?}");
    // Every message is one AT line of this workload (about 75 bytes).
    assert!(
        r.bytes_per_message > 50.0 && r.bytes_per_message < 120.0,
        "{r:?}"
    );
    assert_eq!(r.diameter, 5);
    assert_eq!(r.by_hops.len(), 6);
    assert_eq!(r.by_hops[5].count, 100, "one server 5 hops away per update");
}

#[test]
fn a_tree_of_ten_floods_without_a_duplicate() {
    let topo = Topology::tree(10);
    assert_eq!(topo.flood_messages(), 9);
    let r = herd_sim::run(&topo, &workload()).expect("the simulation runs");
    assert_eq!((r.complete, r.missing), (100, 0), "{r:?}");
    assert_eq!(r.catchups_during, 0, "{r:?}");
    assert_eq!(r.messages_per_update, 9.0, "{r:?}");
    assert_eq!(r.duplicates(), 0.0, "{r:?}");
}

#[test]
fn random_meshes_are_regular_connected_and_seeded() {
    for (n, d) in [(10, 3), (10, 4), (30, 3), (100, 4)] {
        let t = Topology::mesh(n, d, 42);
        let adj = t.adjacency();
        assert!(adj.iter().all(|a| a.len() == d), "{n} {d}");
        assert!(t.hops_from(0).iter().all(|&h| h < n), "{n} {d}: connected");
        assert_eq!(t.edges, Topology::mesh(n, d, 42).edges, "the seed decides");
        assert_eq!(t.flood_messages() as usize, 2 * n * d / 2 - (n - 1));
    }
    assert_eq!(Topology::reference().flood_messages(), 8);
}
