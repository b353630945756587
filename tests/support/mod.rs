//! Shared helpers for the black-box tests: in-process herds on 127.0.0.1:0
//! (the harness in `tools/inproc.rs`), a blocking line client, a local
//! HTTPS Places server with its own CA, separate hosts in network namespaces
//! (`netns`), a fault-injecting TCP proxy (`proxy`), a tmpfs mounted by
//! the test for a disk that fills (`tmpfs`), and for TLS: test
//! certificates (`certs`), a TLS line client (`tls_client`), a fake TLS
//! neighbour (`tls_peer`) and a TLS herd's files on disk (`tls_herd`).
#![allow(dead_code)]

pub mod cdp;
pub mod certs;
pub mod flood;
pub mod herd;
#[path = "../../tools/inproc.rs"]
pub mod inproc;
pub mod netns;
pub mod places_server;
pub mod ports;
pub mod procs;
pub mod proxy;
pub mod tls_client;
pub mod tls_herd;
pub mod tls_peer;
pub mod tmpfs;
