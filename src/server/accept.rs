//! Taking connections: accepting in batches, refusing past the limit
//! (counted, logged once a second), pausing on EMFILE, and the sweep that
//! sums refusals and closes idle clients.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::Interest;
use rustls::server::UnbufferedServerConnection;

use super::{Server, Wait, ACCEPT_BATCH, ACCEPT_PAUSE, SWEEP_INTERVAL};
use crate::conn::Conn;
use crate::engine::{Port, Role};
use crate::front::Front;
use crate::tls::stream::{Stream, TlsStream};
use crate::token;

impl Server {
    /// Accepts what waits on `port`'s listener, up to a batch.
    pub(super) fn accept(&mut self, port: Port) {
        self.accept_more = false;
        if self.accept_paused {
            return;
        }
        let Some(i) = self.listeners.iter().position(|(p, _)| *p == port) else {
            return;
        };
        for _ in 0..ACCEPT_BATCH {
            match self.listeners[i].1.accept() {
                Ok((stream, peer)) => {
                    self.emfile_logged = false;
                    self.admit(stream, peer, port)
                }
                // The backlog is empty: wait for the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    // Accepting again at once would fail again: pause, and
                    // let closing connections free descriptors meanwhile.
                    if !self.emfile_logged {
                        log::warn!(target: &self.name, "accept: {e}; pausing accepts, retrying every {} ms until descriptors free up", ACCEPT_PAUSE.as_millis());
                        self.emfile_logged = true;
                    }
                    self.accept_paused = true;
                    self.timers
                        .schedule(Instant::now() + ACCEPT_PAUSE, Wait::AcceptResume);
                    return;
                }
                // A connection reset before we took it, and the like.
                Err(e) => log::info!(target: &self.name, "accept: {e}"),
            }
        }
        self.accept_more = true;
    }

    /// Takes connection `stream` from `peer` on `port`: on a TLS or
    /// mutual-TLS peer port, with a fresh TLS session and a deadline for
    /// its handshake.
    pub(super) fn admit(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr, port: Port) {
        let name = &self.name;
        if self.conns.len() >= self.limits.max_clients {
            // Accepted and closed at once (dropping `stream`): the client
            // learns at once, and the backlog does not fill with retries.
            if self.refused == 0 {
                log::warn!(target: name, "refused {peer}: {} connections is the limit", self.limits.max_clients);
                if !self.sweeping {
                    self.sweeping = true;
                    self.timers
                        .schedule(Instant::now() + SWEEP_INTERVAL, Wait::Sweep);
                }
            }
            self.refused += 1;
            return;
        }
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let Some(token) = token::client(key) else {
            return;
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            log::warn!(target: name, "register {peer}: {e}");
            return;
        }
        let tls = match (port, &self.tls) {
            (Port::Tls | Port::Https, _) => self.client_tls.as_ref(),
            (Port::Peer, Some(tls)) => Some(&tls.peer),
            _ => None,
        };
        let stream = match tls.map(|config| UnbufferedServerConnection::new(Arc::clone(config))) {
            None => Stream::Plain(stream),
            Some(Ok(session)) => Stream::Tls(Box::new(TlsStream::server(stream, session))),
            Some(Err(e)) => {
                log::warn!(target: name, "{} port: refused {peer}: TLS: {e}", port.label());
                let _ = self.poll.registry().deregister(&mut stream);
                return;
            }
        };
        self.next_serial += 1;
        let serial = self.next_serial;
        if tls.is_some() || port == Port::Peer {
            let due = Instant::now() + self.limits.handshake_timeout;
            self.timers.schedule(due, Wait::Handshake(key, serial));
        }
        let mut conn = Conn::new(stream, peer, serial, port);
        conn.active = self.epoch.elapsed().as_secs() as u32;
        if port.is_http() {
            let mut front = Front::http(Instant::now());
            if let Some(due) = front.rearm(self.limits.http_timeouts()) {
                self.timers.schedule(due, Wait::Front(key, serial));
            }
            conn.front = Some(Box::new(front));
        }
        entry.insert(conn);
        self.engine.stats().client_connected();
        match port {
            Port::Client => log::info!(target: name, "client {peer} connected"),
            _ => log::info!(target: name, "client {peer} connected on the {} port", port.label()),
        }
        // Data may have arrived with the handshake already.
        self.resume.push(key);
    }

    /// The handshake deadline of connection `key` is here: closed if its
    /// TLS handshake is not done, or if on a peer port it has not said
    /// `HERD` (a link that never starts holds a descriptor for nothing).
    pub(super) fn handshake_due(&mut self, key: usize, serial: u64) {
        let Some(conn) = self.conns.get(key).filter(|c| c.serial == serial) else {
            return;
        };
        let ms = self.limits.handshake_timeout.as_millis();
        if conn.stream.is_handshaking() {
            self.close(key, &format!("TLS handshake not done in {ms} ms"));
        } else if conn.session.port == Port::Peer && conn.session.role == Role::Client {
            self.close(key, &format!("no HERD in {ms} ms"));
        }
    }

    /// Seconds since the loop started (for idle connections).
    pub(super) fn seconds(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Sums up refused connections, closes idle ones.
    pub(super) fn sweep(&mut self, now: Instant) {
        if self.refused > 1 {
            log::warn!(target: &self.name, "refused {} more connections in the last second: {} connections is the limit", self.refused - 1, self.limits.max_clients);
        }
        self.refused = 0;
        self.sweeping = self.limits.idle_timeout.is_some();
        if self.sweeping {
            self.timers.schedule(now + SWEEP_INTERVAL, Wait::Sweep);
        }
        if let Some(idle) = self.limits.idle_timeout {
            let now_s = self.seconds();
            let limit = idle.as_secs().max(1) as u32;
            let idle_keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.session.role == Role::Client
                        && now_s.saturating_sub(c.active) >= limit
                        && c.is_drained()
                })
                .map(|(k, _)| k)
                .collect();
            for key in idle_keys {
                self.close(key, "idle timeout");
            }
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24), ENFILE (23), ENOBUFS (105), ENOMEM (12) on Linux.
    matches!(e.raw_os_error(), Some(24) | Some(23) | Some(105) | Some(12))
}
