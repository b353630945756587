//! Taking connections: accepting in batches, refusing past the limit
//! (counted, logged once a second), pausing on EMFILE, and the sweep that
//! sums refusals and closes idle clients.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::Interest;

use super::{Server, Wait, ACCEPT_BATCH, ACCEPT_PAUSE, SWEEP_INTERVAL};
use crate::conn::Conn;
use crate::engine::Role;
use crate::token;

impl Server {
    pub(super) fn accept(&mut self) {
        self.accept_more = false;
        if self.accept_paused {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.emfile_logged = false;
                    self.admit(stream, peer)
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

    pub(super) fn admit(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
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
        self.next_serial += 1;
        let mut conn = Conn::new(stream, peer, self.next_serial);
        conn.active = self.epoch.elapsed().as_secs() as u32;
        entry.insert(conn);
        self.engine.stats().client_connected();
        log::info!(target: name, "client {peer} connected");
        // Data may have arrived with the handshake already.
        self.resume.push(key);
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
