//! CPU time of this process's threads, by thread name: what each in-process
//! server's loop (a thread named for its server) spent, read from
//! `/proc/self/task/TID/{comm,schedstat}`. On a machine shared with other
//! work the wall clock counts their turns too; a thread's CPU time counts
//! only its own, so CPU per update is the figure that carries over to other
//! machines. Shared by flood_load's `ingest` mode and `tools/sim`; each
//! includes this file with `#[path = ...]`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

/// CPU time so far of every thread of this process, summed by name (the
/// kernel keeps the first 15 bytes of a thread's name). Empty where /proc
/// is missing.
pub fn by_name() -> HashMap<String, Duration> {
    let mut out: HashMap<String, Duration> = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        // The first field of schedstat: nanoseconds on the CPU.
        let ns = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        *out.entry(comm.trim_end().to_string()).or_default() += Duration::from_nanos(ns);
    }
    out
}

/// What each named thread spent between two [`by_name`] readings.
pub fn spent(
    before: &HashMap<String, Duration>,
    after: &HashMap<String, Duration>,
) -> HashMap<String, Duration> {
    after
        .iter()
        .map(|(name, &t)| {
            let t0 = before.get(name).copied().unwrap_or_default();
            (name.clone(), t.saturating_sub(t0))
        })
        .collect()
}

/// The name the kernel keeps for a thread named `name`.
pub fn comm(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}
