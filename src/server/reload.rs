//! A reload handed over by [`super::StopHandle::reload`], applied by the
//! loop: links, Places settings, the secret; one log line per change.

use std::time::Instant;

use super::Server;
use crate::engine::Role;
use crate::links::outbound::Change;

impl Server {
    /// Applies a configuration handed over by [`StopHandle::reload`], if
    /// one is waiting: links added, removed and readdressed, the Places
    /// settings, the secret and the TLS certificates for connections opened
    /// from now on. Every change is
    /// logged. No client connection is touched.
    pub(super) fn apply_reload(&mut self) {
        let Some(config) = self.reload.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let now = Instant::now();
        let registry = self.poll.registry();
        let name = self.name.clone();
        let stats = self.engine.stats().clone();
        let changes = self.links.reconfigure(&config.neighbours, registry, now);
        for change in &changes {
            match change {
                Change::Added(n, addr) => {
                    log::info!(target: &name, "reload: link to {n} ({addr}) added");
                    if let Some(link) = self.links.stats_of(n) {
                        stats.add_link(link);
                    }
                }
                Change::Readdressed(n, old, new) => {
                    log::info!(target: &name, "reload: link to {n} moved from {old} to {new}")
                }
                Change::Removed(n) => {
                    log::info!(target: &name, "reload: link to {n} removed");
                    stats.remove_link(n);
                    // Its half of the link: no longer accepted either.
                    let theirs: Vec<usize> = self
                        .conns
                        .iter()
                        .filter(|(_, c)| matches!(&c.session.role, Role::Peer(p) if *p.name == *n.as_bytes()))
                        .map(|(k, _)| k)
                        .collect();
                    for key in theirs {
                        self.close(key, "link removed by a reload");
                    }
                }
            }
        }
        self.engine.set_neighbours(self.links.names());
        self.engine.set_secret(config.secret.clone());
        self.links.set_secret(config.secret.clone());
        // Certificates re-read by the reload: for connections from now on.
        self.links
            .set_tls(config.tls.as_ref().map(|t| std::sync::Arc::clone(&t.dial)));
        self.tls = config.tls.clone();
        self.client_tls = config.client_tls().cloned();
        self.api_token = config.api_token.clone();
        let registry = self.poll.registry();
        match self.places.reconfigure(
            &config.places,
            config.places_key,
            self.waker.clone(),
            registry,
            now,
            &mut self.done,
        ) {
            Ok(true) => {
                log::info!(target: &name, "reload: Places settings changed: {:?} {}", config.places.api, config.places.url)
            }
            Ok(false) => {}
            Err(e) => {
                log::warn!(target: &name, "reload: Places settings refused, the old ones stay: {e}")
            }
        }
        log::info!(target: &name, "reload: done: {} changes to links, {} neighbours, secret {}", changes.len(), self.links.len(), if config.secret.is_some() { "set" } else { "none" });
    }
}
