//! Deterministic `pack`: a plain ustar stream of a signed bundle folder, compressed with
//! [`crate::codec`].
//!
//! The metadata files come first (manifest.dsse, manifest.json, the header, checksum files,
//! public key, time anchor — so a reader checks the signature before any content arrives),
//! then every manifest file in manifest order. Every header has uid/gid 0, empty owner names,
//! mode 0644 (0755 for `scripts/*.sh`), mtime from `SOURCE_DATE_EPOCH` or 0; no folders, no
//! links. The file list comes from the manifest, never from a directory walk, so file-system
//! order, mtimes and umask cannot leak in. gzip output is a single member with no name and
//! zero time, compressed pigz-style in independent 1 MiB blocks on every core (block
//! boundaries depend only on the input, so the bytes do not depend on the number of cores);
//! zstd uses libzstd's multi-threaded mode with a pinned job layout, whose output does not
//! depend on the number of workers either.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::codec::{zstd_encoder, zstd_workers, Compression, ParGzWriter};
use crate::error::{Error, IoContext as _, Result};
use crate::fs::walk_sorted_each;
use crate::hash::Progress;
use crate::manifest::{FileEntry, Manifest};
use crate::names;
use crate::path::{file_mode, ustar_split, BundlePath};

/// What `pack` wrote.
#[derive(Debug, Clone)]
pub struct PackReport {
    pub entries: usize,
    pub content_bytes: u64,
    pub archive_bytes: u64,
}

/// The mtime for archive entries: `SOURCE_DATE_EPOCH` or 0.
pub fn source_date_epoch() -> Result<u64> {
    Ok(crate::epoch::source_date_epoch()?.unwrap_or(0))
}

/// Pack bundle folder `dir` into `output` (compression from its name).
pub fn pack(dir: &Path, output: &Path, mtime: u64, progress: &dyn Progress) -> Result<PackReport> {
    pack_with(
        dir,
        output,
        mtime,
        &crate::streamed::Limits::default(),
        progress,
    )
}

/// [`pack`] with explicit [`crate::streamed::Limits`]: a `manifest.json` above
/// `stream_above` is read as a stream (tests take that path with small bundles).
///
/// Nothing of the file list is kept: the manifest is read twice as a stream (`Listing`,
/// on a thread of its own), first beside a walk of the folder in path order (every file
/// there must be listed, and in a full bundle every listed file there), then to write the
/// archive — one bit per listed file says which are present (a thin bundle lacks those its
/// base carries). Memory stays flat whatever the file count: the bits, one batch of the list
/// and the names of the folders on the walk's current branch.
pub fn pack_with(
    dir: &Path,
    output: &Path,
    mtime: u64,
    limits: &crate::streamed::Limits,
    progress: &dyn Progress,
) -> Result<PackReport> {
    let compression = Compression::from_name(output).ok_or_else(|| {
        Error::input(format!(
            "{}: the archive name must end in .tar.gz or .tar.zst",
            output.display()
        ))
    })?;
    let manifest_path = dir.join(names::MANIFEST);
    let mut listing = Listing::open(&manifest_path, limits)?;
    if !dir.join(names::ENVELOPE).is_file() {
        // A manifest that does not read says so first.
        listing.drain()?;
        return Err(Error::input(format!(
            "{} is not signed (no manifest.dsse): run `stella mirror sign` first",
            dir.display()
        )));
    }
    // The entry list: metadata first, then the manifest's files. Nothing else may be there.
    let mut meta: Vec<(String, u64)> = Vec::new();
    for name in names::METADATA {
        let p = dir.join(name);
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            if !m.file_type().is_file() {
                return Err(Error::input(format!("{}: not a regular file", p.display())));
            }
            meta.push((name.to_string(), m.len()));
        }
    }
    let present = check_folder(dir, &mut listing)?;
    let (manifest, listed) = listing.finish()?;
    if manifest.kind != crate::Kind::Thin {
        if let Some(path) = &present.first_missing {
            return Err(Error::input(format!(
                "file {path} is missing from {}",
                dir.display()
            )));
        }
    }
    let entries = Entries {
        meta,
        manifest: manifest_path,
        limits: *limits,
        listed,
        present: present.bits,
    };
    let total: u64 = entries.meta.iter().map(|e| e.1).sum::<u64>() + present.bytes;
    let count = entries.meta.len() + present.count;

    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A device or FIFO (`--output /dev/null`, `>(zstd -t)`) is written straight into: renaming
    // a temp file over it would replace the device node with a regular file.
    let special = std::fs::metadata(output).is_ok_and(|m| !m.is_file());
    let (tmp, file) = if special {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(output)
            .at(output)?;
        (None, f)
    } else {
        let tmp = tempfile::Builder::new()
            .prefix(".stella-pack-")
            .tempfile_in(&out_dir)
            .at(&out_dir)?;
        let f = tmp.as_file().try_clone().at(tmp.path())?;
        (Some(tmp), f)
    };
    let counter = CountingWriter::new(ThreadedWriter::new(file));
    progress.start("pack", total);
    // Three stages on their own threads: the tar stream is produced (files read) on one,
    // compressed by the encoder's workers, and written out on another.
    let (tx, rx) = sync_channel::<Result<Vec<u8>>>(4);
    // Chunks the compressor is done with go back to the producer (a bounded pool: at most
    // POOL spare chunks; no fresh, zeroed 1 MiB allocation per chunk).
    let (back_tx, back_rx) = sync_channel::<Vec<u8>>(POOL);
    let entries_ref = &entries;
    let counting = std::thread::scope(|s| -> Result<CountingWriter<ThreadedWriter>> {
        s.spawn(move || {
            let mut w = ChunkSender::new(&tx, back_rx);
            let r =
                write_tar(&mut w, dir, entries_ref, mtime, progress).and_then(|()| w.send_rest());
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
            drop(tx);
        });
        let mut sink: Box<dyn FinishWrite> = match compression {
            Compression::Gzip => Box::new(ParGzWriter::new(counter, crate::hash::threads())),
            Compression::Zstd => Box::new(zstd_encoder(counter, zstd_workers()).at(output)?),
        };
        // Owned here, so an early return drops it and unblocks the producer.
        let rx = rx;
        for chunk in rx.iter() {
            let chunk = chunk?;
            sink.write_all(&chunk).at(output)?;
            // The pool is full or the producer is gone: the chunk is simply freed.
            let _ = back_tx.try_send(chunk);
        }
        sink.finish_box().at(output)
    })?;
    progress.finish();
    let (bytes, threaded) = counting.into_parts();
    // No fsync: like tar and zstd, durability against power loss is left to the caller
    // (`sync`); the rename below still makes the archive appear whole or not at all.
    threaded.finish().at(output)?;
    if let Some(tmp) = tmp {
        tmp.persist(output)
            .map_err(|e| Error::io(output, e.error))?;
    }
    Ok(PackReport {
        entries: count,
        content_bytes: total,
        archive_bytes: bytes,
    })
}

/// The archive's entries in order: the metadata files present, then the listed files
/// present (a thin bundle lacks those its base carries), read from the manifest again.
struct Entries {
    meta: Vec<(String, u64)>,
    manifest: PathBuf,
    limits: crate::streamed::Limits,
    /// What [`check_folder`]'s reading took ([`Listing::finish`]): the second must match.
    listed: u64,
    present: Bits,
}

impl Entries {
    /// Each entry's (bundle path, size), in archive order.
    fn each(&self, f: &mut dyn FnMut(&str, u64) -> Result<()>) -> Result<()> {
        for (p, s) in &self.meta {
            f(p, *s)?;
        }
        let mut listing = Listing::open(&self.manifest, &self.limits)?;
        let mut i = 0;
        while let Some((path, size)) = listing.next()? {
            if self.present.get(i) {
                f(path, size)?;
            }
            i += 1;
        }
        let (_, listed) = listing.finish()?;
        if listed != self.listed || i != self.present.len() {
            return Err(Error::input(format!(
                "{} changed while the bundle was packed",
                self.manifest.display()
            )));
        }
        Ok(())
    }
}

/// What the walk beside the manifest found: which listed files are present.
#[derive(Default)]
struct Present {
    bits: Bits,
    count: usize,
    bytes: u64,
    /// The first listed file absent, in manifest order.
    first_missing: Option<String>,
}

/// Walk `dir` in path order beside the manifest's files (`listing`, in the same order): a
/// file there that is not listed is refused; which listed files are there is returned.
fn check_folder(dir: &Path, listing: &mut Listing) -> Result<Present> {
    let mut present = Present::default();
    let absent = |present: &mut Present, path: &str| {
        present.bits.push(false);
        if present.first_missing.is_none() {
            present.first_missing = Some(path.to_string());
        }
    };
    let walked = walk_sorted_each(dir, &mut |p| {
        if names::is_metadata(p) {
            return Ok(());
        }
        while let Some((listed, size)) = listing.peek()? {
            match listed.cmp(p) {
                std::cmp::Ordering::Less => absent(&mut present, listed),
                std::cmp::Ordering::Equal => {
                    present.bits.push(true);
                    present.count += 1;
                    present.bytes += size;
                    listing.advance();
                    return Ok(());
                }
                std::cmp::Ordering::Greater => break,
            }
            listing.advance();
        }
        Err(Error::input(format!(
            "unlisted file {p} in {}: a bundle folder holds only the files its manifest lists",
            dir.display()
        )))
    });
    if let Err(e) = walked {
        // A manifest that does not read says so first (it was read before the walk).
        listing.drain()?;
        return Err(e);
    }
    while let Some((listed, _)) = listing.peek()? {
        absent(&mut present, listed);
        listing.advance();
    }
    Ok(present)
}

/// One bit per listed file.
#[derive(Default)]
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn push(&mut self, on: bool) {
        if self.len.is_multiple_of(64) {
            self.words.push(0);
        }
        if on {
            if let Some(w) = self.words.last_mut() {
                *w |= 1 << (self.len % 64);
            }
        }
        self.len += 1;
    }

    fn get(&self, i: usize) -> bool {
        i < self.len
            && self
                .words
                .get(i / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Batches the reading thread may run ahead of a [`Listing`]'s reader.
const QUEUE: usize = 2;

/// A manifest's files (path and size) in manifest order, read by
/// [`crate::listing::stream_files`] on a thread of its own — streamed above `stream_above`,
/// typed whole below, with [`crate::read_file_list`]'s checks and messages — and taken a
/// batch at a time: nothing of the list is kept.
struct Listing {
    rx: Receiver<Vec<FileEntry>>,
    batch: Vec<FileEntry>,
    at: usize,
    thread: Option<std::thread::JoinHandle<Result<Manifest>>>,
    done: Option<Manifest>,
    /// The paths and sizes taken, hashed in order: two readings of one list agree.
    taken: std::hash::DefaultHasher,
}

impl Listing {
    fn open(path: &Path, limits: &crate::streamed::Limits) -> Result<Listing> {
        let (tx, rx) = sync_channel::<Vec<FileEntry>>(QUEUE);
        let (owned, limits) = (path.to_path_buf(), *limits);
        let thread = std::thread::Builder::new()
            .name("pack-list".into())
            .spawn(move || crate::listing::stream_files(&owned, &limits, tx))
            .map_err(|e| Error::io(path, e))?;
        Ok(Listing {
            rx,
            batch: Vec::new(),
            at: 0,
            thread: Some(thread),
            done: None,
            taken: std::hash::DefaultHasher::new(),
        })
    }

    /// Whether an entry is at `at` (the next batch taken if needed; at the end, the reading
    /// thread's error if it had one).
    fn fill(&mut self) -> Result<bool> {
        while self.at >= self.batch.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.batch = b;
                    self.at = 0;
                }
                Err(_) => {
                    if let Some(t) = self.thread.take() {
                        let read = t
                            .join()
                            .map_err(|_| Error::input("the manifest reader failed"))?;
                        self.done = Some(read?);
                    }
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The next file, not taken.
    fn peek(&mut self) -> Result<Option<(&str, u64)>> {
        if !self.fill()? {
            return Ok(None);
        }
        Ok(self.batch.get(self.at).map(|e| (e.path.as_str(), e.size)))
    }

    /// Take the file [`peek`](Self::peek) gave.
    fn advance(&mut self) {
        if let Some(e) = self.batch.get(self.at) {
            std::hash::Hash::hash(&(e.path.as_str(), e.size), &mut self.taken);
        }
        self.at += 1;
    }

    /// The next file, taken.
    fn next(&mut self) -> Result<Option<(&str, u64)>> {
        if !self.fill()? {
            return Ok(None);
        }
        self.advance();
        Ok(self
            .batch
            .get(self.at - 1)
            .map(|e| (e.path.as_str(), e.size)))
    }

    /// Take the rest, for its errors.
    fn drain(&mut self) -> Result<()> {
        while self.fill()? {
            self.advance();
        }
        Ok(())
    }

    /// The manifest (without its files) once all is read, and the hash of what was taken.
    fn finish(mut self) -> Result<(Manifest, u64)> {
        self.drain()?;
        let taken = std::hash::Hasher::finish(&self.taken);
        let m = self
            .done
            .take()
            .ok_or_else(|| Error::input("the manifest reader stopped early"))?;
        Ok((m, taken))
    }
}

impl Drop for Listing {
    /// Stop the reading thread (its next batch finds no one to take it) and wait for it.
    fn drop(&mut self) {
        let (_, closed) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_tar(
    w: &mut ChunkSender<'_>,
    dir: &Path,
    entries: &Entries,
    mtime: u64,
    progress: &dyn Progress,
) -> Result<()> {
    entries.each(&mut |path, size| {
        let bp = BundlePath::new(path).map_err(Error::input)?;
        let src = bp.under(dir);
        let mut f = File::open(&src).at(&src)?;
        let actual = f.metadata().at(&src)?.len();
        if actual != size {
            return Err(Error::input(format!(
                "{path} is {actual} bytes but the manifest lists {size}: the folder changed since it was created"
            )));
        }
        let mode = file_mode(path);
        let header = ustar_header(path, size, mode, mtime)?;
        w.put(header.as_bytes()).at(&src)?;
        let mut left = size;
        while left > 0 {
            let n = w.read_from(&mut f, left).at(&src)?;
            if n == 0 {
                return Err(Error::input(format!(
                    "{path} shrank while it was being packed"
                )));
            }
            progress.advance(n as u64);
            left -= n as u64;
        }
        let pad = (512 - (size % 512) as usize) % 512;
        w.put(&[0u8; 512][..pad]).at(&src)?;
        Ok(())
    })?;
    w.put(&[0u8; 1024]).at(dir)?;
    Ok(())
}

/// Bytes per chunk handed from the tar producer to the compressor.
pub(crate) const PIPE_CHUNK: usize = 1 << 20;

/// Spare chunks kept for reuse between the pipeline's stages (each way).
const POOL: usize = 4;

/// Builds the tar stream in 1 MiB chunks (file content is read straight into them) and sends
/// each full chunk to the compressing thread.
struct ChunkSender<'a> {
    tx: &'a SyncSender<Result<Vec<u8>>>,
    /// Chunks coming back from the compressor, to be filled again.
    back: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    len: usize,
}

impl<'a> ChunkSender<'a> {
    fn new(tx: &'a SyncSender<Result<Vec<u8>>>, back: Receiver<Vec<u8>>) -> Self {
        ChunkSender {
            tx,
            back,
            buf: vec![0u8; PIPE_CHUNK],
            len: 0,
        }
    }

    /// A chunk to fill: a returned one if there is one, else a fresh one.
    fn spare(&self) -> Vec<u8> {
        match self.back.try_recv() {
            Ok(mut b) => {
                // Every byte is overwritten before it is sent: no need to zero it.
                b.resize(PIPE_CHUNK, 0);
                b
            }
            Err(_) => vec![0u8; PIPE_CHUNK],
        }
    }

    fn send_full(&mut self) -> io::Result<()> {
        if self.len == PIPE_CHUNK {
            let fresh = self.spare();
            let chunk = std::mem::replace(&mut self.buf, fresh);
            self.len = 0;
            self.tx
                .send(Ok(chunk))
                .map_err(|_| io::Error::other("packing stopped"))?;
        }
        Ok(())
    }

    fn put(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let take = (PIPE_CHUNK - self.len).min(data.len());
            self.buf[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            self.send_full()?;
        }
        Ok(())
    }

    /// Read up to `limit` bytes of `f` into the current chunk.
    fn read_from(&mut self, f: &mut File, limit: u64) -> io::Result<usize> {
        let room = (PIPE_CHUNK - self.len).min(usize::try_from(limit).unwrap_or(usize::MAX));
        let n = loop {
            match f.read(&mut self.buf[self.len..self.len + room]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.len += n;
        self.send_full()?;
        Ok(n)
    }

    fn send_rest(&mut self) -> Result<()> {
        if self.len > 0 {
            let mut chunk = std::mem::take(&mut self.buf);
            chunk.truncate(self.len);
            self.len = 0;
            self.tx
                .send(Ok(chunk))
                .map_err(|_| Error::input("packing stopped"))?;
        }
        Ok(())
    }
}

/// A compressor that can be finished behind a `Box`.
trait FinishWrite: Write {
    fn finish_box(self: Box<Self>) -> io::Result<CountingWriter<ThreadedWriter>>;
}

impl FinishWrite for ParGzWriter<CountingWriter<ThreadedWriter>> {
    fn finish_box(self: Box<Self>) -> io::Result<CountingWriter<ThreadedWriter>> {
        (*self).finish()
    }
}

impl FinishWrite for zstd::stream::write::Encoder<'static, CountingWriter<ThreadedWriter>> {
    fn finish_box(self: Box<Self>) -> io::Result<CountingWriter<ThreadedWriter>> {
        (*self).finish()
    }
}

/// Writes to a file on its own thread (output I/O overlaps compression).
struct ThreadedWriter {
    tx: Option<SyncSender<Vec<u8>>>,
    /// Written buffers coming back from the writer thread (a bounded pool).
    back: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    handle: Option<std::thread::JoinHandle<io::Result<File>>>,
}

impl ThreadedWriter {
    fn new(mut file: File) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let (back_tx, back) = sync_channel::<Vec<u8>>(POOL);
        let handle = std::thread::spawn(move || {
            // Owned here, so an early return drops it and unblocks the producer.
            let rx = rx;
            for mut chunk in rx.iter() {
                file.write_all(&chunk)?;
                chunk.clear();
                let _ = back_tx.try_send(chunk);
            }
            Ok(file)
        });
        ThreadedWriter {
            tx: Some(tx),
            back,
            buf: Vec::with_capacity(PIPE_CHUNK),
            handle: Some(handle),
        }
    }

    fn push(&mut self) -> io::Result<()> {
        let fresh = self
            .back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(PIPE_CHUNK));
        let chunk = std::mem::replace(&mut self.buf, fresh);
        match &self.tx {
            Some(tx) => tx
                .send(chunk)
                .map_err(|_| io::Error::other("the output writer stopped")),
            None => Err(io::Error::other("output already finished")),
        }
    }

    fn finish(mut self) -> io::Result<File> {
        if !self.buf.is_empty() {
            self.push()?;
        }
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the output writer failed")),
        }
    }
}

impl Write for ThreadedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIPE_CHUNK {
            self.push()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A deterministic ustar header for a regular file.
pub(crate) fn ustar_header(path: &str, size: u64, mode: u32, mtime: u64) -> Result<tar::Header> {
    let (prefix, name) = ustar_split(path)
        .ok_or_else(|| Error::input(format!("{path} is too long for a ustar header")))?;
    let mut h = tar::Header::new_ustar();
    {
        let u = h
            .as_ustar_mut()
            .ok_or_else(|| Error::input("ustar header expected"))?;
        u.name[..name.len()].copy_from_slice(name.as_bytes());
        u.prefix[..prefix.len()].copy_from_slice(prefix.as_bytes());
    }
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Counts what passes through.
struct CountingWriter<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    fn new(inner: W) -> Self {
        CountingWriter { inner, count: 0 }
    }
    fn into_parts(self) -> (u64, W) {
        (self.count, self.inner)
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths whose byte order is not the order of a walk that sorts names without their
    /// folder's `/` (`-` and `.` sort before `/`: `a-b`, `a.c`, then `a/…`), unicode, a long
    /// path.
    fn tricky_paths() -> Vec<String> {
        let mut paths: Vec<String> = [
            "a-b",
            "a.c",
            "a/x-y",
            "a/x.z",
            "a/x/y",
            "a/x0",
            "a0",
            "advisories/è.json",
            "advisories/é.json",
            "advisories/é/x",
            "z",
        ]
        .iter()
        .map(|p| p.to_string())
        .collect();
        paths.push(format!("{}/{}", "d".repeat(150), "f".repeat(90)));
        paths.sort();
        paths
    }

    /// A manifest listing `paths` (sizes 0, 1, 2, …), written to `dir/manifest.json`.
    fn write_manifest(dir: &Path, paths: &[String]) -> Vec<u8> {
        let mut m = crate::testing::sample_manifest();
        m.files = paths
            .iter()
            .enumerate()
            .map(|(i, p)| crate::manifest::FileEntry {
                path: BundlePath::new(p).expect("path"),
                size: i as u64,
                sha256: crate::hash::Digest::sha256([7; 32]),
                media_type: "text/plain".into(),
            })
            .collect();
        let bytes = m.to_canonical_json();
        std::fs::write(dir.join(names::MANIFEST), &bytes).expect("write");
        bytes
    }

    fn streamed() -> crate::streamed::Limits {
        crate::streamed::Limits {
            stream_above: 0,
            ..Default::default()
        }
    }

    #[test]
    fn the_listing_hands_on_every_file_in_order_read_either_way() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut paths = tricky_paths();
        // Several batches.
        paths.extend((0..5000).map(|i| format!("advisories/osv/{:03}/OSV-{i:07}.json", i % 13)));
        paths.sort();
        write_manifest(dir.path(), &paths);
        let want: Vec<(String, u64)> = paths.iter().cloned().zip(0..).collect();
        let path = dir.path().join(names::MANIFEST);
        let mut taken = Vec::new();
        for limits in [streamed(), crate::streamed::Limits::default()] {
            let mut listing = Listing::open(&path, &limits).expect("open");
            let mut seen = Vec::new();
            assert_eq!(
                listing.peek().expect("peek").map(|e| e.0.to_string()),
                Some(paths[0].clone())
            );
            while let Some((p, s)) = listing.next().expect("next") {
                seen.push((p.to_string(), s));
            }
            assert_eq!(seen, want);
            let (m, hash) = listing.finish().expect("finish");
            taken.push(hash);
            assert!(m.files.is_empty());
            // Left after a few files: the reading thread stops, nothing hangs.
            let mut listing = Listing::open(&path, &limits).expect("open");
            for _ in 0..3 {
                listing.next().expect("next");
            }
            drop(listing);
        }
        // Both readings take the same list; a list one path shorter is another.
        assert_eq!(taken[0], taken[1]);
        let mut sizes_changed = paths.clone();
        sizes_changed.pop();
        write_manifest(dir.path(), &sizes_changed);
        let (_, other) = Listing::open(&path, &streamed())
            .expect("open")
            .finish()
            .expect("finish");
        assert_ne!(other, taken[0]);
    }

    #[test]
    fn a_listing_reports_the_manifest_errors_of_either_reading() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(names::MANIFEST);
        let bytes = write_manifest(dir.path(), &tricky_paths());
        // Two entries swapped: not sorted.
        let text = String::from_utf8(bytes).expect("utf8");
        let swapped = text
            .replacen("\"a-b\"", "\"TMP\"", 1)
            .replacen("\"a.c\"", "\"a-b\"", 1)
            .replacen("\"TMP\"", "\"a.c\"", 1);
        assert_ne!(swapped, text);
        std::fs::write(&path, swapped).expect("write");
        for limits in [streamed(), crate::streamed::Limits::default()] {
            let mut listing = Listing::open(&path, &limits).expect("open");
            let e = listing.drain().expect_err("unsorted");
            assert!(e.to_string().contains("not sorted"), "{e}");
            assert!(e.to_string().contains("manifest.json"), "{e}");
        }
        std::fs::remove_file(&path).expect("rm");
        let e = Listing::open(&path, &streamed())
            .expect("open")
            .finish()
            .expect_err("missing");
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }

    #[test]
    fn the_folder_walk_meets_the_listing_in_path_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let paths = tricky_paths();
        write_manifest(dir.path(), &paths);
        for p in &paths {
            let f = dir.path().join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(f, b"").expect("write");
        }
        let path = dir.path().join(names::MANIFEST);
        let check = || {
            let mut listing = Listing::open(&path, &streamed()).expect("open");
            let r = check_folder(dir.path(), &mut listing);
            r.map(|p| {
                let bits: Vec<bool> = (0..p.bits.len()).map(|i| p.bits.get(i)).collect();
                (bits, p.count, p.bytes, p.first_missing)
            })
        };
        let n = paths.len();
        let all = (vec![true; n], n, (0..n as u64).sum::<u64>(), None);
        assert_eq!(check().expect("all there"), all);
        // Two listed files gone: their bits are off, the first in manifest order is named.
        std::fs::remove_file(dir.path().join("a/x.z")).expect("rm");
        std::fs::remove_file(dir.path().join("a-b")).expect("rm");
        let (bits, count, _, first) = check().expect("checked");
        let off: Vec<&str> = paths
            .iter()
            .zip(&bits)
            .filter(|(_, b)| !**b)
            .map(|(p, _)| p.as_str())
            .collect();
        assert_eq!(off, ["a-b", "a/x.z"]);
        assert_eq!((count, first.as_deref()), (n - 2, Some("a-b")));
        // A file not listed, wherever it sorts, is refused by name.
        for stray in ["a/x.y", "0", "zz", "a/x/y-"] {
            std::fs::write(dir.path().join(stray), b"").expect("plant");
            let e = check().expect_err("unlisted");
            assert!(
                e.to_string().contains(&format!("unlisted file {stray} in")),
                "{e}"
            );
            std::fs::remove_file(dir.path().join(stray)).expect("rm");
        }
    }

    #[test]
    fn the_second_reading_refuses_a_changed_list() {
        let dir = tempfile::tempdir().expect("tmp");
        let paths = tricky_paths();
        write_manifest(dir.path(), &paths);
        let manifest = dir.path().join(names::MANIFEST);
        let (_, listed) = Listing::open(&manifest, &streamed())
            .expect("open")
            .finish()
            .expect("first reading");
        let entries = |listed: u64| {
            let mut present = Bits::default();
            paths.iter().for_each(|_| present.push(true));
            Entries {
                meta: vec![],
                manifest: manifest.clone(),
                limits: streamed(),
                listed,
                present,
            }
        };
        let mut seen = Vec::new();
        entries(listed)
            .each(&mut |p, _| {
                seen.push(p.to_string());
                Ok(())
            })
            .expect("each");
        assert_eq!(seen, paths);
        let e = entries(listed ^ 1)
            .each(&mut |_, _| Ok(()))
            .expect_err("changed");
        assert!(
            e.to_string()
                .contains("changed while the bundle was packed"),
            "{e}"
        );
    }

    /// A thin manifest that lists a file it also removes is refused by either reading.
    #[test]
    fn a_listing_refuses_a_file_also_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(names::MANIFEST);
        let mut m = crate::testing::sample_manifest();
        m.kind = crate::Kind::Thin;
        m.generation = 2;
        m.base = Some(crate::manifest::BaseRef {
            bundle: m.bundle.clone(),
            version: "0".into(),
            generation: 1,
            manifest_digest: crate::hash::Digest::sha256([1; 32]),
        });
        m.removed = vec![BundlePath::new("b/c").expect("path")];
        std::fs::write(&path, m.to_canonical_json()).expect("write");
        for limits in [streamed(), crate::streamed::Limits::default()] {
            let e = Listing::open(&path, &limits)
                .expect("open")
                .finish()
                .expect_err("file and removed");
            assert!(
                e.to_string()
                    .contains("b/c is listed both as a file and as removed"),
                "{e}"
            );
        }
    }

    #[test]
    fn bits_read_back_as_pushed() {
        let mut bits = Bits::default();
        let want: Vec<bool> = (0..200)
            .map(|i| i % 3 == 0 || i == 64 || i == 127)
            .collect();
        for &b in &want {
            bits.push(b);
        }
        assert_eq!(bits.len(), 200);
        assert_eq!((0..200).map(|i| bits.get(i)).collect::<Vec<_>>(), want);
        assert!(!bits.get(200) && !bits.get(10_000));
    }

    #[test]
    fn header_is_deterministic_ustar() {
        let h = ustar_header("scripts/load.sh", 10, 0o755, 0).unwrap();
        assert_eq!(&h.as_bytes()[257..263], b"ustar\0");
        assert_eq!(h.mode().unwrap(), 0o755);
        assert_eq!(h.path().unwrap().to_str(), Some("scripts/load.sh"));
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let h = ustar_header(&long, 1, 0o644, 0).unwrap();
        assert_eq!(h.path().unwrap().to_str(), Some(long.as_str()));
    }
}
