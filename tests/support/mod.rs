//! Helpers shared by the integration tests (`mod support;`). Each test file
//! uses a part of them.
#![allow(dead_code)]

pub mod places_server;
