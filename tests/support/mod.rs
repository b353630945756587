//! Shared helpers for the black-box tests: in-process herds on 127.0.0.1:0
//! and a blocking line client.
#![allow(dead_code)]

pub mod herd;
