//! Per-server log files, written off the event loop.
//!
//! Every server logs with `log` macros whose *target* is its own name; a
//! `fern` dispatcher routes each name to its own `DIR/NAME.log`, prefixing
//! every line with an RFC 3339 timestamp and the name. The formatted line then
//! goes into a bounded channel; a writer thread per server appends it to a
//! buffered file and flushes whenever the channel runs dry (so lines reach the
//! disk within milliseconds when quiet, in 64 KiB writes under load). The
//! event loop never touches the disk. If the disk cannot keep up and the
//! channel fills ([`LOG_QUEUE_BYTES`]: memory stays bounded whatever clients
//! send), lines are dropped and counted rather than block the loop;
//! the count is written to the log as soon as there is room, and the total
//! since start is kept for the metrics ([`lines_dropped`]).
//!
//! Traffic (every line received and sent) is logged at `debug`; connection,
//! link and Places events at `info`. The level is set at start-up.
//!
//! A server's loop thread does not hand its lines to the writer one by one:
//! it [attaches](attach_loop) a thread-local batch, and every line it logs —
//! through `log` macros (routed there by the `ChannelLog` at the end of the
//! server's fern chain) or as traffic — is appended to that batch, which goes
//! to the writer thread once it holds [`LOG_BATCH_BYTES`] (from the line that
//! fills it, within a turn) or its oldest line is [`LOG_BATCH_DELAY`] old
//! (the loop's timers see to that), and at shutdown. Lines keep their order, the writer wakes a few times a second
//! instead of once per loop turn, and lines still reach the file within a
//! fraction of a second.
//!
//! Batches are large for the busy loop's sake, and their buffers are reused
//! (written ones go back to the loop thread, `SPARE_BATCHES` kept), but a
//! quiet server holds none of their memory: a batch that leaves by its timer
//! rather than full says the loop is quiet, and the pages of that buffer, of
//! the spares and of the next batch's buffer go back to the kernel, the
//! allocations kept (`Spare`, `release`). Only a server logging more than
//! [`LOG_BATCH_BYTES`] per [`LOG_BATCH_DELAY`] keeps them resident.
//!
//! Traffic is the bulk of the log (two lines per request), so [`traffic`]
//! writes it as bytes without `fmt`: the timestamp formatted once per loop
//! turn (lines of one turn share it), the peer address and the escaping by
//! hand.
//!
//! Bytes from the network are logged through [`escape`], so no client can
//! break or forge a log line.
//!
//! ## Rotation and a full disk (docs/PROTOCOL.md §8)
//! The writer thread knows its file's size. It writes in chunks of at most
//! [`LOG_WRITE_CHUNK`] bytes cut at line ends, and before a chunk would take
//! the file past [`Rotation::size`] it renames `NAME.log` to `NAME.log.1`
//! (shifting older ones up to `NAME.log.KEEP`, the oldest removed) and
//! starts a new file. Chunks are no larger than the size itself, so a file
//! never passes it (a single line longer than the size is cut). [`reopen`] (SIGUSR1) makes every writer reopen
//! `NAME.log` by path, for logrotate. A write that fails (a full disk)
//! drops its lines and counts them ([`lines_dropped`]); nothing waits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::peer::PeerAddr;
use crate::protocol;
use crate::timer::Deadline;

/// Messages (lines, or a loop thread's batches) a server may have queued for
/// its writer thread before new ones are dropped.
pub const LOG_QUEUE_LINES: usize = 65_536;
/// Bytes a server may have queued for its writer thread before new lines are
/// dropped: what a disk slower than a flood of traffic can cost in memory.
pub const LOG_QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// A log file is rotated when it reaches this many bytes (`--log-size`).
pub const DEFAULT_LOG_SIZE: u64 = 256 * 1024 * 1024;
/// Rotated files kept, `NAME.log.1` to `NAME.log.KEEP` (`--log-keep`).
pub const DEFAULT_LOG_KEEP: usize = 5;
/// The most a writer writes at once (one `writev`), and never more than the
/// rotation size, so that no file passes it. Larger writes cost the kernel
/// less per byte while its free memory is warm, and far more when it is not
/// (larger page-cache folios, taken from memory this VM's host reclaimed):
/// docs/PERFORMANCE.md, "The log path, system-wide".
pub const LOG_WRITE_CHUNK: usize = 64 * 1024;

/// When log files rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a file would pass this many bytes.
    pub size: u64,
    /// Rotated files kept (0: none, the full file is removed).
    pub keep: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            size: DEFAULT_LOG_SIZE,
            keep: DEFAULT_LOG_KEEP,
        }
    }
}

/// Bumped by [`reopen`]; each writer reopens its file when it sees a change.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// How long a flush request (at shutdown) waits for a writer thread.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Network bytes made safe for a log line: printable ASCII as is, `\` as
/// `\\`, everything else (control bytes, non-ASCII, non-UTF-8) as `\xNN`.
pub struct Escaped<'a>(pub &'a [u8]);

/// Wraps network bytes for logging; see [`Escaped`].
pub fn escape(bytes: &[u8]) -> Escaped<'_> {
    Escaped(bytes)
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut start = 0;
        for (i, &b) in self.0.iter().enumerate() {
            if plain(b) {
                continue;
            }
            // Safe: everything in start..i is printable ASCII.
            f.write_str(std::str::from_utf8(&self.0[start..i]).unwrap_or(""))?;
            if b == b'\\' {
                f.write_str("\\\\")?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
            start = i + 1;
        }
        f.write_str(std::str::from_utf8(&self.0[start..]).unwrap_or(""))
    }
}

/// What a loop thread's batch is allocated with: a full batch and the
/// line that fills it, mostly.
const BATCH_CAPACITY: usize = LOG_BATCH_BYTES + 16 * 1024;

/// The longest a loop thread's line waits in its batch.
pub const LOG_BATCH_DELAY: Duration = Duration::from_millis(100);
/// A batch this large goes to the writer at once (from the line that
/// fills it, within a turn). Large batches mean few wake-ups of the writer
/// and large writes (see [`LogFile::push`]).
pub const LOG_BATCH_BYTES: usize = 256 * 1024;

enum Msg {
    Line(String),
    /// Whole lines, already formatted: a loop thread's batch.
    Lines(Vec<u8>),
    Flush(SyncSender<()>),
    /// Nothing: wakes the writer to look at [`REOPEN`].
    Wake,
}

impl Msg {
    fn len(&self) -> usize {
        match self {
            Msg::Line(l) => l.len(),
            Msg::Lines(b) => b.len(),
            Msg::Flush(_) | Msg::Wake => 0,
        }
    }
}

/// A server's queue to its writer thread, bounded in messages and in bytes
/// ([`LOG_QUEUE_LINES`], [`LOG_QUEUE_BYTES`]).
#[derive(Clone)]
struct Queue {
    tx: SyncSender<Msg>,
    /// Bytes sent and not yet written; the writer takes off what it writes.
    bytes: Arc<AtomicUsize>,
    /// Lines dropped, ever: queue full, or the disk refused them.
    dropped: Arc<AtomicU64>,
    /// Batches written, handed back for the loop thread's next ones.
    spare: Spare,
}

/// Batch buffers on their way back from the writer to the loop thread, at
/// most [`SPARE_BATCHES`]. A batch allocated afresh each time is freed by
/// the writer, trimmed from the heap and faulted in again, zeroed, by the
/// next one: a few per cent of the loop's time when every line is logged.
///
/// Kept buffers hold memory only while the loop is busy. A batch that goes
/// to the writer before it is full ([`LOG_BATCH_BYTES`]) left by its timer
/// or at a flush: the loop is quiet, and the pages of the buffers it used
/// are given back to the kernel ([`release`]), the allocations kept. The
/// writer releases that batch once written, and every spare, before
/// keeping it; the loop releases the buffer it takes for its next batch.
/// So an idle server holds no batch pages (three full ones were ~0.8 MiB,
/// a fifth of the memory of 10,000 idle connections), and a busy one
/// reuses warm buffers as before: full batches are never released.
#[derive(Clone, Default)]
struct Spare(Arc<Mutex<Vec<Vec<u8>>>>);

/// Batch buffers kept for reuse per server (each [`BATCH_CAPACITY`]).
const SPARE_BATCHES: usize = 2;

impl Spare {
    /// A buffer for the next batch: a written one if there is one, with no
    /// pages if the loop is `quiet`.
    fn take(&self, quiet: bool) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut s| s.pop());
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY));
        if quiet {
            release(&mut buf);
        }
        buf
    }

    /// Gives back a written batch, emptied, unless enough are kept; if it
    /// was not full, its pages and every spare's go back to the kernel.
    fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < BATCH_CAPACITY {
            return;
        }
        let quiet = buf.len() < LOG_BATCH_BYTES;
        buf.clear();
        if quiet {
            release(&mut buf);
        }
        if let Ok(mut s) = self.0.lock() {
            if quiet {
                // Spares left from a busy stretch; a no-op on released ones.
                s.iter_mut().for_each(release);
            }
            if s.len() < SPARE_BATCHES {
                s.push(buf);
            }
        }
    }
}

/// Gives the pages of an empty buffer back to the kernel, keeping its
/// allocation (and so the allocator's state: freeing a buffer this large
/// would raise glibc's mmap threshold, and the next one would then come
/// from a heap that keeps its pages). The whole pages inside its capacity
/// are dropped with `madvise(MADV_DONTNEED)`: resident memory falls at
/// once, and they come back zeroed when next written.
fn release(buf: &mut Vec<u8>) {
    buf.clear();
    let page = page_size();
    let start = buf.as_mut_ptr() as usize;
    let from = start.next_multiple_of(page);
    let to = (start + buf.capacity()) / page * page;
    if to > from {
        // SAFETY: `from..to` lies inside the buffer's own allocation, which
        // `buf` holds exclusively and which holds nothing (its length is
        // 0); the allocator's bookkeeping is outside it. The kernel maps
        // those pages to zeroed ones on their next use.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_DONTNEED);
        }
    }
}

/// The kernel's page size.
fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf reads a constant of the process.
    *PAGE.get_or_init(|| {
        usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
    })
}

impl Queue {
    /// Queues `msg` without blocking, or gives it back if the queue is full.
    fn offer(&self, msg: Msg) -> Result<(), Msg> {
        let n = msg.len();
        if self.bytes.fetch_add(n, Ordering::Relaxed) + n > LOG_QUEUE_BYTES {
            self.bytes.fetch_sub(n, Ordering::Relaxed);
            return Err(msg);
        }
        self.tx.try_send(msg).map_err(|e| {
            self.bytes.fetch_sub(n, Ordering::Relaxed);
            match e {
                TrySendError::Full(m) | TrySendError::Disconnected(m) => m,
            }
        })
    }
}

/// A server's writer, and whether its traffic is logged.
type Writer = (Queue, bool);

/// Each server's writer, for [`attach_loop`].
static WRITERS: OnceLock<Mutex<HashMap<String, Writer>>> = OnceLock::new();

/// A loop thread's batch of lines (see the module header).
struct Batch {
    name: String,
    queue: Queue,
    traffic: bool,
    buf: Vec<u8>,
    /// When the oldest line in `buf` was added.
    since: Option<Instant>,
    /// `TIMESTAMP NAME DEBUG `, for the current turn once a line needs it.
    prefix: Vec<u8>,
    fresh: bool,
    dropped: u64,
    /// The last traffic line's peer, and its address as written: the lines
    /// of one connection come in runs (its requests, then their replies).
    peer: Option<PeerAddr>,
    peer_text: Vec<u8>,
}

impl Batch {
    /// A line was appended: the batch's clock starts, and a full batch
    /// goes to the writer.
    fn added(&mut self) {
        self.since.get_or_insert_with(Instant::now);
        if self.buf.len() >= LOG_BATCH_BYTES {
            self.send();
        }
    }

    fn send(&mut self) {
        self.since = None;
        if self.buf.is_empty() {
            return;
        }
        if self.dropped > 0 {
            let note = format!(
                "{} {} WARN {} log lines dropped: writer behind\n",
                humantime::format_rfc3339_micros(SystemTime::now()),
                self.name,
                self.dropped
            );
            if self.queue.offer(Msg::Line(note)).is_ok() {
                self.dropped = 0;
            }
        }
        // The next batch starts with room for a whole batch, so it is not
        // copied again and again as it grows. A batch sent before it is
        // full left by its timer or at a flush: the loop is quiet, and the
        // next batch's buffer holds no pages until lines come (see Spare).
        let quiet = self.buf.len() < LOG_BATCH_BYTES;
        let lines = std::mem::replace(&mut self.buf, self.queue.spare.take(quiet));
        if let Err(Msg::Lines(lost)) = self.queue.offer(Msg::Lines(lines)) {
            let n = lost.iter().filter(|&&b| b == b'\n').count() as u64;
            self.dropped += n;
            self.queue.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.send();
    }
}

thread_local! {
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// The `log::Log` at the end of one server's fern chain: hands the formatted
/// line to the server's writer thread without blocking.
struct ChannelLog {
    queue: Queue,
    dropped: AtomicU64,
}

impl log::Log for ChannelLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // On the server's own loop thread: into its batch, in order.
        let batched = BATCH.with(|b| match b.borrow_mut().as_mut() {
            Some(batch) if batch.name == record.target() => {
                let _ = writeln!(batch.buf, "{}", record.args());
                batch.added();
                true
            }
            _ => false,
        });
        if batched {
            return;
        }
        let mut line = record.args().to_string();
        line.push('\n');
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0
            && self
                .queue
                .offer(Msg::Line(format!(
                    "{} (log) {dropped} log lines dropped: writer behind\n",
                    humantime::format_rfc3339_micros(SystemTime::now())
                )))
                .is_ok()
        {
            self.dropped.fetch_sub(dropped, Ordering::Relaxed);
        }
        if self.queue.offer(Msg::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        if self.queue.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(FLUSH_WAIT);
        }
    }
}

/// Disk blocks a writer reserves ahead of its file's end, a step at a time
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`: the size readers see does not
/// change). Writing into reserved blocks spares the file system its
/// per-page delayed-allocation work, about a fifth of the writer's CPU on
/// ext4 when every line is logged. What is left unused past the end is
/// given back when the file is rotated, reopened or closed.
pub const LOG_RESERVE_STEP: u64 = 1024 * 1024;

/// A writer thread's file: its size, rotation and reopening.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    /// The file's blocks are reserved up to here ([`LOG_RESERVE_STEP`]);
    /// `u64::MAX` once the file system has said it cannot.
    reserved: u64,
    rotation: Rotation,
    buf: Vec<u8>,
    dropped: Arc<AtomicU64>,
    reopened: u64,
}

impl LogFile {
    fn open(path: &Path, rotation: Rotation, dropped: Arc<AtomicU64>) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            reserved: 0,
            rotation,
            buf: Vec::with_capacity(LOG_WRITE_CHUNK),
            dropped,
            reopened: REOPEN.load(Ordering::Relaxed),
        })
    }

    /// Appends `bytes` (whole lines), writing and rotating as needed.
    ///
    /// Writes are of at most [`LOG_WRITE_CHUNK`] bytes, cut at line ends. A
    /// loop's batch is written from where it is, without a copy, its first
    /// chunk behind whatever small lines were buffered (one `writev`), and
    /// only its tail is buffered for the next write.
    fn push(&mut self, mut bytes: &[u8]) {
        // No chunk is larger than a whole file may be.
        let most = (self.rotation.size.min(LOG_WRITE_CHUNK as u64) as usize).max(1);
        while !bytes.is_empty() {
            // What is buffered is always less than a chunk.
            let room = most - self.buf.len();
            let take = if bytes.len() <= room {
                bytes.len()
            } else {
                match memchr::memrchr(b'\n', &bytes[..room]) {
                    Some(i) => i + 1,
                    // A line longer than a chunk is cut.
                    None if self.buf.is_empty() => most,
                    None => {
                        self.write();
                        continue;
                    }
                }
            };
            let (chunk, rest) = bytes.split_at(take);
            let held = self.size + self.buf.len() as u64;
            if held > 0 && held + chunk.len() as u64 > self.rotation.size {
                self.write();
                self.rotate();
            }
            if self.buf.len() + chunk.len() >= most / 2 {
                self.write_with(chunk);
            } else {
                self.buf.extend_from_slice(chunk);
            }
            bytes = rest;
        }
    }

    /// Writes what is buffered; on failure its lines are dropped and counted.
    fn write(&mut self) {
        if !self.buf.is_empty() {
            self.write_with(&[]);
        }
    }

    /// Writes what is buffered and then `then` (whole lines) in one
    /// [`LogFile::write_out`], keeping the buffer's allocation.
    fn write_with(&mut self, then: &[u8]) {
        let buf = std::mem::take(&mut self.buf);
        self.write_out(&buf, then);
        self.buf = buf;
        self.buf.clear();
    }

    /// Writes `first` then `then` (whole lines) to the file with one
    /// `writev` (more if the kernel takes part); on failure they are
    /// dropped and counted.
    fn write_out(&mut self, first: &[u8], then: &[u8]) {
        if self.file.is_none() {
            self.reopen();
        }
        let len = first.len() + then.len();
        self.reserve(len as u64);
        let result = match &mut self.file {
            Some(f) => write_both(f, first, then),
            None => Err(io::ErrorKind::NotFound.into()),
        };
        match result {
            Ok(()) => self.size += len as u64,
            Err(_) => {
                let lines = memchr::memchr_iter(b'\n', first).count()
                    + memchr::memchr_iter(b'\n', then).count();
                self.dropped.fetch_add(lines as u64, Ordering::Relaxed);
                // Part may have gone in: take the size from the file.
                if let Some(len) = self.file.as_ref().and_then(|f| f.metadata().ok()) {
                    self.size = len.len();
                }
            }
        }
    }

    fn numbered(&self, k: usize) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push(format!(".{k}"));
        PathBuf::from(p)
    }

    /// Reserves blocks for the next `n` bytes, a [`LOG_RESERVE_STEP`]
    /// ahead, never past the rotation size. A failure (a full disk, a file
    /// system without `fallocate`) costs nothing: the write allocates as
    /// usual and says what it must.
    fn reserve(&mut self, n: u64) {
        use std::os::fd::AsRawFd;
        let (Some(file), false) = (&self.file, self.reserved == u64::MAX) else {
            return;
        };
        let start = self.reserved.max(self.size);
        if self.size + n <= start {
            return;
        }
        let end = (self.size + n + LOG_RESERVE_STEP).min(self.rotation.size.max(self.size + n));
        // SAFETY: fallocate on a descriptor we own; no memory is involved.
        let r = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                start as libc::off_t,
                (end - start) as libc::off_t,
            )
        };
        self.reserved = match r {
            0 => end,
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) => u64::MAX,
            _ => self.size,
        };
    }

    /// Closes the file, giving back the blocks reserved past its end
    /// (truncating to the size it has now, whoever wrote it, frees them).
    fn close(&mut self) {
        if let Some(f) = self.file.take() {
            if self.reserved != u64::MAX && self.reserved > self.size {
                if let Ok(m) = f.metadata() {
                    let _ = f.set_len(m.len());
                }
            }
        }
        if self.reserved != u64::MAX {
            self.reserved = 0;
        }
    }

    /// NAME.log → NAME.log.1 → ... → NAME.log.KEEP (the oldest removed).
    fn rotate(&mut self) {
        self.close();
        let keep = self.rotation.keep;
        if keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            for k in (1..keep).rev() {
                let _ = std::fs::rename(self.numbered(k), self.numbered(k + 1));
            }
            let _ = std::fs::rename(&self.path, self.numbered(1));
        }
        self.reopen();
    }

    /// Opens NAME.log by path again (after a rotation, or for logrotate).
    fn reopen(&mut self) {
        self.close();
        self.reopened = REOPEN.load(Ordering::Relaxed);
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(f) => {
                self.size = f.metadata().map_or(0, |m| m.len());
                self.file = Some(f);
            }
            Err(_) => self.file = None,
        }
    }

    fn reopen_if_asked(&mut self) {
        if REOPEN.load(Ordering::Relaxed) != self.reopened {
            self.write();
            self.reopen();
        }
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes all of `a` then all of `b`, with `writev`, going on after a
/// partial write as `write_all` does.
fn write_both(f: &mut File, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = match f.write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

fn writer(mut out: LogFile, rx: Receiver<Msg>, queued: Arc<AtomicUsize>, spare: Spare) {
    loop {
        // Block for the first message, then take whatever else is queued and
        // write once the queue is dry: one write(2) per burst.
        let first = match rx.recv() {
            Ok(m) => m,
            Err(_) => break,
        };
        out.reopen_if_asked();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            queued.fetch_sub(msg.len(), Ordering::Relaxed);
            match msg {
                Msg::Line(l) => out.push(l.as_bytes()),
                Msg::Lines(b) => {
                    out.push(&b);
                    spare.give(b);
                }
                Msg::Flush(ack) => {
                    out.write();
                    let _ = ack.send(());
                }
                Msg::Wake => {}
            }
            next = match rx.recv_timeout(Duration::ZERO) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => None,
            };
        }
        out.write();
    }
    out.write();
}

/// Every server's log file is reopened by path (SIGUSR1; for logrotate).
pub fn reopen() {
    REOPEN.fetch_add(1, Ordering::Relaxed);
    if let Some(w) = WRITERS.get().and_then(|w| w.lock().ok()) {
        for (queue, _) in w.values() {
            // A full queue means a busy writer, which looks soon anyway.
            let _ = queue.tx.try_send(Msg::Wake);
        }
    }
}

/// Lines server `name` dropped, ever: its writer was behind, or the disk
/// refused them (a metric).
pub fn lines_dropped(name: &str) -> u64 {
    WRITERS
        .get()
        .and_then(|w| w.lock().ok())
        .and_then(|w| w.get(name).map(|(q, _)| q.dropped.load(Ordering::Relaxed)))
        .unwrap_or(0)
}

/// Installs the process's logger: one `DIR/NAME.log` per server name, the
/// directory created if missing. Records whose target is not a server name
/// (libraries) go to stderr at `warn` and above. Call once per process.
pub fn init(dir: &Path, servers: &[String], level: log::LevelFilter) -> io::Result<()> {
    init_with(dir, servers, level, Rotation::default())
}

/// [`init`], with log files rotating as `rotation` says.
pub fn init_with(
    dir: &Path,
    servers: &[String],
    level: log::LevelFilter,
    rotation: Rotation,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut root = fern::Dispatch::new().level(level);
    let names: Vec<String> = servers.to_vec();
    for name in servers {
        let path = dir.join(format!("{name}.log"));
        let dropped = Arc::new(AtomicU64::new(0));
        let file = LogFile::open(&path, rotation, dropped.clone())?;
        let (tx, rx) = mpsc::sync_channel(LOG_QUEUE_LINES);
        let queue = Queue {
            tx,
            bytes: Arc::new(AtomicUsize::new(0)),
            dropped,
            spare: Spare::default(),
        };
        let (queued, spare) = (queue.bytes.clone(), queue.spare.clone());
        std::thread::Builder::new()
            .name(format!("log-{name}"))
            .spawn(move || writer(file, rx, queued, spare))?;
        let target = name.clone();
        let prefix = name.clone();
        if let Ok(mut m) = WRITERS.get_or_init(Default::default).lock() {
            m.insert(
                name.clone(),
                (queue.clone(), level >= log::LevelFilter::Debug),
            );
        }
        let sink: Box<dyn log::Log> = Box::new(ChannelLog {
            queue,
            dropped: AtomicU64::new(0),
        });
        root = root.chain(
            fern::Dispatch::new()
                .filter(move |m| m.target() == target)
                .format(move |out, msg, rec| {
                    out.finish(format_args!(
                        "{} {} {} {}",
                        humantime::format_rfc3339_micros(SystemTime::now()),
                        prefix,
                        rec.level(),
                        msg
                    ))
                })
                .chain(sink),
        );
    }
    root = root.chain(
        fern::Dispatch::new()
            .filter(move |m| {
                !names.iter().any(|n| n == m.target()) && m.level() <= log::Level::Warn
            })
            .format(|out, msg, rec| {
                out.finish(format_args!(
                    "{} {} {} {}",
                    humantime::format_rfc3339_micros(SystemTime::now()),
                    rec.target(),
                    rec.level(),
                    msg
                ))
            })
            .chain(io::stderr()),
    );
    root.apply().map_err(io::Error::other)
}

/// Makes the calling thread the loop thread of server `name`: what it logs
/// for `name` is batched (see the module header). Returns whether traffic is
/// to be logged (the level is `debug`); false, and nothing batched, when the
/// process has no log for `name` (tests, tools).
pub fn attach_loop(name: &str) -> bool {
    let Some((queue, traffic)) = WRITERS
        .get()
        .and_then(|w| w.lock().ok())
        .and_then(|w| w.get(name).cloned())
    else {
        return false;
    };
    BATCH.with(|b| {
        *b.borrow_mut() = Some(Batch {
            name: name.to_string(),
            buf: queue.spare.take(true),
            queue,
            traffic,
            since: None,
            prefix: Vec::new(),
            fresh: false,
            dropped: 0,
            peer: None,
            peer_text: Vec::new(),
        })
    });
    traffic
}

/// Logs a traffic line on the loop thread: `VERB PEER: BYTES SUFFIX`, e.g.
/// `from 127.0.0.1:5000: IAMAT ...`, with BYTES escaped. Returns whether
/// BYTES were logged as they are (nothing to escape): a reply made of
/// their fields and herd's own plain bytes can then go through
/// [`traffic_plain`]. False when no traffic is logged on this thread.
pub fn traffic(verb: &str, peer: &PeerAddr, bytes: &[u8], suffix: &str) -> bool {
    traffic_line(verb, peer, suffix, |buf| write_escaped(buf, bytes))
}

/// [`traffic`] for BYTES known to need no escaping (printable ASCII but
/// `\`): an IAMAT's AT reply when the IAMAT itself was plain, which spares
/// the loop a second scan of the same fields.
pub fn traffic_plain(verb: &str, peer: &PeerAddr, bytes: &[u8], suffix: &str) {
    debug_assert!(is_plain(bytes), "{:?}", bytes.escape_ascii().to_string());
    traffic_line(verb, peer, suffix, |buf| {
        buf.extend_from_slice(bytes);
        true
    });
}

/// Appends `PREFIX VERB PEER: ` + what `write` appends + `SUFFIX\n` to the
/// loop thread's batch; returns what `write` did, or false if traffic is
/// not logged here.
fn traffic_line(
    verb: &str,
    peer: &PeerAddr,
    suffix: &str,
    write: impl FnOnce(&mut Vec<u8>) -> bool,
) -> bool {
    BATCH.with(|b| {
        let mut b = b.borrow_mut();
        let Some(batch) = b.as_mut().filter(|b| b.traffic) else {
            return false;
        };
        if !batch.fresh {
            batch.prefix.clear();
            let stamp = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
            batch.prefix.extend_from_slice(stamp.as_bytes());
            batch.prefix.push(b' ');
            batch.prefix.extend_from_slice(batch.name.as_bytes());
            batch.prefix.extend_from_slice(b" DEBUG ");
            batch.fresh = true;
        }
        if batch.peer != Some(*peer) {
            batch.peer = Some(*peer);
            batch.peer_text.clear();
            write_addr(&mut batch.peer_text, &peer.get());
        }
        let buf = &mut batch.buf;
        buf.extend_from_slice(&batch.prefix);
        buf.extend_from_slice(verb.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(&batch.peer_text);
        buf.extend_from_slice(b": ");
        let plain = write(buf);
        buf.extend_from_slice(suffix.as_bytes());
        buf.push(b'\n');
        batch.added();
        plain
    })
}

/// A new loop turn: the next traffic line takes a new timestamp; the batch
/// goes to the writer if it is full or old enough.
pub fn turn_end(now: Instant) {
    BATCH.with(|b| {
        if let Some(batch) = b.borrow_mut().as_mut() {
            batch.fresh = false;
            let due = batch
                .since
                .is_some_and(|t| now.duration_since(t) >= LOG_BATCH_DELAY);
            if due || batch.buf.len() >= LOG_BATCH_BYTES {
                batch.send();
            }
        }
    });
}

/// When the loop thread's batch must go to the writer, if it holds anything.
pub fn deadline() -> Option<Instant> {
    BATCH.with(|b| {
        b.borrow()
            .as_ref()
            .and_then(|batch| batch.since)
            .map(|t| t + LOG_BATCH_DELAY)
    })
}

/// The loop thread's log batch, as one of the loop's [`Deadline`]s: it is
/// due [`LOG_BATCH_DELAY`] after its first line.
pub struct LogBatch;

impl Deadline for LogBatch {
    fn next_deadline(&self) -> Option<Instant> {
        deadline()
    }
}

/// Sends the loop thread's batch to the writer now (at shutdown).
pub fn flush_loop() {
    BATCH.with(|b| {
        if let Some(batch) = b.borrow_mut().as_mut() {
            batch.send();
        }
    });
}

/// A byte the log writes as it is: printable ASCII but `\`.
fn plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'\\'
}

/// Whether every byte of `bytes` is [`plain`]: without stopping at the
/// first that is not, a loop the compiler makes wide, for lines that almost
/// never have one.
fn is_plain(bytes: &[u8]) -> bool {
    bytes.iter().fold(true, |all, &b| all & plain(b))
}

/// Appends `bytes` escaped as [`Escaped`] does, without `fmt`.
/// Returns true if `bytes` went in as they are.
pub fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    if is_plain(bytes) {
        out.extend_from_slice(bytes);
        return true;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        if plain(b) {
            out.push(b);
        } else if b == b'\\' {
            out.extend_from_slice(b"\\\\");
        } else {
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
    false
}

/// Appends a socket address as `Display` writes it; IPv4 by hand.
pub fn write_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                protocol::write_decimal(out, u128::from(*octet));
            }
            out.push(b':');
            protocol::write_decimal(out, u128::from(a.port()));
        }
        SocketAddr::V6(_) => {
            use std::io::Write as _;
            let _ = write!(out, "{addr}");
        }
    }
}

/// Flushes every server's log file (waits for the writer threads).
pub fn flush() {
    log::logger().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_blocks_are_given_back_when_a_file_is_rotated_or_closed() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let rotation = Rotation {
            size: 4 * LOG_RESERVE_STEP,
            keep: 1,
        };
        let mut file = LogFile::open(&path, rotation, Arc::new(AtomicU64::new(0))).unwrap();
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let lines: Vec<u8> = line.repeat(300);
        let on_disk = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
        // 30,000 bytes written; the size readers see is what was written.
        file.push(&lines);
        file.write();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 30_000);
        if file.reserved != u64::MAX {
            // Reserved a step ahead (where the file system can).
            assert!(on_disk(&path) >= LOG_RESERVE_STEP, "{}", on_disk(&path));
        }
        // Past the size: rotated, and the rotated file holds no more than
        // its lines (and a block's rounding).
        while std::fs::metadata(dir.path().join("t.log.1")).is_err() {
            file.push(&lines);
            file.write();
        }
        let rotated = dir.path().join("t.log.1");
        let len = std::fs::metadata(&rotated).unwrap().len();
        assert!(len <= rotation.size);
        assert!(
            on_disk(&rotated) <= len + 4096,
            "{} on disk for {len}",
            on_disk(&rotated)
        );
        file.push(&lines);
        file.write();
        drop(file);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len % 100, 0);
        assert!(
            on_disk(&path) <= len + 4096,
            "{} on disk for {len}",
            on_disk(&path)
        );
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_frees_what_is_written() {
        let (tx, rx) = mpsc::sync_channel(LOG_QUEUE_LINES);
        let queue = Queue {
            tx,
            bytes: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            spare: Spare::default(),
        };
        let batch = || Msg::Lines(vec![b'x'; LOG_BATCH_BYTES]);
        let fits = LOG_QUEUE_BYTES / LOG_BATCH_BYTES;
        for _ in 0..fits {
            assert!(queue.offer(batch()).is_ok());
        }
        // Far fewer messages than LOG_QUEUE_LINES, but the bytes are full.
        assert!(matches!(queue.offer(batch()), Err(Msg::Lines(_))));
        assert!(queue.offer(Msg::Line("x\n".into())).is_err());
        // A writer that wrote one batch makes room for one more.
        let dir = tempfile::tempdir().unwrap();
        let file = LogFile::open(
            &dir.path().join("t.log"),
            Rotation::default(),
            queue.dropped.clone(),
        )
        .unwrap();
        let first = rx.recv().unwrap();
        queue.bytes.fetch_sub(first.len(), Ordering::Relaxed);
        assert!(queue.offer(batch()).is_ok());
        assert!(queue.offer(batch()).is_err());
        // And the writer thread keeps the count: once it has written
        // everything, the queue is empty again.
        let (queued, spare) = (queue.bytes.clone(), queue.spare.clone());
        let writer = std::thread::spawn(move || writer(file, rx, queued, spare));
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        queue.tx.send(Msg::Flush(ack_tx)).unwrap();
        ack_rx.recv().unwrap();
        assert_eq!(queue.bytes.load(Ordering::Relaxed), 0);
        drop(queue);
        writer.join().unwrap();
    }

    /// Resident pages of `buf`'s allocation (the whole pages inside it).
    fn resident_pages(buf: &Vec<u8>) -> usize {
        let page = page_size();
        let start = buf.as_ptr() as usize;
        let (from, to) = (
            start.next_multiple_of(page),
            (start + buf.capacity()) / page * page,
        );
        let mut state = vec![0u8; (to - from) / page];
        // SAFETY: a range of our own allocation; `state` has a byte per page.
        let r = unsafe { libc::mincore(from as *mut libc::c_void, to - from, state.as_mut_ptr()) };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        state.iter().filter(|&&s| s & 1 == 1).count()
    }

    #[test]
    fn full_batches_are_kept_warm_and_a_quiet_loop_gives_their_pages_back() {
        let spare = Spare::default();
        let full = |spare: &Spare| {
            let mut buf = spare.take(false);
            buf.resize(LOG_BATCH_BYTES, b'x');
            buf
        };
        // A busy loop: full batches come back with their pages.
        let (a, b) = (full(&spare), full(&spare));
        let filled = LOG_BATCH_BYTES / page_size() - 1;
        assert!(resident_pages(&a) >= filled, "{}", resident_pages(&a));
        spare.give(a);
        spare.give(b);
        let warm = spare.take(false);
        assert!(resident_pages(&warm) >= filled, "{}", resident_pages(&warm));
        assert!(warm.is_empty() && warm.capacity() >= BATCH_CAPACITY);
        // A batch that left by its timer: written, it holds no pages, nor
        // do the spares kept from the busy stretch.
        let mut partial = warm;
        partial.extend_from_slice(&[b'y'; 40_000]);
        spare.give(partial);
        let kept: Vec<Vec<u8>> = std::mem::take(&mut *spare.0.lock().unwrap());
        assert_eq!(kept.len(), SPARE_BATCHES);
        for buf in &kept {
            assert_eq!(resident_pages(buf), 0);
            assert!(buf.is_empty() && buf.capacity() >= BATCH_CAPACITY);
        }
        *spare.0.lock().unwrap() = kept;
        // The loop's next batch when quiet holds none either, and is
        // written and read as any buffer (zeroed pages under it).
        spare.give(full(&spare));
        let mut next = spare.take(true);
        assert_eq!(resident_pages(&next), 0);
        next.extend_from_slice(b"line\n");
        assert_eq!(next, b"line\n");
    }

    #[test]
    fn batches_behind_buffered_lines_are_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let mut f = LogFile::open(&path, Rotation::default(), Arc::new(AtomicU64::new(0))).unwrap();
        let mut want = Vec::new();
        let mut n = 0;
        let mut lines = |count: usize, width: usize| {
            let mut out = Vec::new();
            for _ in 0..count {
                n += 1;
                let text = format!("{n} {}\n", "y".repeat(width));
                out.extend_from_slice(text.as_bytes());
            }
            out
        };
        // Small lines (buffered), a loop's batch (several chunks), a line
        // longer than a chunk, more small lines, a batch again.
        let parts = [
            lines(3, 40),
            lines(3000, 100),
            lines(1, LOG_WRITE_CHUNK + 100),
            lines(5, 10),
            lines(2500, 130),
        ];
        for part in &parts {
            f.push(part);
            want.extend_from_slice(part);
        }
        f.write();
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert_eq!(f.size, want.len() as u64);
        assert!(f.buf.is_empty());
    }

    #[test]
    fn files_rotate_before_passing_the_size_and_keep_at_most_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let rotation = Rotation {
            size: 1000,
            keep: 2,
        };
        let dropped = Arc::new(AtomicU64::new(0));
        let mut f = LogFile::open(&path, rotation, dropped.clone()).unwrap();
        let line = [b"x".repeat(49), b"\n".to_vec()].concat();
        for _ in 0..200 {
            f.push(&line);
        }
        // One batch of many lines at once is cut at line ends too.
        f.push(&line.repeat(50));
        f.write();
        for p in [
            path.clone(),
            dir.path().join("t.log.1"),
            dir.path().join("t.log.2"),
        ] {
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len <= 1000 && len % 50 == 0, "{}: {len}", p.display());
        }
        assert!(!dir.path().join("t.log.3").exists());
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        // Reopen by path after the file was renamed away (logrotate).
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        REOPEN.fetch_add(1, Ordering::Relaxed);
        f.reopen_if_asked();
        f.push(&line);
        f.write();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 50);
    }

    #[test]
    fn the_byte_writers_agree_with_display() {
        let cases: &[&[u8]] = &[
            b"IAMAT kiwi +1+1 5",
            b"a\nb\\c\xff\x00",
            b"",
            "é".as_bytes(),
        ];
        for bytes in cases {
            let mut out = Vec::new();
            write_escaped(&mut out, bytes);
            assert_eq!(out, escape(bytes).to_string().as_bytes());
        }
        for addr in [
            "127.0.0.1:5000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:12000",
        ] {
            let a: SocketAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            write_addr(&mut out, &a);
            assert_eq!(out, a.to_string().as_bytes());
        }
    }

    #[test]
    fn escape_keeps_printable_ascii_and_escapes_the_rest() {
        let cases: &[(&[u8], &str)] = &[
            (b"IAMAT kiwi +1+1 5", "IAMAT kiwi +1+1 5"),
            (b"a\nb", "a\\x0ab"),
            (b"\r\t\x0b\x0c", "\\x0d\\x09\\x0b\\x0c"),
            (b"\xff\xfe", "\\xff\\xfe"),
            ("é".as_bytes(), "\\xc3\\xa9"),
            (b"back\\slash", "back\\\\slash"),
            (b"", ""),
            (b"\x7f", "\\x7f"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input).to_string(), *want, "{input:?}");
        }
    }
}
