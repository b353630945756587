//! # herd: an application-server herd for fast-moving location data
//!
//! Mobile clients connect over TCP and say where they are (`IAMAT`); any
//! server of the herd answers with an `AT` line, stores it, and floods it to
//! its neighbours, which flood it on, until every server knows it. Clients
//! ask any server for places near a client (`WHATSAT`); the server proxies
//! that to the Google Places API over HTTPS.
//!
//! ## One poll loop per server
//! Each server is one thread running one `mio::Poll` ([`server`]). Its
//! sockets are all registered in that poll, under the tokens that
//! [`token`] lays out:
//!
//! * the **listener**, bound with socket2 (address reuse, a real backlog);
//! * a **slab of connections** ([`conn::Conn`]), the slab key being the
//!   token, owned by the loop. A connection holds an unfinished line
//!   ([`conn::LineReader`]), its [`conn::Replies`] (output, and the replies
//!   queued behind a WHATSAT still waiting for Places, so replies leave in
//!   request order), its engine session, and a [`conn::ReadState`]:
//!   *Reading*; *Backpressured* while its unread replies pass a cap;
//!   *Throttled*, on a timer, while its invalid input passes a rate
//!   ([`conn::Throttle`]); *Closing* once the client closed its side, until
//!   everything owed to it is written. Idle connections hold no read
//!   buffer: every read goes into one scratch buffer of the loop;
//! * the outbound **herd links** ([`links::outbound`]), one per neighbour,
//!   each owning its stream: dial, backoff, hello, catch-up, floods;
//! * the **Places client** ([`places`]): keep-alive HTTPS connections driven
//!   by hand with rustls, each owning its stream.
//!
//! ## The engine decides, the loop moves bytes
//! Data flows one way: bytes → lines ([`conn`]) → the command [`engine`]
//! (parsing in [`protocol`], the [`store`], the accepting half of the link
//! protocol in [`links::inbound`]) → effects: replies, journal records,
//! floods, Places queries. The engine is sans-I/O — no socket, no
//! `Registry`, no timer — so the server, the `handle` bench and the fuzz
//! target drive the same code. Every wire line is written by a function of
//! [`protocol`].
//!
//! ## Timers
//! Everything that waits — links (retries, connects, handshakes), Places
//! (request deadlines, connects, idle connections), the loop's own waits
//! (throttled connections, an accept pause, a sweep) and the log batcher —
//! implements [`timer::Deadline`], keyed deadlines living in a
//! [`timer::Timers`]. The loop polls with the nearest deadline as its
//! timeout and fires what is due by comparing with `Instant::now()`.
//!
//! ## Durability
//! Every update a server stores is appended to its [`journal`] before the
//! replies of the same loop turn are written, and replayed at start, so a
//! server killed and restarted (or a whole herd) loses nothing it answered.
//!
//! ## Watchers
//! A connection that says `WATCH` follows clients' positions
//! ([`watch`]): the engine says every position it stores; at the turn's
//! end the server's index from client ID to watchers marks each watcher's
//! owed set (a bit per client, conflated: only the newest counts), and a
//! watcher's flush writes the current lines from the store as fast as its
//! socket takes them, after the journal write.
//!
//! ## Around the loops
//! [`config`] reads `herd.conf` (addresses and URLs through [`addr`]);
//! [`logging`] gives each server its own log file, written by a thread of
//! its own so the loop never waits on a disk; `main.rs` parses arguments,
//! raises the descriptor limit, starts one loop per named server and stops
//! them on SIGINT/SIGTERM. The wire protocol, `herd.conf` and the command
//! line are described in `docs/PROTOCOL.md`.
//!
//! ## Seeing inside
//! Each loop counts what it does in its [`stats::ServerStats`] (relaxed
//! atomics: no lock, no allocation per request); the operator endpoint
//! ([`metrics`], `--metrics HOST:PORT`) is a small poll loop on a thread of
//! its own that reads them at scrape time for `/metrics` and `/healthz`, so
//! no scraper can slow a herd loop. [`check`] describes a config for
//! `--check-config`.

pub mod addr;
pub mod auth;
pub mod check;
pub mod config;
pub mod conn;
pub mod engine;
pub mod front;
pub mod journal;
pub mod links;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod peer;
pub mod places;
pub mod protocol;
pub mod reload;
pub mod server;
pub mod stats;
pub mod store;
pub mod timer;
pub mod tls;
pub mod token;
pub mod watch;
