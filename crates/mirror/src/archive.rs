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
//! on the number of cores); zstd uses libzstd's multi-threaded mode with a pinned job layout,
//! whose output does not depend on the number of workers either.
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
/// zstd multi-threaded job layout, pinned rather than left to libzstd's defaults (these are
/// the defaults of libzstd 1.5 at level 3: 8 MiB jobs, each primed with the last 256 KiB of
/// the previous one). The job layout, not the number of workers, decides the bytes: libzstd
/// cuts jobs at fixed input offsets whatever the worker count and however the input is fed.
const ZSTD_JOB_SIZE: u32 = 8 << 20;
const ZSTD_OVERLAP_LOG: u32 = 6;
/// zstd workers: one per core, at least 2 (so compression overlaps the tar producer even on
/// one core) and at most 4 (each worker holds about two jobs of buffers: memory stays bounded).
fn zstd_workers() -> u32 {
    u32::try_from(crate::hash::threads().clamp(2, 4)).unwrap_or(2)
}

/// The zstd encoder `pack` uses: level 3, pinned job layout, content checksum.
fn zstd_encoder<W: Write>(
    inner: W,
    workers: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    use zstd::stream::raw::CParameter;
    let mut enc = zstd::stream::write::Encoder::new(inner, ZSTD_LEVEL)?;
    enc.multithread(workers)?;
    enc.set_parameter(CParameter::JobSize(ZSTD_JOB_SIZE))?;
    enc.set_parameter(CParameter::OverlapSizeLog(ZSTD_OVERLAP_LOG))?;
    enc.include_checksum(true)?;
    Ok(enc)
}

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
    let counting = std::thread::scope(|s| -> Result<CountingWriter<ThreadedWriter>> {
        s.spawn(|| {
            let mut w = ChunkSender::new(&tx);
            let r = write_tar(&mut w, dir, &entries, mtime, progress).and_then(|()| w.send_rest());
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
            sink.write_all(&chunk?).at(output)?;
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
        entries: entries.len(),
        content_bytes: total,
        archive_bytes: bytes,
    })
}

fn write_tar(
    w: &mut ChunkSender<'_>,
    dir: &Path,
    entries: &[(String, u64)],
    mtime: u64,
    progress: &dyn Progress,
) -> Result<()> {
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
        let mode = if path.starts_with("scripts/") && path.ends_with(".sh") {
            0o755
        } else {
            0o644
        };
        let header = ustar_header(path, *size, mode, mtime)?;
        w.put(header.as_bytes()).at(&src)?;
        let mut left = *size;
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
        let pad = (512 - (*size % 512) as usize) % 512;
        w.put(&[0u8; 512][..pad]).at(&src)?;
    }
    w.put(&[0u8; 1024]).at(dir)?;
    Ok(())
}

/// Bytes per chunk handed from the tar producer to the compressor.
const PIPE_CHUNK: usize = 1 << 20;

/// Builds the tar stream in 1 MiB chunks (file content is read straight into them) and sends
/// each full chunk to the compressing thread.
struct ChunkSender<'a> {
    tx: &'a SyncSender<Result<Vec<u8>>>,
    buf: Vec<u8>,
    len: usize,
}

impl<'a> ChunkSender<'a> {
    fn new(tx: &'a SyncSender<Result<Vec<u8>>>) -> Self {
        ChunkSender {
            tx,
            buf: vec![0u8; PIPE_CHUNK],
            len: 0,
        }
    }

    fn send_full(&mut self) -> io::Result<()> {
        if self.len == PIPE_CHUNK {
            let chunk = std::mem::replace(&mut self.buf, vec![0u8; PIPE_CHUNK]);
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
/// name, zero mtime, XFL 0, OS 255. Segments that are already compressed (random-looking) are
/// stored rather than deflated. The output depends only on the input bytes.
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

/// Bytes per segment whose compressibility is judged on its own.
const GZ_SEGMENT: usize = 64 * 1024;
/// A segment whose byte histogram is this close to uniform is stored instead of deflated:
/// chi-square statistic against the uniform distribution below this bound. Random and
/// already-compressed data (gzip'd image layers: the bulk of a bundle) sit near 255 (255
/// degrees of freedom; gzip output measures 400–700 per 64 KiB); text and binaries measure in
/// the tens of thousands and more. Below the bound, Huffman coding could save at most
/// `chi2 / (2 n ln 2)` bits per byte (0.011 for a full segment: about 0.14 %), while deflating
/// costs ~15 ms per MiB. Integer arithmetic only, so the decision — and so the bytes — is the
/// same on every machine.
const GZ_STORE_CHI2: u64 = 1024;

/// Is this segment's byte distribution uniform enough to store it as is?
fn incompressible(seg: &[u8]) -> bool {
    let n = seg.len() as u64;
    if n < 4096 {
        return false;
    }
    // Four interleaved histograms: independent increments pipeline better.
    let mut h = [[0u32; 256]; 4];
    let mut quads = seg.chunks_exact(4);
    for q in &mut quads {
        h[0][usize::from(q[0])] += 1;
        h[1][usize::from(q[1])] += 1;
        h[2][usize::from(q[2])] += 1;
        h[3][usize::from(q[3])] += 1;
    }
    for &b in quads.remainder() {
        h[0][usize::from(b)] += 1;
    }
    let sum_sq: u64 = (0..256)
        .map(|i| {
            let c = u64::from(h[0][i] + h[1][i] + h[2][i] + h[3][i]);
            c * c
        })
        .sum();
    // chi2 = (256 * sum(c^2) - n^2) / n < bound, without division.
    256 * sum_sq < n * n + GZ_STORE_CHI2 * n
}

/// Raw-deflate one block, ending byte-aligned and not final (or, for the last block, final).
/// The block is cut into runs of 64 KiB segments: runs judged incompressible are written as
/// stored deflate blocks, the others are deflated (each run sync-flushed).
fn deflate_block(c: &mut flate2::Compress, input: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 1024);
    if input.is_empty() {
        deflate_run(c, input, last, &mut out)?;
        return Ok(out);
    }
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for start in (0..input.len()).step_by(GZ_SEGMENT) {
        let end = (start + GZ_SEGMENT).min(input.len());
        let stored = incompressible(&input[start..end]);
        match runs.last_mut() {
            Some((_, e, kind)) if *kind == stored => *e = end,
            _ => runs.push((start, end, stored)),
        }
    }
    let n = runs.len();
    for (i, (start, end, stored)) in runs.into_iter().enumerate() {
        let fin = last && i + 1 == n;
        if stored {
            store_run(&input[start..end], fin, &mut out);
        } else {
            deflate_run(c, &input[start..end], fin, &mut out)?;
        }
    }
    Ok(out)
}

/// Stored deflate blocks (the stream is byte-aligned here): a header byte (BFINAL, BTYPE 00,
/// padding), LEN, NLEN, the bytes.
fn store_run(data: &[u8], fin: bool, out: &mut Vec<u8>) {
    let mut chunks = data.chunks(usize::from(u16::MAX)).peekable();
    while let Some(chunk) = chunks.next() {
        let is_final = fin && chunks.peek().is_none();
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.push(u8::from(is_final));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Deflate `input` from a fresh state: sync-flushed (byte-aligned, not final) or finished.
fn deflate_run(
    c: &mut flate2::Compress,
    input: &[u8],
    fin: bool,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    c.reset();
    out.reserve(input.len() / 8 + 1024);
    let flush = if fin {
        flate2::FlushCompress::Finish
    } else {
        flate2::FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&input[consumed.min(input.len())..], out, flush)
            .map_err(io::Error::other)?;
        let all_in = c.total_in() as usize == input.len();
        let room_left = out.len() < out.capacity();
        match status {
            flate2::Status::StreamEnd => break,
            _ if !fin && all_in && room_left => break,
            _ => out.reserve(out.capacity().max(64 * 1024)),
        }
    }
    Ok(())
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
    fn zstd_output_does_not_depend_on_workers_or_write_sizes() {
        // Several jobs' worth of mixed data: compressible runs and pseudo-random stretches.
        let mut x: u32 = 1;
        let data: Vec<u8> = (0..(3 * ZSTD_JOB_SIZE + 123_457))
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if (i >> 16) % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    (i % 253) as u8 ^ (i >> 12) as u8
                }
            })
            .collect();
        let z = |workers: u32, write: usize| {
            let mut e = zstd_encoder(Vec::new(), workers).unwrap();
            for chunk in data.chunks(write) {
                e.write_all(chunk).unwrap();
            }
            e.finish().unwrap()
        };
        let reference = z(2, PIPE_CHUNK);
        assert_eq!(z(1, PIPE_CHUNK), reference, "1 worker");
        assert_eq!(z(4, 7777), reference, "4 workers, small writes");
        assert_eq!(z(3, 5 << 20), reference, "3 workers, large writes");
        // The pinned layout is libzstd's own default at this level: pinning changed nothing.
        let mut d = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
        d.multithread(2).unwrap();
        d.include_checksum(true).unwrap();
        d.write_all(&data).unwrap();
        assert_eq!(d.finish().unwrap(), reference, "libzstd default layout");
        assert_eq!(zstd::decode_all(&reference[..]).unwrap(), data);
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn parallel_gzip_stores_incompressible_segments() {
        let text: Vec<u8> = b"{\"id\":\"CVE-2025-1234\",\"pkg\":\"openssl\"}\n"
            .iter()
            .copied()
            .cycle()
            .take(300_000)
            .collect();
        assert!(incompressible(&noise(GZ_SEGMENT, 1)));
        assert!(!incompressible(&text[..GZ_SEGMENT]));
        assert!(!incompressible(&[0u8; GZ_SEGMENT]));
        // Noise across block boundaries, text in the middle, and noise at the very end (the
        // final deflate block is a stored one); stored runs longer than one stored block.
        for tail in [0usize, 1, 65_535, 65_536, 70_000] {
            let mut data = noise(2 * GZ_BLOCK + 100_000, 2);
            data.extend_from_slice(&text);
            data.extend_from_slice(&noise(tail, 3));
            let z = gz(&data, 2);
            assert_eq!(z, gz(&data, 1));
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "round trip with a {tail}-byte tail");
            // Noise costs only framing; the text still compresses.
            let noise_len = data.len() - text.len();
            assert!(
                z.len() < noise_len + noise_len / 500 + text.len() / 10,
                "{}",
                z.len()
            );
        }
    }

    #[test]
    fn parallel_gzip_does_not_depend_on_write_sizes() {
        let data: Vec<u8> = (0..(2 * GZ_BLOCK + 999)).map(|i| (i % 241) as u8).collect();
        let whole = {
            let mut w = ParGzWriter::new(Vec::new(), 3);
            w.write_all(&data).unwrap();
            w.finish().unwrap()
        };
        assert_eq!(gz(&data, 2), whole);
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
