//! # herd: an application-server herd for fast-moving location data
//!
//! (design header: written with the server loop)

pub mod config;
pub mod places;
pub mod protocol;
