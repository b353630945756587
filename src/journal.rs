//! The durable store: every accepted update appended to `DIR/NAME.journal`,
//! replayed at start, compacted when it grows well past the live store.
//!
//! ## Format
//! One record per line: the AT line exactly as stored, then `\n`. AT lines
//! hold no `\n` (fields are runs of non-white-space bytes), so a line is a
//! record. Replay parses each line as an AT update and offers it to the
//! store; the store's newest-wins rule makes the order of records and any
//! duplicates irrelevant.
//!
//! ## Replay, fast
//! A million records should replay in about half a second. Replay reads the
//! file 1 MiB at a time and cuts lines out of the buffer in place (no copy
//! per line); the file's length and the first lines' length size the store
//! once. A record written by the server is canonical (single spaces), and
//! [`protocol::parse_canonical_at`] reads it in one pass with `parse`'s own
//! field checks; any other line goes to `parse`, so what counts as a record
//! is exactly what `parse` reads as an AT update. Records are offered to
//! the store in batches ([`Store::offer_all`]), whose index lookups overlap.
//!
//! ## When a record is safe
//! The loop collects the records of one turn and appends them with one
//! `write(2)` *before* it flushes that turn's replies. Once written, a record
//! is in the kernel's page cache, which survives the process being killed
//! (SIGKILL, a panic, an OOM kill): an update that was answered with an AT
//! line is never lost to a crash of the server. The loop never waits for the
//! disk itself — no fsync on the loop; a power cut can lose what the kernel
//! had not yet written back (by default up to about 30 s on Linux), or, with
//! `--fsync-ms N`, what came in the last N ms: a helper thread then calls
//! `fdatasync` every N ms.
//!
//! ## When the disk says no (docs/PROTOCOL.md §5)
//! Every record gets a sequence number; the journal knows the last one
//! written ([`Journal::durable`]). The loop holds the output of every
//! connection whose replies acknowledge a record beyond it, so an AT reply
//! never leaves before its record is written. A failed write (ENOSPC,
//! EFBIG, EIO) keeps the whole records that went in and is cut back to the
//! end of the last one, so a record torn by a full disk leaves no garbage;
//! the rest stay queued, in order, to be retried every
//! [`RETRY_INTERVAL`] ([`Journal`] is a [`Deadline`] of the loop). While it
//! fails, [`Journal::failing`] says why; the first failure and the recovery
//! are logged once each, with counts. If the queue passes
//! [`MAX_PENDING_BYTES`] it is dropped and, once the disk takes writes
//! again, the whole store is written as a fresh journal instead: the store
//! holds every update the queue did, so no gap remains.
//!
//! ## Torn records
//! A kill in the middle of a `write(2)` can leave a last line without its
//! `\n`; replay skips it (it was never acknowledged: its reply was not yet
//! flushed). Lines that do not parse as AT updates are skipped and counted,
//! never a failed start.
//!
//! ## Compaction
//! When the journal holds more than [`COMPACT_FACTOR`] times as many records
//! as the store has clients (and at least [`COMPACT_MIN_RECORDS`]), the loop
//! hands a snapshot of the store to a helper thread, which writes it to
//! `NAME.journal.new` and syncs it. Meanwhile the loop goes on appending to
//! the old file and keeps a copy of what it appends; when the snapshot is
//! done, the loop appends that copy to the new file and renames it over the
//! old one. A crash at any point leaves either the old journal or the new
//! one complete. Start-up always compacts (synchronously, before serving).
//!
//! ## Failing writes
//! A failed append is logged once per failing stretch and the server keeps
//! serving (the herd still holds the update). The journal is *failing* from
//! a failed append until the next one that succeeds; [`Journal::stats`]
//! shares that state and the bytes appended with the operator endpoint,
//! whose `/healthz` reports it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::protocol::{self, Command};
use crate::stats::JournalStats;
use crate::store::{Store, Update, OFFER_BATCH};
use crate::timer::Deadline;

/// How often a failing journal write is retried.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);
/// Records queued while the journal fails, in bytes, past which the queue
/// is given up for a rewrite from the store on recovery.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Compact when the journal holds this many times the live store's records...
pub const COMPACT_FACTOR: u64 = 4;
/// ...and at least this many records.
pub const COMPACT_MIN_RECORDS: u64 = 100_000;

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Records read and offered to the store.
    pub records: u64,
    /// Lines skipped because they were not AT updates.
    pub invalid: u64,
    /// A last line without `\n` (a torn write) was skipped.
    pub torn_tail: bool,
}

/// A server's journal.
pub struct Journal {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    /// Records of this turn, written by `flush`.
    pending: Vec<u8>,
    /// Records in the file (for the compaction rule).
    records: u64,
    /// Records in `pending`.
    turn_records: u64,
    compaction: Option<Compaction>,
    server: String,
    /// Bytes appended and the failing state, for the endpoint.
    stats: Arc<JournalStats>,
    /// The file's length: a failed write is cut back to it.
    size: u64,
    /// Sequence number of the last record queued, and of the last written.
    queued: u64,
    durable: u64,
    /// While writes fail: why, since when, the next retry, and whether the
    /// queue was given up (rewrite from the store).
    failure: Option<Failure>,
    /// A cut-back failed: the file may end in a torn record, so the next
    /// write starts with a `\n` to close it off.
    torn: bool,
}

struct Failure {
    error: String,
    since: Instant,
    retry_at: Instant,
    retries: u64,
    rewrite: bool,
}

struct Compaction {
    done: Receiver<io::Result<()>>,
    /// Records in the snapshot being written.
    snapshot_records: u64,
    /// What was appended to the old file since the snapshot was taken.
    since: Vec<u8>,
    since_records: u64,
    /// The compaction thread, waiting for the old file once the new one
    /// replaced it: closing a file renamed over frees its page cache, a few
    /// MiB of pages, which is not the loop's work.
    retire: Sender<File>,
}

impl Journal {
    /// Opens `dir/NAME.journal`, replays it into `store`, and rewrites it
    /// compacted. `fsync`: sync the file this often from a helper thread.
    pub fn open(
        dir: &Path,
        name: &str,
        store: &mut Store,
        fsync: Option<Duration>,
    ) -> io::Result<(Journal, Replay)> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.journal"));
        let replay = match File::open(&path) {
            Ok(f) => replay_file(f, store)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Replay::default(),
            Err(e) => return Err(e),
        };
        // Start from a compacted file: the store as it is now. On a full
        // disk, go on with the journal as it is (replay has read it; new
        // records are held and retried like any failed write).
        let tmp = new_path(&path);
        let mut torn = false;
        if let Err(e) =
            write_snapshot(&tmp, &snapshot(store)).and_then(|()| fs::rename(&tmp, &path))
        {
            // The old file stays: a torn last record in it must be closed off.
            torn = replay.torn_tail;
            let _ = fs::remove_file(&tmp);
            log::warn!(target: name, "journal {}: compacting at start: {e}; going on with the journal as it is", path.display());
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let file = Arc::new(Mutex::new(file));
        if let Some(every) = fsync {
            spawn_syncer(Arc::downgrade(&file), every, name)?;
        }
        Ok((
            Journal {
                path,
                file,
                pending: Vec::new(),
                records: store.len() as u64,
                turn_records: 0,
                compaction: None,
                server: name.to_string(),
                stats: Arc::default(),
                size,
                queued: 0,
                durable: 0,
                failure: None,
                torn,
            },
            replay,
        ))
    }

    /// Queues a stored AT line (without `\n`) for this turn's write;
    /// returns its sequence number (see [`Journal::durable`]).
    pub fn record(&mut self, line: &[u8]) -> u64 {
        self.queued += 1;
        if self.failure.as_ref().is_some_and(|f| f.rewrite) {
            // The queue was given up: the rewrite from the store has it.
            return self.queued;
        }
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
        self.turn_records += 1;
        self.queued
    }

    /// The sequence number of the last record written to the file: replies
    /// acknowledging records up to it may leave.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Why the journal cannot be written, while it cannot.
    pub fn failing(&self) -> Option<String> {
        self.failure.as_ref().map(|f| f.error.clone())
    }

    /// Appends this turn's records with one write; call before flushing the
    /// turn's replies. Then starts or finishes a compaction of `store` if due.
    /// While writes fail, it only retries once [`RETRY_INTERVAL`] has passed.
    pub fn flush(&mut self, store: &Store) {
        let now = Instant::now();
        if let Some(f) = &mut self.failure {
            if now < f.retry_at {
                self.give_up_queue_if_too_big();
                return;
            }
            f.retries += 1;
        }
        if self.failure.as_ref().is_some_and(|f| f.rewrite) {
            match self.rewrite(store) {
                Ok(()) => self.recovered(now),
                Err(e) => self.failed(e, now),
            }
            return;
        }
        if !self.pending.is_empty() {
            match self.append() {
                Ok(()) => {
                    if self.pending.capacity() > 1 << 20 {
                        self.pending = Vec::new();
                    }
                    self.recovered(now);
                }
                Err(e) => {
                    self.failed(e, now);
                    self.give_up_queue_if_too_big();
                    return;
                }
            }
        } else {
            self.recovered(now);
        }
        self.compact(store);
    }

    /// Writes `pending` at the end of the file. On failure the file keeps
    /// the whole records that went in (they count as written) and is cut
    /// back to the end of the last one, so replay never sees half a
    /// record; the rest stays queued, in order.
    fn append(&mut self) -> io::Result<()> {
        let file = self.file.clone();
        let mut f = file
            .lock()
            .map_err(|_| io::Error::other("journal lock poisoned"))?;
        if self.torn {
            f.write_all(b"\n")?;
            self.size += 1;
            self.torn = false;
        }
        let mut written = 0;
        let error = loop {
            if written == self.pending.len() {
                break None;
            }
            match f.write(&self.pending[written..]) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let Some(e) = error else {
            self.size += written as u64;
            self.wrote(written);
            return Ok(());
        };
        let whole = memchr::memrchr(b'\n', &self.pending[..written]).map_or(0, |i| i + 1);
        if f.set_len(self.size + whole as u64).is_ok() {
            self.size += whole as u64;
        } else {
            self.size += written as u64;
            self.torn = written > whole;
        }
        self.wrote(whole);
        Err(e)
    }

    /// The first `bytes` of `pending` (whole records) are in the file.
    fn wrote(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.stats.appended(bytes);
        // `turn_records` is the number of records in `pending`: when all of
        // it went in (every turn but a failing one), no need to count them.
        let n = if bytes == self.pending.len() {
            self.turn_records
        } else {
            memchr::memchr_iter(b'\n', &self.pending[..bytes]).count() as u64
        };
        debug_assert_eq!(
            n,
            memchr::memchr_iter(b'\n', &self.pending[..bytes]).count() as u64
        );
        if let Some(c) = &mut self.compaction {
            c.since.extend_from_slice(&self.pending[..bytes]);
            c.since_records += n;
        }
        self.records += n;
        self.turn_records -= n;
        self.durable += n;
        self.pending.drain(..bytes);
    }

    fn failed(&mut self, e: io::Error, now: Instant) {
        self.stats.failed(&e, self.failure.is_none());
        let retry_at = now + RETRY_INTERVAL;
        match &mut self.failure {
            Some(f) => {
                f.error = e.to_string();
                f.retry_at = retry_at;
            }
            None => {
                log::error!(target: &self.server, "journal {}: {e}: holding the replies of {} updates not written, retrying every {} ms; floods, WHATSATs and other clients go on", self.path.display(), self.queued - self.durable, RETRY_INTERVAL.as_millis());
                self.failure = Some(Failure {
                    error: e.to_string(),
                    since: now,
                    retry_at,
                    retries: 0,
                    rewrite: false,
                });
            }
        }
    }

    /// Everything queued is in the file.
    fn recovered(&mut self, now: Instant) {
        self.durable = self.queued;
        self.stats.appended(0);
        if let Some(f) = self.failure.take() {
            log::warn!(target: &self.server, "journal {} writable again after {:.1} s and {} retries ({}): held replies released", self.path.display(), now.duration_since(f.since).as_secs_f64(), f.retries, if f.rewrite { "rewritten from the store" } else { "queued records written" });
        }
    }

    fn give_up_queue_if_too_big(&mut self) {
        if let Some(f) = &mut self.failure {
            if !f.rewrite && self.pending.len() > MAX_PENDING_BYTES {
                log::warn!(target: &self.server, "journal {}: {} MiB of records queued while failing: dropping the queue; the journal is rewritten from the store once writes succeed", self.path.display(), self.pending.len() >> 20);
                f.rewrite = true;
                self.pending = Vec::new();
                self.turn_records = 0;
                // A compaction under way would install a file without them.
                self.compaction = None;
            }
        }
    }

    /// Replaces the journal with the store's contents (after the queue was
    /// given up).
    fn rewrite(&mut self, store: &Store) -> io::Result<()> {
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".rewrite");
        let tmp = PathBuf::from(tmp);
        let data = snapshot(store);
        if let Err(e) = write_snapshot(&tmp, &data) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &self.path)?;
        let file = OpenOptions::new().append(true).open(&self.path)?;
        self.size = file.metadata()?.len();
        match self.file.lock() {
            Ok(mut f) => *f = file,
            Err(_) => return Err(io::Error::other("journal lock poisoned")),
        }
        self.records = store.len() as u64;
        self.torn = false;
        Ok(())
    }

    /// Records in the journal file (not counting this turn's).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// True from a failed append until the next one that succeeds.
    pub fn is_failing(&self) -> bool {
        self.failure.is_some()
    }

    /// The journal's figures (bytes appended, failing), shared with the
    /// operator endpoint.
    pub fn stats(&self) -> Arc<JournalStats> {
        self.stats.clone()
    }

    fn compact(&mut self, store: &Store) {
        if let Some(c) = &mut self.compaction {
            match c.done.try_recv() {
                Err(TryRecvError::Empty) => {}
                Ok(Ok(())) => {
                    let c = self.compaction.take().expect("compaction under way");
                    if let Err(e) = self.switch(c) {
                        log::error!(target: &self.server, "journal compaction: {e}");
                    }
                }
                Ok(Err(e)) => {
                    log::error!(target: &self.server, "journal compaction: {e}");
                    self.compaction = None;
                }
                Err(TryRecvError::Disconnected) => self.compaction = None,
            }
            return;
        }
        let live = store.len() as u64;
        if self.records < COMPACT_MIN_RECORDS || self.records < COMPACT_FACTOR * live {
            return;
        }
        let data = snapshot(store);
        let tmp = new_path(&self.path);
        let (tx, rx) = mpsc::channel();
        let (retire, retired) = mpsc::channel::<File>();
        let spawned = std::thread::Builder::new()
            .name(format!("journal-{}", self.server))
            .spawn(move || {
                let _ = tx.send(write_snapshot(&tmp, &data));
                drop(data);
                // The old file, once replaced, is closed here (or nothing
                // comes: the compaction was given up).
                drop(retired.recv());
            });
        match spawned {
            Ok(_) => {
                log::info!(target: &self.server, "journal: compacting {} records to {live}", self.records);
                self.compaction = Some(Compaction {
                    done: rx,
                    snapshot_records: live,
                    since: Vec::new(),
                    since_records: 0,
                    retire,
                });
            }
            Err(e) => log::error!(target: &self.server, "journal compaction thread: {e}"),
        }
    }

    fn switch(&mut self, c: Compaction) -> io::Result<()> {
        let tmp = new_path(&self.path);
        let mut file = OpenOptions::new().append(true).open(&tmp)?;
        file.write_all(&c.since)?;
        fs::rename(&tmp, &self.path)?;
        self.size = file.metadata()?.len();
        self.torn = false;
        match self.file.lock() {
            Ok(mut f) => {
                let old = std::mem::replace(&mut *f, file);
                // If the thread is gone, the old file is closed here after all.
                drop(c.retire.send(old));
            }
            Err(_) => return Err(io::Error::other("journal lock poisoned")),
        }
        let before = self.records;
        self.records = c.snapshot_records + c.since_records;
        log::info!(target: &self.server, "journal: compacted {before} records to {}", self.records);
        Ok(())
    }
}

impl Deadline for Journal {
    /// The next retry, while writes fail.
    fn next_deadline(&self) -> Option<Instant> {
        self.failure.as_ref().map(|f| f.retry_at)
    }
}

fn new_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".new");
    PathBuf::from(p)
}

#[cfg(test)]
fn count_lines(path: &Path) -> io::Result<u64> {
    let data = fs::read(path)?;
    Ok(data.iter().filter(|&&b| b == b'\n').count() as u64)
}

/// Every stored line, one per line.
fn snapshot(store: &Store) -> Vec<u8> {
    let mut data = Vec::new();
    for e in store.iter() {
        data.extend_from_slice(e.line);
        data.push(b'\n');
    }
    data
}

fn write_snapshot(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_data()
}

/// Bytes replay reads at a time; a longer line makes the buffer grow.
const REPLAY_CHUNK: usize = 1 << 20;

/// Replays the journal `file` into `store` (see [`replay`]), first making
/// room in the store for as many records as the file's length suggests.
pub fn replay_file(file: File, store: &mut Store) -> io::Result<Replay> {
    let size = file.metadata()?.len();
    replay_chunks(file, Some(size), REPLAY_CHUNK, store)
}

/// Replays journal lines from `input` into `store`: every whole line that
/// parses as an AT update is offered to the store, in order, in its
/// canonical form; other lines are counted; a last line without `\n` is
/// a torn write and skipped.
pub fn replay(input: impl Read, store: &mut Store) -> io::Result<Replay> {
    replay_chunks(input, None, REPLAY_CHUNK, store)
}

/// [`replay`], reading `chunk` bytes at a time; `size`, the length of the
/// input if known, sizes the store after the first chunk.
fn replay_chunks(
    mut input: impl Read,
    mut size: Option<u64>,
    chunk: usize,
    store: &mut Store,
) -> io::Result<Replay> {
    let mut r = Replay::default();
    let mut canonical = Vec::new();
    let now = protocol::now_nanos();
    let sized = size.is_some();
    let mut buf = vec![0; chunk];
    // `buf[..filled]`: what was read and not replayed yet, an unfinished
    // line (no `\n` in it) followed by the last read.
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            // One line fills the buffer: read on into a bigger one.
            buf.resize(2 * buf.len(), 0);
        }
        let n = match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let Some(last) = memchr::memrchr(b'\n', &buf[filled..filled + n]) else {
            filled += n;
            continue;
        };
        let end = filled + last + 1;
        filled += n;
        if let Some(size) = size.take() {
            // The first lines tell how long lines are, the length how many.
            let lines = memchr::memchr_iter(b'\n', &buf[..end]).count() as u64;
            let records = size.saturating_mul(lines) / end as u64;
            store.reserve(
                usize::try_from(records).unwrap_or(usize::MAX),
                usize::try_from(size).unwrap_or(usize::MAX),
            );
        }
        replay_lines(&buf[..end], store, &mut r, &mut canonical, now);
        buf.copy_within(end..filled, 0);
        filled -= end;
    }
    // A torn last write: never acknowledged, so never needed.
    r.torn_tail = filled > 0;
    if sized {
        store.shrink_to_fit();
    }
    Ok(r)
}

/// Offers the lines of `lines` (each ends in `\n`) to `store`, in order:
/// canonical records, parsed in one pass, in batches; any other AT line
/// as [`Store::offer_at`] writes it (flushing the batch first).
fn replay_lines(
    lines: &[u8],
    store: &mut Store,
    r: &mut Replay,
    canonical: &mut Vec<u8>,
    now: protocol::Nanos,
) {
    let mut batch = Vec::with_capacity(OFFER_BATCH);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', lines) {
        let line = &lines[start..end];
        start = end + 1;
        if let Some((at, coords)) = protocol::parse_canonical_at(line) {
            r.records += 1;
            batch.push(Update {
                client: at.client,
                sent_at: at.sent_at,
                line,
                coords,
            });
            if batch.len() == OFFER_BATCH {
                store.offer_all(&batch, now);
                batch.clear();
            }
            continue;
        }
        match protocol::parse(line) {
            Command::At(at) => {
                // Other white space than single spaces (a CR, a TAB): the
                // store keeps the line canonical.
                r.records += 1;
                store.offer_all(&batch, now);
                batch.clear();
                store.offer_at(&at, canonical, now);
            }
            _ => r.invalid += 1,
        }
    }
    store.offer_all(&batch, now);
}

fn spawn_syncer(file: std::sync::Weak<Mutex<File>>, every: Duration, name: &str) -> io::Result<()> {
    let server = name.to_string();
    std::thread::Builder::new()
        .name(format!("fsync-{name}"))
        .spawn(move || loop {
            std::thread::sleep(every);
            let Some(file) = file.upgrade() else { return };
            // Sync a duplicate descriptor, so the loop's appends never wait
            // for the lock while the disk works.
            let dup = file.lock().ok().and_then(|f| f.try_clone().ok());
            drop(file);
            if let Some(f) = dup {
                if let Err(e) = f.sync_data() {
                    log::error!(target: &server, "journal fsync: {e}");
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(client: &str, t: u64) -> Vec<u8> {
        format!("AT S +0.000000001 {client} +1+1 {t}").into_bytes()
    }

    #[test]
    fn replay_keeps_the_newest_and_skips_junk_and_a_torn_tail() {
        let mut input = Vec::new();
        for (c, t) in [("a", 2), ("b", 1), ("a", 1)] {
            input.extend_from_slice(&at(c, t));
            input.push(b'\n');
        }
        input.extend_from_slice(b"garbage\n\x00\x00\n");
        input.extend_from_slice(b"AT S +0.000000001 c +1+1 1");
        let mut store = Store::new();
        let r = replay(&input[..], &mut store).unwrap();
        assert_eq!(
            r,
            Replay {
                records: 3,
                invalid: 2,
                torn_tail: true
            }
        );
        assert_eq!(store.get(b"a").unwrap().line, &at("a", 2)[..]);
        assert!(store.get(b"c").is_none());
    }

    /// Replay as it was before the one-pass parse and the batches (commit
    /// d644631), kept as the reference for what replay accepts: which lines
    /// count as records, which as invalid, and a torn tail.
    fn replay_before(mut input: impl io::BufRead, store: &mut Store) -> io::Result<Replay> {
        let mut r = Replay::default();
        let mut line = Vec::new();
        let mut canonical = Vec::new();
        let now = protocol::now_nanos();
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                r.torn_tail = true;
                break;
            }
            line.pop();
            match protocol::parse(&line) {
                Command::At(at) => {
                    let fields = at.server.len() + at.diff.len() + at.client.len();
                    let canon = 2 + fields + at.coords.len() + at.time.len() + 5;
                    if line.len() == canon {
                        let coords = protocol::Coords::of_canonical(&at);
                        store.offer(at.client, at.sent_at, &line, coords, now);
                    } else {
                        store.offer_at(&at, &mut canonical, now);
                    }
                    r.records += 1;
                }
                _ => r.invalid += 1,
            }
        }
        Ok(r)
    }

    /// What replay means for the store: every whole line that `parse`
    /// reads as an AT update offered in its canonical form, in order.
    fn replay_by_definition(input: &[u8], store: &mut Store) {
        for line in input.split_inclusive(|&b| b == b'\n') {
            if let Some(line) = line.strip_suffix(b"\n") {
                if let Command::At(at) = protocol::parse(line) {
                    store.offer_at(&at, &mut Vec::new(), protocol::now_nanos());
                }
            }
        }
    }

    /// A stored client as the test compares it.
    type Stored = Option<(protocol::Nanos, Vec<u8>)>;

    /// Everything a store holds, slot by slot, and what it evicted.
    fn contents(s: &Store) -> (Vec<Stored>, u64) {
        let entries = (0..s.slot_end())
            .map(|i| s.entry(i).map(|e| (e.sent_at, e.line.to_vec())))
            .collect();
        (entries, s.evicted())
    }

    /// A reader that hands out its bytes a few at a time (`sizes` in
    /// turn; 0 is an `Interrupted` error), as a slow disk or a pipe might.
    struct Trickle<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        turn: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            if size == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = size.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// A journal line: mostly canonical records of a few clients with
    /// repeated, older and equal timestamps; sometimes the same with a CR,
    /// TABs or one byte changed; sometimes junk or nothing.
    fn journal_line() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        use proptest::sample::{select, Index};
        let record = (0u8..6, 0u64..12, 0u8..3, 0u8..91).prop_map(|(c, t, s, lat)| {
            format!("AT S{s} +0.00000000{s} c{c} +{lat}.5-{t} {t}").into_bytes()
        });
        let byte = select(b" \t\r\x0b\x0c+-.09x\x00\xff".to_vec());
        prop_oneof![
            8 => record.clone(),
            1 => record.clone().prop_map(|mut l| {
                l.push(b'\r');
                l
            }),
            1 => record.clone().prop_map(|l| {
                l.iter().map(|&b| if b == b' ' { b'\t' } else { b }).collect()
            }),
            3 => (record, any::<Index>(), byte, 0u8..3).prop_map(|(mut l, at, byte, how)| {
                let i = at.index(l.len());
                match how {
                    0 => l.insert(i, byte),
                    1 => l[i] = byte,
                    _ => {
                        l.remove(i);
                    }
                }
                l
            }),
            1 => prop::collection::vec(any::<u8>().prop_filter("not LF", |&b| b != b'\n'), 0..40),
            1 => Just(Vec::new()),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 512,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Replay counts records, invalid lines and a torn tail as it did
        /// before, and stores what offering each record in its canonical
        /// form stores, whatever the reads and the buffer size.
        #[test]
        fn replay_accepts_what_it_did_and_stores_each_record_canonical(
            lines in proptest::collection::vec(journal_line(), 0..60),
            torn in proptest::option::of(journal_line()),
            sizes in proptest::collection::vec(0usize..50, 1..6),
            chunk in 1usize..80,
            limit in proptest::prop_oneof![proptest::strategy::Just(1000usize), 1usize..8],
            sized in proptest::bool::ANY,
        ) {
            let mut input = Vec::new();
            for l in &lines {
                input.extend_from_slice(l);
                input.push(b'\n');
            }
            if let Some(t) = &torn {
                input.extend_from_slice(t);
            }
            if sizes.iter().all(|&s| s == 0) {
                return Ok(());
            }
            let reader = Trickle { data: &input, sizes, turn: 0 };
            let size = sized.then_some(input.len() as u64);
            let mut now = Store::with_bounds(limit, None);
            let r = replay_chunks(reader, size, chunk, &mut now).unwrap();
            let mut before = Store::with_bounds(limit, None);
            proptest::prop_assert_eq!(&r, &replay_before(&input[..], &mut before).unwrap());
            let mut meant = Store::with_bounds(limit, None);
            replay_by_definition(&input, &mut meant);
            proptest::prop_assert_eq!(contents(&now), contents(&meant));
            // Before, a record whose separators were other white space but
            // as many was stored as it was: only without those the same.
            if !lines.iter().flatten().any(|&b| b"\t\x0b\x0c\r".contains(&b)) {
                proptest::prop_assert_eq!(contents(&now), contents(&before));
            }
        }
    }

    #[test]
    fn a_record_with_other_white_space_is_stored_canonical_and_found_again() {
        let input = b"AT\tS\t+0.000000001\tc\t+1+1\t1\nAT S +0.000000001 c +1+1 2\r\n";
        let mut store = Store::new();
        let r = replay(&input[..], &mut store).unwrap();
        assert_eq!((r.records, r.invalid, r.torn_tail), (2, 0, false));
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(b"c").unwrap().line, &at("c", 2)[..]);
        // Before, the first was stored as it was read (its length is that
        // of the canonical line), where the client's ID is no 4th field:
        // the second was not found, and the client held two entries.
        let mut before = Store::new();
        replay_before(&input[..], &mut before).unwrap();
        assert_eq!(before.len(), 2);
    }

    #[test]
    fn a_line_longer_than_the_buffer_is_read_whole() {
        let mut input = vec![b'x'; 100];
        input.push(b'\n');
        input.extend_from_slice(&at("c", 1));
        input.push(b'\n');
        let mut store = Store::new();
        let r = replay_chunks(&input[..], Some(input.len() as u64), 8, &mut store).unwrap();
        assert_eq!((r.records, r.invalid, r.torn_tail), (1, 1, false));
        assert_eq!(store.get(b"c").unwrap().line, &at("c", 1)[..]);
    }

    #[test]
    fn a_failing_disk_holds_records_in_order_and_leaves_no_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new();
        let (mut j, _) = Journal::open(dir.path(), "S", &mut store, None).unwrap();
        let good = std::mem::replace(
            &mut *j.file.lock().unwrap(),
            OpenOptions::new().append(true).open("/dev/full").unwrap(),
        );
        let mut last = 0;
        for t in 0..5 {
            let line = at(&format!("c{t}"), t);
            crate::store::tests::offer(&mut store, &line);
            last = j.record(&line);
            j.flush(&store);
        }
        assert_eq!(j.durable(), 0, "nothing acknowledged");
        assert!(j.failing().is_some());
        let retry = j.next_deadline().unwrap();
        // Space is back; nothing is written before the retry is due.
        *j.file.lock().unwrap() = good;
        let line = at("late", 9);
        crate::store::tests::offer(&mut store, &line);
        last = last.max(j.record(&line));
        while Instant::now() < retry {
            std::thread::sleep(Duration::from_millis(10));
        }
        j.flush(&store);
        assert_eq!((j.durable(), j.failing()), (last, None));
        drop(j);
        let mut again = Store::new();
        let (_, r) = Journal::open(dir.path(), "S", &mut again, None).unwrap();
        assert_eq!((r.records, again.len()), (6, 6));
    }

    #[test]
    fn journal_survives_reopen_and_compacts_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new();
        let (mut j, _) = Journal::open(dir.path(), "S", &mut store, None).unwrap();
        for t in 0..10 {
            let line = at("k", t);
            crate::store::tests::offer(&mut store, &line);
            j.record(&line);
            j.flush(&store);
        }
        assert_eq!(j.records(), 10);
        drop(j);
        let mut again = Store::new();
        let (j, r) = Journal::open(dir.path(), "S", &mut again, None).unwrap();
        assert_eq!(r.records, 10);
        assert_eq!(again.get(b"k"), store.get(b"k"));
        assert_eq!(j.records(), 1);
        assert_eq!(count_lines(&dir.path().join("S.journal")).unwrap(), 1);
    }

    #[test]
    fn a_failed_append_makes_the_journal_failing_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new();
        let (mut j, _) = Journal::open(dir.path(), "S", &mut store, None).unwrap();
        let stats = j.stats();
        j.record(&at("k", 1));
        j.flush(&store);
        assert!(!j.is_failing() && !stats.is_failing());
        // Every write to /dev/full fails with ENOSPC: a full disk.
        let good = std::mem::replace(
            &mut *j.file.lock().unwrap(),
            OpenOptions::new().write(true).open("/dev/full").unwrap(),
        );
        j.record(&at("k", 2));
        j.flush(&store);
        assert!(j.is_failing() && stats.is_failing());
        *j.file.lock().unwrap() = good;
        j.record(&at("k", 3));
        // Writes are retried on a timer, not at every turn.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while j.is_failing() {
            assert!(std::time::Instant::now() < deadline, "never retried");
            std::thread::sleep(Duration::from_millis(10));
            j.flush(&store);
        }
        assert!(!stats.is_failing());
    }

    #[test]
    fn compaction_runs_in_the_background_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::new();
        let (mut j, _) =
            Journal::open(dir.path(), "S", &mut store, Some(Duration::from_millis(5))).unwrap();
        // Ten clients updated over and over: the journal outgrows the store.
        let mut t = 0u64;
        while j.records() < COMPACT_MIN_RECORDS + 10 {
            for c in 0..10 {
                t += 1;
                let client = format!("c{c}");
                let line = at(&client, t);
                crate::store::tests::offer(&mut store, &line);
                j.record(&line);
            }
            j.flush(&store);
        }
        // Keep appending while the snapshot is written; the switch happens on a flush.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while j.records() > 1000 {
            assert!(
                std::time::Instant::now() < deadline,
                "compaction never finished"
            );
            t += 1;
            let line = at("late", t);
            crate::store::tests::offer(&mut store, &line);
            j.record(&line);
            j.flush(&store);
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(j);
        let mut again = Store::new();
        Journal::open(dir.path(), "S", &mut again, None).unwrap();
        assert_eq!(again.len(), store.len());
        for c in (0..10).map(|c| format!("c{c}")).chain(["late".to_string()]) {
            assert_eq!(again.get(c.as_bytes()), store.get(c.as_bytes()), "{c}");
        }
    }
}
