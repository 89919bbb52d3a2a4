//! Archives: deterministic `pack`, and the safe stream reader behind `verify X.tar.zst`,
//! `unpack` and thin `apply`.
//!
//! **Pack** writes a plain ustar stream: the metadata files first (manifest.dsse, manifest.json,
//! the header, checksum files, public key, time anchor — so a reader checks the signature
//! before any content arrives), then every manifest file in manifest order. Every header has
//! uid/gid 0, empty owner names, mode 0644 (0755 for `scripts/*.sh`), mtime from
//! `SOURCE_DATE_EPOCH` or 0; no folders, no links. The file list comes from the manifest, never
//! from a directory walk, so file-system order, mtimes and umask cannot leak in. gzip output is
//! a single member with no name and zero time, compressed pigz-style in independent 1 MiB
//! blocks on every core (block boundaries depend only on the input, so the bytes do not depend
//! on the number of cores); zstd uses libzstd's multi-threaded mode, whose output does not
//! depend on the number of workers either.
//!
//! **Reading** refuses, before writing anything for the entry: absolute paths, `..`, links
//! (symbolic and hard), devices and FIFOs, duplicate entries, entries that do not fit the
//! size limits, and — once `manifest.json` has been seen — entries the manifest does not list
//! or lists with another size. Content is hashed as it streams.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use crate::error::{Error, IoContext as _, Result};
use crate::hash::{Hasher, Progress, Sha256, CHUNK};
use crate::manifest::Manifest;
use crate::names;
use crate::path::{ustar_split, BundlePath};

/// Archive compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// From an output file name: `.tar.gz`/`.tgz` or `.tar.zst`/`.tzst`.
    pub fn from_name(name: &Path) -> Option<Self> {
        let n = name.file_name()?.to_str()?;
        if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
            Some(Compression::Gzip)
        } else if n.ends_with(".tar.zst") || n.ends_with(".tzst") {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// gzip level (pigz's default) and zstd level (zstd's default).
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;
/// Uncompressed bytes per independently compressed gzip block.
const GZ_BLOCK: usize = 1 << 20;
/// zstd workers. The output of libzstd's multi-threaded mode does not depend on this number;
/// a fixed value keeps the job layout identical on every machine.
const ZSTD_WORKERS: u32 = 2;

/// What `pack` wrote.
#[derive(Debug, Clone)]
pub struct PackReport {
    pub entries: usize,
    pub content_bytes: u64,
    pub archive_bytes: u64,
}

/// The mtime for archive entries: `SOURCE_DATE_EPOCH` or 0.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().map_err(|_| {
            Error::input(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a non-negative integer number of seconds"
            ))
        }),
        _ => Ok(0),
    }
}

/// Pack bundle folder `dir` into `output` (compression from its name).
pub fn pack(dir: &Path, output: &Path, mtime: u64, progress: &dyn Progress) -> Result<PackReport> {
    let compression = Compression::from_name(output).ok_or_else(|| {
        Error::input(format!(
            "{}: the archive name must end in .tar.gz or .tar.zst",
            output.display()
        ))
    })?;
    let mbytes = read_metadata_file(dir, names::MANIFEST)?
        .ok_or_else(|| Error::NotFound(dir.join(names::MANIFEST)))?;
    let manifest = Manifest::from_json(&mbytes)
        .map_err(|e| Error::input(format!("{}: {e}", dir.join(names::MANIFEST).display())))?;
    if !dir.join(names::ENVELOPE).is_file() {
        return Err(Error::input(format!(
            "{} is not signed (no manifest.dsse): run `stella mirror sign` first",
            dir.display()
        )));
    }
    // The entry list: metadata first, then the manifest's files. Nothing else may be there.
    let mut entries: Vec<(String, u64)> = Vec::new();
    for name in names::METADATA {
        let p = dir.join(name);
        if let Ok(m) = std::fs::symlink_metadata(&p) {
            if !m.file_type().is_file() {
                return Err(Error::input(format!("{}: not a regular file", p.display())));
            }
            entries.push((name.to_string(), m.len()));
        }
    }
    let on_disk = walk(dir)?;
    let listed: HashSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    for p in &on_disk {
        if !listed.contains(p.as_str()) && !names::is_metadata(p) {
            return Err(Error::input(format!(
                "unlisted file {p} in {}: a bundle folder holds only the files its manifest lists",
                dir.display()
            )));
        }
    }
    let present: HashSet<&str> = on_disk.iter().map(String::as_str).collect();
    for f in &manifest.files {
        if !present.contains(f.path.as_str()) {
            if manifest.kind == crate::Kind::Thin {
                continue; // comes from the base
            }
            return Err(Error::input(format!(
                "file {} is missing from {}",
                f.path,
                dir.display()
            )));
        }
        entries.push((f.path.clone(), f.size));
    }
    let total: u64 = entries.iter().map(|e| e.1).sum();

    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".stella-pack-")
        .tempfile_in(&out_dir)
        .at(&out_dir)?;
    let file = tmp.as_file().try_clone().at(tmp.path())?;
    let counter = CountingWriter::new(ThreadedWriter::new(file));
    progress.start("pack", total);
    // Three stages on their own threads: the tar stream is produced (files read) on one,
    // compressed by the encoder's workers, and written out on another.
    let (tx, rx) = sync_channel::<Result<Vec<u8>>>(4);
    let counting = std::thread::scope(|s| -> Result<CountingWriter<ThreadedWriter>> {
        s.spawn(|| {
            let mut w = ChunkSender {
                tx: &tx,
                buf: Vec::with_capacity(PIPE_CHUNK),
            };
            let r = write_tar(&mut w, dir, &entries, mtime, &manifest, progress)
                .and_then(|()| w.send_rest());
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
            drop(tx);
        });
        let mut sink: Box<dyn FinishWrite> = match compression {
            Compression::Gzip => Box::new(ParGzWriter::new(counter, crate::hash::threads())),
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(counter, ZSTD_LEVEL).at(output)?;
                enc.multithread(ZSTD_WORKERS).at(output)?;
                enc.include_checksum(true).at(output)?;
                Box::new(enc)
            }
        };
        // Owned here, so an early return drops it and unblocks the producer.
        let rx = rx;
        for chunk in rx.iter() {
            sink.write_all(&chunk?).at(output)?;
        }
        sink.finish_box().at(output)
    })?;
    progress.finish();
    let (bytes, threaded) = counting.into_parts();
    // No fsync: like tar and zstd, durability against power loss is left to the caller
    // (`sync`); the rename below still makes the archive appear whole or not at all.
    threaded.finish().at(output)?;
    tmp.persist(output)
        .map_err(|e| Error::io(output, e.error))?;
    Ok(PackReport {
        entries: entries.len(),
        content_bytes: total,
        archive_bytes: bytes,
    })
}

fn write_tar(
    w: &mut dyn Write,
    dir: &Path,
    entries: &[(String, u64)],
    mtime: u64,
    manifest: &Manifest,
    progress: &dyn Progress,
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    for (path, size) in entries {
        let bp = BundlePath::new(path).map_err(Error::input)?;
        let src = bp.under(dir);
        let mut f = File::open(&src).at(&src)?;
        let actual = f.metadata().at(&src)?.len();
        if actual != *size {
            return Err(Error::input(format!(
                "{path} is {actual} bytes but the manifest lists {size}: the folder changed since it was created"
            )));
        }
        let _ = manifest;
        let mode = if path.starts_with("scripts/") && path.ends_with(".sh") {
            0o755
        } else {
            0o644
        };
        let header = ustar_header(path, *size, mode, mtime)?;
        w.write_all(header.as_bytes()).at(&src)?;
        let mut left = *size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = f.read(&mut buf[..want]).at(&src)?;
            if n == 0 {
                return Err(Error::input(format!(
                    "{path} shrank while it was being packed"
                )));
            }
            w.write_all(&buf[..n]).at(&src)?;
            progress.advance(n as u64);
            left -= n as u64;
        }
        let pad = (512 - (*size % 512) as usize) % 512;
        w.write_all(&[0u8; 512][..pad]).at(&src)?;
    }
    w.write_all(&[0u8; 1024]).at(dir)?;
    Ok(())
}

/// Bytes per chunk handed from the tar producer to the compressor.
const PIPE_CHUNK: usize = 1 << 20;

/// Sends the tar stream in chunks to the compressing thread.
struct ChunkSender<'a> {
    tx: &'a SyncSender<Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkSender<'_> {
    fn send_rest(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.tx
                .send(Ok(chunk))
                .map_err(|_| Error::input("packing stopped"))?;
        }
        Ok(())
    }
}

impl Write for ChunkSender<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIPE_CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_CHUNK));
            self.tx
                .send(Ok(chunk))
                .map_err(|_| io::Error::other("packing stopped"))?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
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
    buf: Vec<u8>,
    handle: Option<std::thread::JoinHandle<io::Result<File>>>,
}

impl ThreadedWriter {
    fn new(mut file: File) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(4);
        let handle = std::thread::spawn(move || {
            // Owned here, so an early return drops it and unblocks the producer.
            let rx = rx;
            for chunk in rx.iter() {
                file.write_all(&chunk)?;
            }
            Ok(file)
        });
        ThreadedWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(PIPE_CHUNK),
            handle: Some(handle),
        }
    }

    fn push(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_CHUNK));
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

// ------------------------------------------------------------------------------------------
// Parallel gzip
// ------------------------------------------------------------------------------------------

type Job = (u64, Vec<u8>, bool);
type Done = (u64, io::Result<(Vec<u8>, u32, usize)>, bool);

/// A gzip writer that compresses independent 1 MiB blocks on several threads (the pigz
/// scheme without the cross-block dictionary) and writes one standard gzip member: no file
/// name, zero mtime, XFL 0, OS 255. The output depends only on the input bytes.
pub struct ParGzWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    seq: u64,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParGzWriter<W> {
    pub fn new(inner: W, threads: usize) -> Self {
        let threads = threads.max(1);
        let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
        let (done_tx, done_rx) = sync_channel::<Done>(threads * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = done_tx.clone();
                std::thread::spawn(move || gz_worker(&rx, &tx))
            })
            .collect();
        drop(done_tx);
        let writer = std::thread::spawn(move || gz_write_in_order(inner, &done_rx));
        ParGzWriter {
            buf: Vec::with_capacity(GZ_BLOCK),
            seq: 0,
            jobs: Some(job_tx),
            workers,
            writer: Some(writer),
        }
    }

    fn send(&mut self, last: bool) -> io::Result<()> {
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(GZ_BLOCK));
        let tx = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip writer already finished"))?;
        tx.send((self.seq, block, last))
            .map_err(|_| io::Error::other("gzip compression stopped (see the writer error)"))?;
        self.seq += 1;
        Ok(())
    }

    /// Flush the last block, write the trailer and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send(true)?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("gzip writer thread failed")),
        }
    }
}

impl<W: Write + Send + 'static> Write for ParGzWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = GZ_BLOCK - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == GZ_BLOCK {
                self.send(false)?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn gz_worker(rx: &Mutex<Receiver<Job>>, tx: &SyncSender<Done>) {
    let mut c = flate2::Compress::new(flate2::Compression::new(GZIP_LEVEL), false);
    loop {
        let job = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok((seq, data, last)) = job else { return };
        let r = deflate_block(&mut c, &data, last).map(|out| {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&data);
            (out, crc.finalize(), data.len())
        });
        if tx.send((seq, r, last)).is_err() {
            return;
        }
    }
}

/// Raw-deflate one block: sync-flushed (byte-aligned, not final) or, for the last, finished.
fn deflate_block(c: &mut flate2::Compress, input: &[u8], last: bool) -> io::Result<Vec<u8>> {
    c.reset();
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 1024);
    let flush = if last {
        flate2::FlushCompress::Finish
    } else {
        flate2::FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&input[consumed.min(input.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == input.len();
        let room_left = out.len() < out.capacity();
        match status {
            flate2::Status::StreamEnd => break,
            _ if !last && all_in && room_left => break,
            _ => out.reserve(out.capacity().max(64 * 1024)),
        }
    }
    Ok(out)
}

fn gz_write_in_order<W: Write>(mut w: W, rx: &Receiver<Done>) -> io::Result<W> {
    // Header: magic, CM=deflate, FLG=0 (no name), MTIME=0, XFL=0, OS=255 (unknown).
    w.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
    let mut pending: BTreeMap<u64, (Vec<u8>, u32, usize, bool)> = BTreeMap::new();
    let mut next = 0u64;
    let mut crc = crc32fast::Hasher::new();
    let mut total: u64 = 0;
    let mut done = false;
    while !done {
        let (seq, r, last) = rx
            .recv()
            .map_err(|_| io::Error::other("gzip workers stopped early"))?;
        let (out, c, len) = r?;
        pending.insert(seq, (out, c, len, last));
        while let Some((out, c, len, last)) = pending.remove(&next) {
            w.write_all(&out)?;
            crc.combine(&crc32fast::Hasher::new_with_initial_len(c, len as u64));
            total += len as u64;
            next += 1;
            if last {
                done = true;
                break;
            }
        }
    }
    w.write_all(&crc.finalize().to_le_bytes())?;
    w.write_all(&((total & 0xffff_ffff) as u32).to_le_bytes())?;
    w.flush()?;
    Ok(w)
}

// ------------------------------------------------------------------------------------------
// Reading
// ------------------------------------------------------------------------------------------

/// Open a file, undoing gzip or zstd compression (detected by magic bytes; plain tar passes).
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read + Send>> {
    let f = File::open(path).at(path)?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let magic = {
        use std::io::BufRead as _;
        r.fill_buf()
            .at(path)?
            .get(..4)
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    };
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::with_buffer(r).at(path)?)
    } else {
        Box::new(r)
    })
}

/// Decompresses on its own thread, a few 1 MiB chunks ahead of the reader, so decompression
/// and hashing run on different cores. Memory: at most 4 chunks in flight.
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    pub fn new(mut inner: Box<dyn Read + Send>) -> Self {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(4);
        std::thread::spawn(move || loop {
            let mut buf = vec![0u8; 1 << 20];
            let mut filled = 0;
            while filled < buf.len() {
                match inner.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
            buf.truncate(filled);
            let end = filled == 0;
            if tx.send(Ok(buf)).is_err() || end {
                return;
            }
        });
        ReadAhead {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    if chunk.is_empty() {
                        self.done = true;
                    }
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.done = true;
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Limits for reading an archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single entry.
    pub max_entry: u64,
    /// Largest total of all entries.
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry: 1 << 40,
            max_total: 1 << 42,
        }
    }
}

/// What streaming through a bundle archive found.
#[derive(Debug, Default)]
pub struct Observed {
    /// Metadata files, in memory.
    pub metadata: BTreeMap<String, Vec<u8>>,
    /// Content files: path → (size, digest).
    pub files: BTreeMap<String, (u64, Sha256)>,
}

/// Stream through a bundle archive, checking every entry; with `staging`, also write the
/// files there (a fresh, empty folder the caller owns and removes on failure).
pub fn read_archive(
    archive: &Path,
    staging: Option<&Path>,
    limits: Limits,
    progress: &dyn Progress,
) -> Result<Observed> {
    let reader = Box::new(ReadAhead::new(open_decompressed(archive)?));
    let total = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    progress.start("read", total);
    let r = read_entries(reader, staging, limits, progress);
    progress.finish();
    r.map_err(|e| match e {
        Error::Verify(m) => Error::Verify(format!("{}: {m}", archive.display())),
        e => e,
    })
}

fn bad(msg: String) -> Error {
    Error::Verify(msg)
}

fn read_entries(
    reader: Box<dyn Read + Send>,
    staging: Option<&Path>,
    limits: Limits,
    progress: &dyn Progress,
) -> Result<Observed> {
    let mut ar = tar::Archive::new(reader);
    let mut seen: HashSet<String> = HashSet::new();
    let mut dirs: HashSet<String> = HashSet::new();
    let mut obs = Observed::default();
    let mut manifest: Option<Manifest> = None;
    let mut total: u64 = 0;
    let mut buf = vec![0u8; CHUNK];
    let entries = ar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        let text = std::str::from_utf8(&raw)
            .map_err(|_| bad(format!("entry {shown:?}: path is not UTF-8")))?;
        let mut p = text.strip_prefix("./").unwrap_or(text);
        if kind.is_dir() {
            p = p.trim_end_matches('/');
            if p.is_empty() || p == "." {
                continue;
            }
        }
        let path = BundlePath::new(p).map_err(|e| {
            if p.starts_with('/') {
                bad(format!("entry {shown:?}: absolute path refused"))
            } else {
                bad(format!("entry {shown:?}: unsafe path refused: {e}"))
            }
        })?;
        match kind {
            k if k.is_symlink() => {
                return Err(bad(format!(
                    "entry {shown:?} is a symbolic link: bundles hold regular files only"
                )))
            }
            k if k.is_hard_link() => {
                return Err(bad(format!(
                    "entry {shown:?} is a hard link: bundles hold regular files only"
                )))
            }
            k if k.is_character_special() || k.is_block_special() || k.is_fifo() => {
                return Err(bad(format!(
                    "entry {shown:?} is a device or FIFO: bundles hold regular files only"
                )))
            }
            k if k.is_dir() => {
                if seen.contains(path.as_str()) || !dirs.insert(path.as_str().to_string()) {
                    return Err(bad(format!("duplicate entry {shown:?}")));
                }
                if let Some(s) = staging {
                    std::fs::create_dir_all(path.under(s)).at(path.under(s))?;
                }
                continue;
            }
            k if k.is_file() => {}
            other => {
                return Err(bad(format!(
                "entry {shown:?} has unsupported type {other:?}: bundles hold regular files only"
            )))
            }
        }
        let name = path.as_str().to_string();
        if !seen.insert(name.clone()) || dirs.contains(&name) {
            return Err(bad(format!("duplicate entry {shown:?}")));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| bad(format!("entry {shown:?}: {e}")))?;
        let is_meta = names::is_metadata(&name);
        if is_meta && size > crate::MAX_METADATA_BYTES {
            return Err(bad(format!(
                "entry {shown:?} is {size} bytes, above the {}-byte limit for bundle metadata (oversize entry)",
                crate::MAX_METADATA_BYTES
            )));
        }
        if size > limits.max_entry {
            return Err(bad(format!(
                "entry {shown:?} is {size} bytes, above the {}-byte entry limit (oversize entry)",
                limits.max_entry
            )));
        }
        total = total.saturating_add(size);
        if total > limits.max_total {
            return Err(bad(format!(
                "the archive holds more than the {}-byte limit (oversize at entry {shown:?})",
                limits.max_total
            )));
        }
        if !is_meta {
            if let Some(m) = &manifest {
                match m.file(&name) {
                    None => {
                        return Err(bad(format!(
                            "unlisted entry {shown:?}: the signed manifest does not list it"
                        )))
                    }
                    Some(f) if f.size != size => {
                        return Err(bad(format!(
                            "entry {shown:?} is {size} bytes but the manifest lists {} (oversize or truncated entry)",
                            f.size
                        )))
                    }
                    _ => {}
                }
            }
        }
        let mut out = match staging {
            Some(s) => {
                let dest = path.under(s);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        bad(format!("entry {shown:?} conflicts with another entry: {e}"))
                    })?;
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(|e| bad(format!("entry {shown:?} cannot be created: {e}")))?;
                Some(BufWriter::with_capacity(CHUNK, f))
            }
            None => None,
        };
        let mut h = Hasher::new();
        let mut meta_bytes = Vec::new();
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad(format!("entry {shown:?}: corrupt archive: {e}"))),
            };
            h.update(&buf[..n]);
            if is_meta {
                meta_bytes.extend_from_slice(&buf[..n]);
            }
            if let Some(w) = out.as_mut() {
                w.write_all(&buf[..n]).at(&name)?;
            }
            progress.advance(n as u64);
        }
        if h.len() != size {
            return Err(bad(format!("entry {shown:?} is truncated")));
        }
        if let Some(mut w) = out {
            w.flush().at(&name)?;
        }
        if is_meta {
            if name == names::MANIFEST {
                manifest = Some(
                    Manifest::from_json(&meta_bytes)
                        .map_err(|e| bad(format!("manifest.json: {e}")))?,
                );
            }
            obs.metadata.insert(name, meta_bytes);
        } else {
            obs.files.insert(name, (size, h.finish()));
        }
    }
    Ok(obs)
}

/// Read a metadata file of a bundle folder (bounded); `None` if absent.
pub fn read_metadata_file(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let p = BundlePath::new(name).map_err(Error::input)?.under(dir);
    match std::fs::symlink_metadata(&p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
        Ok(m) if !m.file_type().is_file() => {
            return Err(Error::verify(format!(
                "{name} is not a regular file (links are refused)"
            )))
        }
        Ok(m) if m.len() > crate::MAX_METADATA_BYTES => {
            return Err(Error::verify(format!(
                "{name} is {} bytes, above the {}-byte limit for bundle metadata",
                m.len(),
                crate::MAX_METADATA_BYTES
            )))
        }
        Ok(_) => {}
    }
    std::fs::read(&p).at(&p).map(Some)
}

/// Every regular file under `dir`, as bundle-relative `/` paths, sorted. Links and other
/// special files are refused.
pub fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((abs, rel)) = stack.pop() {
        for e in std::fs::read_dir(&abs).at(&abs)? {
            let e = e.at(&abs)?;
            let name = e.file_name();
            let name = name.to_str().ok_or_else(|| {
                Error::verify(format!("{}: a file name is not UTF-8", abs.display()))
            })?;
            let rel_child = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().at(e.path())?;
            if ft.is_dir() {
                stack.push((e.path(), rel_child));
            } else if ft.is_file() {
                out.push(rel_child);
            } else if ft.is_symlink() {
                return Err(Error::verify(format!(
                    "{rel_child} is a symbolic link: bundles hold regular files only"
                )));
            } else {
                return Err(Error::verify(format!(
                    "{rel_child} is not a regular file: bundles hold regular files only"
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Unpack `archive` into `dest`: every entry is checked as it streams into a staging folder
/// beside `dest`, the staged bundle is verified, and only then renamed to `dest`. On any
/// failure the staging folder is removed and `dest` is untouched.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: Limits,
    opts: &crate::verify::Options<'_>,
    progress: &dyn Progress,
) -> Result<crate::verify::Report> {
    crate::create::check_output_free(dest)?;
    if !archive.is_file() {
        return Err(Error::NotFound(archive.to_path_buf()));
    }
    let staging = crate::create::Staging::beside(dest, "unpack")?;
    let obs = read_archive(archive, Some(&staging.path), limits, progress)?;
    let report = crate::verify::report_from_observed(&obs, opts)?;
    use std::os::unix::fs::PermissionsExt as _;
    for p in obs.files.keys() {
        if p.starts_with("scripts/") && p.ends_with(".sh") {
            let abs = BundlePath::new(p)
                .map_err(Error::verify)?
                .under(&staging.path);
            std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(0o755)).at(&abs)?;
        }
    }
    std::fs::set_permissions(&staging.path, std::fs::Permissions::from_mode(0o755))
        .at(&staging.path)?;
    staging.commit(dest)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(data: &[u8], threads: usize) -> Vec<u8> {
        let mut w = ParGzWriter::new(Vec::new(), threads);
        for chunk in data.chunks(7777) {
            w.write_all(chunk).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn parallel_gzip_is_standard_and_thread_independent() {
        let mut data = Vec::new();
        for i in 0..(3 * GZ_BLOCK + 12345) {
            data.push(((i * 7) % 251) as u8 ^ (i / 1000) as u8);
        }
        let a = gz(&data, 1);
        let b = gz(&data, 4);
        assert_eq!(a, b);
        assert_eq!(&a[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // Exact multiple of the block size, and empty input.
        let exact = vec![9u8; 2 * GZ_BLOCK];
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz(&exact, 2)[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, exact);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz(b"", 2)[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn zstd_output_does_not_depend_on_workers() {
        let data: Vec<u8> = (0..40_000_000u32)
            .map(|i| (i % 253) as u8 ^ (i >> 12) as u8)
            .collect();
        let z = |workers: u32| {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
            e.multithread(workers).unwrap();
            e.include_checksum(true).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let two = z(2);
        assert_eq!(z(1), two);
        assert_eq!(z(4), two);
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
