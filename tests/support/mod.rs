//! Shared helpers for the black-box tests: in-process herds on 127.0.0.1:0,
//! a blocking line client, and a local HTTPS Places server with its own CA.
#![allow(dead_code)]

pub mod herd;
pub mod places_server;
