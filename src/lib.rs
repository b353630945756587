//! # herd: an application-server herd for fast-moving location data
//!
//! Mobile clients connect over TCP and say where they are (`IAMAT`); any
//! server of the herd answers with an `AT` line, stores it, and floods it to
//! its neighbours, which flood it on, until every server knows it. Clients
//! ask any server for places near a client (`WHATSAT`); the server proxies
//! that to the Google Places API over HTTPS.
//!
//! ## One poll loop per server
//! Each server is one thread running one `mio::Poll` ([`server`]). The loop
//! owns every socket of its server:
//!
//! * the **listener**, bound with socket2 (address reuse, a real backlog);
//! * a **slab of connections** ([`conn::Conn`]), the slab key being the
//!   token. A connection is a small state machine: an unfinished line
//!   ([`conn::LineReader`]), pending output ([`conn::Output`]), and the
//!   replies queued behind a WHATSAT still waiting for Places, so that
//!   replies leave in request order. It is *reading* until the client
//!   closes its side, *paused* while its unread replies pass a cap (or, on a
//!   timer, while its invalid input passes a rate: [`conn::Throttle`]), and
//!   *closing* once everything owed to it is written. Idle connections hold
//!   no read buffer: every read goes into one scratch buffer of the loop;
//! * the outbound **herd links** ([`links`]), one per neighbour: dial,
//!   backoff, `HERD NAME`, catch-up of the whole store, then floods;
//! * the **Places client** ([`places`]): keep-alive HTTPS connections driven
//!   by hand with rustls, also just tokens of the same poll.
//!
//! Data flows one way: bytes → lines ([`conn`]) → commands ([`protocol`],
//! pure) → the [`store`] (newest wins) → replies and floods. Nothing below
//! the loop owns a socket.
//!
//! ## Timers
//! Everything that waits — link retries and connects, Places deadlines and
//! idle connections — exposes `next_deadline()` and `on_timeout(now)`; the
//! loop's own waits (an accept pause, throttled connections) are deadlines
//! beside them. The loop polls with the nearest deadline as its timeout and
//! fires what is due by comparing with `Instant::now()`.
//!
//! ## Durability
//! Every update a server stores is appended to its [`journal`] before the
//! replies of the same loop turn are written, and replayed at start, so a
//! server killed and restarted (or a whole herd) loses nothing it answered.
//!
//! ## Around the loops
//! [`config`] reads `herd.conf`; [`logging`] gives each server its own log
//! file, written by a thread of its own so the loop never waits on a disk;
//! `main.rs` parses arguments, raises the descriptor limit, starts one loop
//! per named server and stops them on SIGINT/SIGTERM.
//!
//! ## Seeing inside
//! Each loop counts what it does in its [`stats::ServerStats`] (relaxed
//! atomics: no lock, no allocation per request); the operator endpoint
//! ([`metrics`], `--metrics HOST:PORT`) is a small poll loop on a thread of
//! its own that reads them at scrape time for `/metrics` and `/healthz`, so
//! no scraper can slow a herd loop. [`check`] describes a config for
//! `--check-config`.

pub mod auth;
pub mod check;
pub mod config;
pub mod conn;
pub mod journal;
pub mod links;
pub mod logging;
pub mod metrics;
pub mod places;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod store;
pub mod timer;
pub mod token;
