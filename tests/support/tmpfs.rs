//! A small tmpfs mounted by a test, so a journal meets a real ENOSPC: full
//! at mount, or filled later by shrinking it to what it holds. Needs root;
//! without it a test skips its tmpfs part with a message, except under
//! `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::herd::PATIENCE;

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one of `size` (as `mount -o size=` takes it) at `dir`; `None`
    /// (with the reason printed) when not root, unless CI requires it.
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        if !root {
            assert!(!ci, "CI=true: the tmpfs tests must run, as root");
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            assert!(!ci, "CI=true: mounting a tmpfs at {} failed", dir.display());
            eprintln!("skipped: cannot mount a tmpfs at {}", dir.display());
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Remounts it with room for `size`; panics if the kernel refuses.
    pub fn resize(&self, size: &str) {
        assert!(self.try_resize(size), "remount {}", self.0.display());
    }

    fn try_resize(&self, size: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            // A refused shrink (below what is in use) is expected by `fill`.
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Bytes in use (whole pages).
    pub fn used(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string, and a statvfs (plain integers, so
        // zeroed is a valid value) for the kernel to fill.
        let st = unsafe {
            let mut st: libc::statvfs = std::mem::zeroed();
            assert_eq!(libc::statvfs(path.as_ptr(), &mut st), 0, "statvfs");
            st
        };
        (st.f_blocks - st.f_bfree) * st.f_frsize
    }

    /// Shrinks it to what it holds now, so the next write that needs a new
    /// page fails with ENOSPC, while nothing in it is lost. Writers racing
    /// the remount can take the space first (the kernel then refuses a size
    /// below use): it retries with a little more each time.
    pub fn fill(&self) {
        let deadline = Instant::now() + PATIENCE;
        for slack in 0.. {
            if self.try_resize(&(self.used() + slack * 64 * 1024).to_string()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "could not shrink {} to its use",
                self.0.display()
            );
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
