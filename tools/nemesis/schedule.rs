//! The seeded schedule of faults: a pure function of the seed, the run's
//! length and the herd, so `--seed S` replays the same faults at the same
//! offsets (what happens in between — which updates race which fault —
//! still depends on timing).

use std::fmt;
use std::time::Duration;

/// One kind of fault, and what it is applied to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, and a restart on the same journal when it ends.
    Kill(String),
    /// SIGSTOP, and SIGCONT when it ends.
    Pause(String),
    /// Every link of the server goes silent (its proxies blackholed): a
    /// host cut off from the herd, clients still reaching it.
    Isolate(String),
    /// One link's connections reset and blackholed.
    CutLink(String, String),
    /// The link removed from both ends' herd.conf (SIGHUP), restored (SIGHUP)
    /// when it ends.
    DropLink(String, String),
    /// The spare server added to every herd.conf (SIGHUP) and started; it
    /// stays.
    AddServer(String),
    /// The server's journal disk (a tmpfs) shrunk to what it holds, so
    /// writes fail with ENOSPC; room given back when it ends. Root only.
    DiskFull(String),
    /// (A TLS herd.) Every server told to trust the next CA too (SIGHUP);
    /// when it ends, every server given its certificate from that CA
    /// (SIGHUP).
    RotateCerts,
}

impl Fault {
    /// Its kind, for the counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Pause(_) => "pause",
            Fault::Isolate(_) => "isolate",
            Fault::CutLink(..) => "cut-link",
            Fault::DropLink(..) => "reload-drop-link",
            Fault::AddServer(_) => "reload-add-server",
            Fault::DiskFull(_) => "disk-full",
            Fault::RotateCerts => "rotate-certs",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(s) | Fault::Pause(s) | Fault::Isolate(s) | Fault::DiskFull(s) => {
                write!(f, "{} {s}", self.kind())
            }
            Fault::AddServer(s) => write!(f, "{} {s}", self.kind()),
            Fault::RotateCerts => write!(f, "{}", self.kind()),
            Fault::CutLink(a, b) | Fault::DropLink(a, b) => {
                write!(f, "{} {a}-{b}", self.kind())
            }
        }
    }
}

/// A fault, when it begins (from the start of the run) and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:6.2}s  for {:5.2}s  {}",
            self.at.as_secs_f64(),
            self.lasts.as_secs_f64(),
            self.fault
        )
    }
}

/// What the schedule may touch.
pub struct Herd<'a> {
    pub servers: &'a [&'a str],
    pub links: &'a [(&'a str, &'a str)],
    /// The server that [`Fault::AddServer`] adds, if any.
    pub spare: Option<&'a str>,
    /// Whether journal disks can be filled (tmpfs needs root).
    pub disks: bool,
    /// Whether the herd speaks TLS on its links (certificates can rotate).
    pub tls: bool,
}

/// The faults of a run of `length` for `seed`: one every 0.3–1.5 s, each
/// lasting 0.3–4 s (a kill up to 3 s), ending before `length`.
pub fn schedule(seed: u64, length: Duration, herd: &Herd<'_>) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut steps = Vec::new();
    let mut t = Duration::from_millis(rng.u64(300..1000));
    let mut added = false;
    while t < length {
        let server = herd.servers[rng.usize(..herd.servers.len())].to_string();
        let (a, b) = herd.links[rng.usize(..herd.links.len())];
        let (a, b) = (a.to_string(), b.to_string());
        // Weights: kills and cuts most, the rest less often. (A TLS herd
        // draws once more, so other herds' schedules stay as they were.)
        let fault = if herd.tls && rng.u8(..8) == 0 {
            Fault::RotateCerts
        } else {
            match rng.u32(0..100) {
                0..=24 => Fault::Kill(server),
                25..=39 => Fault::Pause(server),
                40..=51 => Fault::Isolate(server),
                52..=69 => Fault::CutLink(a, b),
                70..=81 => Fault::DropLink(a, b),
                82..=87 if !added && herd.spare.is_some() => {
                    added = true;
                    Fault::AddServer(herd.spare.unwrap_or_default().to_string())
                }
                88..=99 if herd.disks => Fault::DiskFull(server),
                _ => Fault::Kill(server),
            }
        };
        let most = if matches!(fault, Fault::Kill(_)) {
            3000
        } else {
            4000
        };
        let lasts = Duration::from_millis(rng.u64(300..most));
        if t + lasts >= length {
            break;
        }
        steps.push(Step {
            at: t,
            lasts,
            fault,
        });
        t += Duration::from_millis(rng.u64(300..1500));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERD: Herd<'static> = Herd {
        servers: &["A", "B", "C"],
        links: &[("A", "B"), ("B", "C")],
        spare: Some("D"),
        disks: true,
        tls: false,
    };

    #[test]
    fn a_seed_replays_its_schedule_and_another_differs() {
        let len = Duration::from_secs(20);
        let one = schedule(7, len, &HERD);
        assert_eq!(one, schedule(7, len, &HERD));
        assert_ne!(one, schedule(8, len, &HERD));
        assert!(one.len() > 5, "{one:?}");
        assert!(one.iter().all(|s| s.at + s.lasts < len));
        // At most one server is added.
        let adds = |s: &[Step]| {
            s.iter()
                .filter(|s| matches!(s.fault, Fault::AddServer(_)))
                .count()
        };
        assert!((0..1000).all(|seed| adds(&schedule(seed, len, &HERD)) <= 1));
    }

    #[test]
    fn no_disk_faults_without_disks() {
        let herd = Herd {
            disks: false,
            ..HERD
        };
        for seed in 0..200 {
            assert!(schedule(seed, Duration::from_secs(20), &herd)
                .iter()
                .all(|s| !matches!(s.fault, Fault::DiskFull(_))));
        }
    }

    #[test]
    fn tls_herds_rotate_certificates_and_others_keep_their_schedules() {
        let len = Duration::from_secs(60);
        let tls = Herd { tls: true, ..HERD };
        let rotations = (0..50)
            .flat_map(|seed| schedule(seed, len, &tls))
            .filter(|s| s.fault == Fault::RotateCerts)
            .count();
        assert!(rotations > 10, "{rotations}");
        assert!((0..50)
            .flat_map(|seed| schedule(seed, len, &HERD))
            .all(|s| s.fault != Fault::RotateCerts));
    }
}
