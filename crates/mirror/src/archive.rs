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
use crate::verify::{self, Options, Report, VerifiedMetadata};

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
    open_decompressed_with(path, None)
}

/// [`open_decompressed`] for bundle archives: the zstd window is capped at
/// [`ZSTD_WINDOW_LOG_MAX`], so decompression memory stays bounded whatever the frame asks for.
pub fn open_bundle_stream(path: &Path) -> Result<Box<dyn Read + Send>> {
    open_decompressed_with(path, Some(ZSTD_WINDOW_LOG_MAX))
}

fn open_decompressed_with(
    path: &Path,
    window_log_max: Option<u32>,
) -> Result<Box<dyn Read + Send>> {
    let f = File::open(path).at(path)?;
    decompress(BufReader::with_capacity(1 << 20, f), window_log_max).at(path)
}

/// Undo gzip or zstd compression, detected by magic bytes (plain tar passes through).
fn decompress<R: io::BufRead + Send + 'static>(
    mut r: R,
    window_log_max: Option<u32>,
) -> io::Result<Box<dyn Read + Send>> {
    let magic = r
        .fill_buf()?
        .get(..4)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
        if let Some(log) = window_log_max {
            d.window_log_max(log)?;
        }
        Box::new(d)
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

/// Limits for reading an archive. The signed manifest is the real bound: no content entry is
/// written unless the verified manifest lists it, and never beyond its signed size. These
/// limits cap what even a correctly signed bundle may put on this machine.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single entry.
    pub max_entry: u64,
    /// Largest total of all content entries.
    pub max_total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry: 64 << 30,
            max_total: 1 << 40,
        }
    }
}

/// Largest zstd window the reader accepts (2^25 = 32 MiB: `zstd -19` uses 2^23, pack 2^21).
/// libzstd allocates the window a frame header asks for, so without this cap one header
/// could take 128 MiB (libzstd's own default limit) or, raised, gigabytes.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// What streaming through a bundle archive found.
#[derive(Debug, Default)]
pub struct Observed {
    /// Metadata files, in memory.
    pub metadata: BTreeMap<String, Vec<u8>>,
    /// Content files: path → (size, digest).
    pub files: BTreeMap<String, (u64, Sha256)>,
}

/// Stream through a bundle archive and verify it; with `staging`, also write the content files
/// there (a fresh, empty folder the caller owns and removes on failure).
///
/// The metadata comes first (as `pack` writes it) and is verified — signature, threshold,
/// header, checksum files, freshness — when the first content entry arrives, before a byte of
/// content is read. From then on an entry is accepted only if the signed manifest lists it,
/// with exactly the signed size, and its digest is checked as soon as it ends.
pub fn read_archive(
    archive: &Path,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(Observed, Report)> {
    let reader = Box::new(ReadAhead::new(open_bundle_stream(archive)?));
    let total = std::fs::metadata(archive).map(|m| m.len()).unwrap_or(0);
    progress.start("read", total);
    let r = read_entries(reader, staging, limits, opts, progress);
    progress.finish();
    r.map_err(|e| match e {
        Error::Verify(m) => Error::Verify(format!("{}: {m}", archive.display())),
        e => e,
    })
}

/// [`read_archive`] over any byte stream (gzip, zstd or plain tar, told apart by magic bytes),
/// on the calling thread: what the `archive` fuzz target drives.
pub fn read_stream<R: Read + Send + 'static>(
    reader: R,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(Observed, Report)> {
    let r = decompress(BufReader::new(reader), Some(ZSTD_WINDOW_LOG_MAX))
        .map_err(|e| bad(format!("corrupt archive: {e}")))?;
    read_entries(r, staging, limits, opts, progress)
}

fn bad(msg: String) -> Error {
    Error::Verify(msg)
}

/// The name of an extension header type, or `None` for an ordinary entry.
fn extension_kind(kind: tar::EntryType) -> Option<&'static str> {
    if kind.is_pax_local_extensions() {
        Some("PAX extended header (type x)")
    } else if kind.is_pax_global_extensions() {
        Some("PAX global header (type g)")
    } else if kind.is_gnu_longname() {
        Some("GNU long-name header (type L)")
    } else if kind.is_gnu_longlink() {
        Some("GNU long-link header (type K)")
    } else if kind.is_gnu_sparse() {
        Some("GNU sparse file (type S)")
    } else {
        None
    }
}

fn read_entries(
    reader: Box<dyn Read + Send>,
    staging: Option<&Path>,
    limits: Limits,
    opts: &Options<'_>,
    progress: &dyn Progress,
) -> Result<(Observed, Report)> {
    let mut ar = tar::Archive::new(reader);
    let mut seen: HashSet<String> = HashSet::new();
    let mut obs = Observed::default();
    let mut verified: Option<VerifiedMetadata> = None;
    let mut meta_total: u64 = 0;
    let mut buf = vec![0u8; CHUNK];
    // Raw entries: the tar crate applies no PAX record (whose `size` would override the header
    // we check) and reads no GNU long name into memory. Every header reaches the checks below,
    // and each entry's data is exactly the 512-byte-header size we checked.
    let entries = ar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
        .raw(true);
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        // At most 256 bytes (ustar prefix + name): raw entries have no long names.
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if let Some(ext) = extension_kind(kind) {
            return Err(bad(format!(
                "entry {shown:?} is a {ext}: bundle archives never carry extension headers \
                 (`stella mirror pack` writes plain ustar)"
            )));
        }
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
                return Err(bad(format!(
                    "entry {shown:?} is a directory: bundle archives hold regular files only \
                     (`stella mirror pack` writes no directory entries)"
                )))
            }
            k if k.is_file() => {}
            other => {
                return Err(bad(format!(
                "entry {shown:?} has unsupported type {other:?}: bundles hold regular files only"
            )))
            }
        }
        let text = std::str::from_utf8(&raw)
            .map_err(|_| bad(format!("entry {shown:?}: path is not UTF-8")))?;
        let p = text.strip_prefix("./").unwrap_or(text);
        let path = BundlePath::new(p).map_err(|e| {
            if p.starts_with('/') {
                bad(format!("entry {shown:?}: absolute path refused"))
            } else {
                bad(format!("entry {shown:?}: unsafe path refused: {e}"))
            }
        })?;
        let name = path.as_str().to_string();
        if !seen.insert(name.clone()) {
            return Err(bad(format!("duplicate entry {shown:?}")));
        }
        let size = entry
            .header()
            .entry_size()
            .map_err(|e| bad(format!("entry {shown:?}: {e}")))?;
        let is_meta = names::is_metadata(&name);
        let signed: Option<Sha256> = if is_meta {
            if verified.is_some() {
                return Err(bad(format!(
                    "metadata entry {shown:?} comes after content entries: the metadata must \
                     come first (as `stella mirror pack` writes it)"
                )));
            }
            if size > crate::MAX_METADATA_BYTES {
                return Err(bad(format!(
                    "entry {shown:?} is {size} bytes, above the {}-byte limit for bundle metadata (oversize entry)",
                    crate::MAX_METADATA_BYTES
                )));
            }
            meta_total = meta_total.saturating_add(size);
            if meta_total > crate::MAX_METADATA_TOTAL {
                return Err(bad(format!(
                    "the metadata entries exceed {} bytes in all (oversize at entry {shown:?})",
                    crate::MAX_METADATA_TOTAL
                )));
            }
            None
        } else {
            if size > limits.max_entry {
                return Err(bad(format!(
                    "entry {shown:?} is {size} bytes, above the {}-byte entry limit (oversize entry)",
                    limits.max_entry
                )));
            }
            let vm = match verified.as_ref() {
                Some(vm) => vm,
                None => {
                    if !obs.metadata.contains_key(names::ENVELOPE) {
                        return Err(bad(format!(
                            "content entry {shown:?} comes before manifest.dsse: the signed \
                             manifest must come first (as `stella mirror pack` writes it)"
                        )));
                    }
                    // Everything is checked before the first content byte is read.
                    let vm = verify::verify_metadata(&obs.metadata, opts)?;
                    check_signed_limits(&vm.manifest, limits)?;
                    stage_metadata(staging, &obs.metadata)?;
                    verified.insert(vm)
                }
            };
            match vm.manifest.file(&name) {
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
                Some(f) => Some(Sha256::parse_hex(&f.sha256).ok_or_else(|| {
                    bad(format!("manifest entry {name} has a malformed sha256"))
                })?),
            }
        };
        let mut out = match (staging, is_meta) {
            (Some(s), false) => {
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
            _ => None,
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
            // The entry reader stops at `size`; this keeps the bound if that ever changed.
            if h.len().saturating_add(n as u64) > size {
                return Err(bad(format!(
                    "entry {shown:?} holds more than its {size} bytes"
                )));
            }
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
        let digest = h.finish();
        if let Some(want) = signed {
            if digest != want {
                return Err(bad(format!(
                    "file {name} changed: {size} bytes sha256:{}, the manifest says sha256:{}",
                    digest.hex(),
                    want.hex()
                )));
            }
            obs.files.insert(name, (size, digest));
        } else {
            obs.metadata.insert(name, meta_bytes);
        }
    }
    let meta = match verified {
        Some(vm) => vm,
        None => {
            let vm = verify::verify_metadata(&obs.metadata, opts)?;
            stage_metadata(staging, &obs.metadata)?;
            vm
        }
    };
    let (files_checked, bytes_checked, from_base) =
        verify::check_files(&meta.manifest, &obs.files)?;
    Ok((
        obs,
        Report {
            meta,
            files_checked,
            bytes_checked,
            from_base,
        },
    ))
}

/// Write the (verified) metadata files into the staging folder.
fn stage_metadata(staging: Option<&Path>, metadata: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let Some(s) = staging else { return Ok(()) };
    for (name, bytes) in metadata {
        let dest = BundlePath::new(name)
            .map_err(|e| bad(e.to_string()))?
            .under(s);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).at(parent)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .at(&dest)?;
        f.write_all(bytes).at(&dest)?;
    }
    Ok(())
}

/// A verified manifest whose listed files do not fit the limits is refused before any of them
/// is written.
fn check_signed_limits(manifest: &Manifest, limits: Limits) -> Result<()> {
    if let Some(f) = manifest.files.iter().find(|f| f.size > limits.max_entry) {
        return Err(bad(format!(
            "the signed manifest lists {} at {} bytes, above the {}-byte entry limit (oversize entry)",
            f.path, f.size, limits.max_entry
        )));
    }
    let total = manifest
        .files
        .iter()
        .fold(0u64, |a, f| a.saturating_add(f.size));
    if total > limits.max_total {
        return Err(bad(format!(
            "the signed manifest lists {total} bytes of files, above the {}-byte limit",
            limits.max_total
        )));
    }
    Ok(())
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
    let (obs, report) = read_archive(archive, Some(&staging.path), limits, opts, progress)?;
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

    // --------------------------------------------------------------------------------------
    // Hostile streams (issue #8 items 2 and 3). The streams are generated on the fly and count
    // the bytes the reader pulls, so "refused before reading" is measured, not assumed.
    // --------------------------------------------------------------------------------------

    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, Ordering};

    enum Part {
        Bytes(Vec<u8>),
        /// `n` bytes of `b`, generated lazily.
        Fill(u8, u64),
    }

    /// A tar stream assembled from parts; counts what was read from it.
    struct Synth {
        parts: VecDeque<Part>,
        pos: usize,
        consumed: Arc<AtomicU64>,
    }

    impl Read for Synth {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            loop {
                let Some(front) = self.parts.front_mut() else {
                    return Ok(0);
                };
                let n = match front {
                    Part::Bytes(b) => {
                        let n = out.len().min(b.len() - self.pos);
                        out[..n].copy_from_slice(&b[self.pos..self.pos + n]);
                        self.pos += n;
                        if self.pos == b.len() {
                            self.parts.pop_front();
                            self.pos = 0;
                        }
                        n
                    }
                    Part::Fill(byte, left) => {
                        let n = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                        out[..n].fill(*byte);
                        *left -= n as u64;
                        if *left == 0 {
                            self.parts.pop_front();
                        }
                        n
                    }
                };
                if n > 0 {
                    self.consumed.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
            }
        }
    }

    /// Builds a tar stream header by header.
    #[derive(Default)]
    struct Tar {
        parts: Vec<Part>,
    }

    impl Tar {
        fn header(&mut self, name: &str, size: u64, kind: tar::EntryType) -> &mut Self {
            let mut h = tar::Header::new_ustar();
            h.set_path(name).unwrap();
            h.set_size(size);
            h.set_mode(0o644);
            h.set_entry_type(kind);
            h.set_cksum();
            self.parts.push(Part::Bytes(h.as_bytes().to_vec()));
            self
        }
        fn pad(&mut self, size: u64) -> &mut Self {
            let pad = (512 - (size % 512)) % 512;
            if pad > 0 {
                self.parts.push(Part::Bytes(vec![0; pad as usize]));
            }
            self
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.header(name, data.len() as u64, tar::EntryType::Regular);
            self.parts.push(Part::Bytes(data.to_vec()));
            self.pad(data.len() as u64)
        }
        /// A regular entry of `size` bytes of `byte`.
        fn filled(&mut self, name: &str, size: u64, byte: u8) -> &mut Self {
            self.header(name, size, tar::EntryType::Regular);
            self.parts.push(Part::Fill(byte, size));
            self.pad(size)
        }
        fn raw(&mut self, data: Vec<u8>) -> &mut Self {
            self.parts.push(Part::Bytes(data));
            self
        }
        fn stream(&mut self) -> (Box<dyn Read + Send>, Arc<AtomicU64>) {
            self.parts.push(Part::Bytes(vec![0; 1024]));
            let consumed = Arc::new(AtomicU64::new(0));
            let s = Synth {
                parts: std::mem::take(&mut self.parts).into(),
                pos: 0,
                consumed: Arc::clone(&consumed),
            };
            (Box::new(s), consumed)
        }
    }

    /// A signed bundle folder (two advisory files) and the keyring that trusts its key.
    struct Signed {
        dir: tempfile::TempDir,
        ring: stella_keys::Keyring,
    }

    impl Signed {
        fn new() -> Self {
            use stella_keys::Signer as _;
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("src");
            std::fs::create_dir_all(src.join("feeds")).unwrap();
            std::fs::write(src.join("feeds/a.json"), b"{\"a\":1}").unwrap();
            std::fs::write(src.join("feeds/b.json"), vec![b'b'; 3000]).unwrap();
            let spec = crate::spec::Spec::parse(
                "name: t\nversion: '1'\nissuer: i@example.org\nadvisories:\n  - path: feeds/a.json\n  - path: feeds/b.json\n",
                &src,
            )
            .unwrap();
            let out = dir.path().join("b");
            let opts = crate::create::CreateOptions {
                generated_at: time::OffsetDateTime::now_utc(),
                base: None,
                registry: Default::default(),
            };
            crate::create::create(&spec, &out, &opts, &crate::hash::NoProgress).unwrap();
            let key = stella_keys::FileKey::generate(stella_keys::Algorithm::Ed25519).unwrap();
            crate::sign::sign(
                &out.join(names::MANIFEST),
                &out.join(names::ENVELOPE),
                &[&key],
                time::OffsetDateTime::now_utc(),
                &crate::hash::NoProgress,
            )
            .unwrap();
            let ring = stella_keys::Keyring::new(vec![stella_keys::TrustedKey::unrestricted(
                key.public_key().clone(),
            )])
            .unwrap();
            Signed { dir, ring }
        }

        fn opts(&self) -> Options<'_> {
            Options {
                keyring: &self.ring,
                threshold: 1,
                now: time::OffsetDateTime::now_utc(),
                max_age: None,
                time_roots: None,
            }
        }

        fn bundle(&self) -> PathBuf {
            self.dir.path().join("b")
        }

        /// The metadata entries in pack order.
        fn metadata(&self, t: &mut Tar) {
            for name in names::METADATA {
                if let Some(b) = read_metadata_file(&self.bundle(), name).unwrap() {
                    t.file(name, &b);
                }
            }
        }

        fn content(&self, path: &str) -> Vec<u8> {
            std::fs::read(BundlePath::new(path).unwrap().under(&self.bundle())).unwrap()
        }

        fn read(&self, t: &mut Tar, staging: Option<&Path>) -> (Result<(Observed, Report)>, u64) {
            let (r, consumed) = t.stream();
            let res = read_entries(r, staging, Limits::default(), &self.opts(), &NoopProgress);
            (res, consumed.load(Ordering::Relaxed))
        }
    }

    struct NoopProgress;
    impl Progress for NoopProgress {}

    fn err_text<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn dir_bytes(dir: &Path) -> u64 {
        walk(dir)
            .unwrap()
            .iter()
            .map(|p| std::fs::metadata(dir.join(p)).unwrap().len())
            .sum()
    }

    /// Bytes of content (not metadata) files under `dir`.
    fn content_bytes(dir: &Path) -> u64 {
        walk(dir)
            .unwrap()
            .iter()
            .filter(|p| !names::is_metadata(p))
            .map(|p| std::fs::metadata(dir.join(p)).unwrap().len())
            .sum()
    }

    const BIG: u64 = 64 << 20;

    /// One PAX record: `LEN key=value\n`, LEN counting the whole record.
    fn pax_record(kv: &str) -> String {
        let body = format!(" {kv}\n");
        let mut len = body.len() + 1;
        loop {
            let total = len.to_string().len() + body.len();
            if total == len {
                return format!("{len}{body}");
            }
            len = total;
        }
    }

    #[test]
    fn the_honest_stream_reads_and_verifies() {
        let s = Signed::new();
        let staging = tempfile::tempdir().unwrap();
        let mut t = Tar::default();
        s.metadata(&mut t);
        let content: Vec<String> = walk(&s.bundle())
            .unwrap()
            .into_iter()
            .filter(|p| !names::is_metadata(p))
            .collect();
        assert!(content.len() > 2, "{content:?}");
        let mut bytes = 0;
        for p in &content {
            let data = s.content(p);
            bytes += data.len() as u64;
            t.file(p, &data);
        }
        let (r, _) = s.read(&mut t, Some(staging.path()));
        let (obs, report) = r.unwrap();
        assert_eq!(report.files_checked, content.len());
        assert_eq!(obs.files.len(), content.len());
        let meta: u64 = obs.metadata.values().map(|m| m.len() as u64).sum();
        assert_eq!(dir_bytes(staging.path()), bytes + meta);
    }

    // Regression (issue #8 item 2): a PAX `size` record made the tar crate read far more than
    // the ustar size the limits had checked.
    #[test]
    fn pax_headers_are_refused_before_their_records_apply() {
        let s = Signed::new();
        let record = pax_record(&format!("size={BIG}"));
        assert_eq!(record, format!("17 size={BIG}\n"));
        let mut t = Tar::default();
        t.header(
            "PaxHeaders/manifest.dsse",
            record.len() as u64,
            tar::EntryType::XHeader,
        )
        .raw(record.clone().into_bytes())
        .pad(record.len() as u64)
        .header(names::ENVELOPE, 10, tar::EntryType::Regular)
        .raw(vec![b'{'; 1]);
        t.parts.push(Part::Fill(b' ', BIG));
        let (r, consumed) = s.read(&mut t, None);
        let e = err_text(r);
        assert!(e.contains("PAX extended header (type x)"), "{e}");
        assert!(consumed < 64 * 1024, "read {consumed} bytes");
        // A global header is refused the same way.
        let mut t = Tar::default();
        t.header("pax_global_header", 20, tar::EntryType::XGlobalHeader)
            .raw(b"20 size=99999999999\n".to_vec())
            .pad(20);
        let e = err_text(s.read(&mut t, None).0);
        assert!(e.contains("PAX global header (type g)"), "{e}");
    }

    // Regression (issue #8 item 2): a GNU long name was read into memory whatever its size.
    #[test]
    fn gnu_long_names_and_links_are_refused_unread() {
        let s = Signed::new();
        for (kind, what) in [
            (tar::EntryType::GNULongName, "GNU long-name header (type L)"),
            (tar::EntryType::GNULongLink, "GNU long-link header (type K)"),
            (tar::EntryType::GNUSparse, "GNU sparse file (type S)"),
        ] {
            let mut t = Tar::default();
            t.header("././@LongLink", BIG, kind);
            t.parts.push(Part::Fill(b'a', BIG));
            t.pad(BIG).file(names::ENVELOPE, b"{}");
            let (r, consumed) = s.read(&mut t, None);
            let e = err_text(r);
            assert!(e.contains(what), "{e}");
            assert!(consumed < 64 * 1024, "{what}: read {consumed} bytes");
        }
    }

    // Regression (issue #8 item 3): content was written to disk before the signature was
    // checked; a small archive could fill the disk up to the 1 TiB entry limit.
    #[test]
    fn content_before_the_signed_manifest_is_neither_read_nor_written() {
        let s = Signed::new();
        let staging = tempfile::tempdir().unwrap();
        let mut t = Tar::default();
        t.filled("advisories/fill.bin", BIG, 0);
        s.metadata(&mut t);
        let (r, consumed) = s.read(&mut t, Some(staging.path()));
        let e = err_text(r);
        assert!(e.contains("comes before manifest.dsse"), "{e}");
        assert!(consumed < 64 * 1024, "read {consumed} bytes");
        assert_eq!(dir_bytes(staging.path()), 0);
    }

    #[test]
    fn content_is_held_to_the_signed_manifest_while_it_streams() {
        let s = Signed::new();
        let a = s.content("advisories/a.json");
        type Hostile = Box<dyn Fn(&mut Tar)>;
        let cases: Vec<(&str, Hostile, &str)> = vec![
            (
                "unlisted",
                Box::new(|t: &mut Tar| {
                    t.filled("advisories/fill.bin", BIG, 0);
                }),
                "unlisted entry \"advisories/fill.bin\"",
            ),
            (
                "larger than signed",
                Box::new(|t: &mut Tar| {
                    t.filled("advisories/a.json", BIG, b' ');
                }),
                "but the manifest lists 7",
            ),
            (
                "bad signature",
                Box::new(|_: &mut Tar| {}),
                "no signature verifies",
            ),
        ];
        for (what, hostile, needle) in cases {
            let staging = tempfile::tempdir().unwrap();
            let mut t = Tar::default();
            if what == "bad signature" {
                // The manifest is re-signed by nobody: flip a byte of manifest.dsse's signature.
                let env = read_metadata_file(&s.bundle(), names::ENVELOPE)
                    .unwrap()
                    .unwrap();
                let mut v: serde_json::Value = serde_json::from_slice(&env).unwrap();
                let sig = v["signatures"][0]["sig"].as_str().unwrap().to_string();
                let mut raw = stella_dsse::b64::decode(&sig).unwrap();
                raw[0] ^= 1;
                v["signatures"][0]["sig"] = stella_dsse::b64::encode(&raw).into();
                for name in names::METADATA {
                    if name == names::ENVELOPE {
                        t.file(name, &serde_json::to_vec(&v).unwrap());
                    } else if let Some(b) = read_metadata_file(&s.bundle(), name).unwrap() {
                        t.file(name, &b);
                    }
                }
                t.filled("advisories/b.json", 3000, b'b');
            } else {
                s.metadata(&mut t);
                hostile(&mut t);
            }
            t.file("advisories/a.json", &a);
            let (r, consumed) = s.read(&mut t, Some(staging.path()));
            let e = err_text(r);
            assert!(e.contains(needle), "{what}: {e}");
            assert!(consumed < 1 << 20, "{what}: read {consumed} bytes");
            assert_eq!(content_bytes(staging.path()), 0, "{what}: wrote content");
        }
        // Right size, wrong bytes: refused as soon as the entry ends, before the next one.
        let staging = tempfile::tempdir().unwrap();
        let mut t = Tar::default();
        s.metadata(&mut t);
        t.filled("advisories/a.json", 7, b'x');
        t.filled("advisories/b.json", BIG, b'b');
        let (r, consumed) = s.read(&mut t, Some(staging.path()));
        let e = err_text(r);
        assert!(e.contains("file advisories/a.json changed"), "{e}");
        assert!(consumed < 1 << 20, "read {consumed} bytes");
    }

    #[test]
    fn metadata_is_bounded_in_size_and_place() {
        let s = Signed::new();
        // Each under the per-file limit, together above the total.
        let mut t = Tar::default();
        for name in [names::ENVELOPE, names::MANIFEST, names::SUMS] {
            t.filled(name, crate::MAX_METADATA_BYTES, b' ');
        }
        let (r, consumed) = s.read(&mut t, None);
        let e = err_text(r);
        assert!(e.contains("metadata entries exceed"), "{e}");
        assert!(
            consumed <= crate::MAX_METADATA_TOTAL + (1 << 20),
            "read {consumed}"
        );
        // One above the per-file limit.
        let mut t = Tar::default();
        t.filled(names::ENVELOPE, crate::MAX_METADATA_BYTES + 1, b' ');
        let (r, consumed) = s.read(&mut t, None);
        assert!(err_text(r).contains("limit for bundle metadata"));
        assert!(consumed < 64 * 1024);
        // Metadata after content.
        let mut t = Tar::default();
        for name in names::METADATA {
            if name == names::PUBLIC_KEY {
                continue;
            }
            if let Some(b) = read_metadata_file(&s.bundle(), name).unwrap() {
                t.file(name, &b);
            }
        }
        t.file("advisories/a.json", &s.content("advisories/a.json"));
        t.file(names::PUBLIC_KEY, b"x");
        let e = err_text(s.read(&mut t, None).0);
        assert!(e.contains("comes after content entries"), "{e}");
        // Directories are never written by pack.
        let mut t = Tar::default();
        s.metadata(&mut t);
        t.header("advisories/", 0, tar::EntryType::Directory);
        let e = err_text(s.read(&mut t, None).0);
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    fn signed_sizes_must_fit_the_limits_before_anything_is_written() {
        let s = Signed::new();
        let biggest = walk(&s.bundle())
            .unwrap()
            .iter()
            .filter(|p| !names::is_metadata(p))
            .map(|p| s.content(p).len() as u64)
            .max()
            .unwrap();
        for (limits, needle) in [
            (
                Limits {
                    max_entry: biggest - 1,
                    max_total: 1 << 30,
                },
                "entry limit (oversize entry)",
            ),
            (
                Limits {
                    max_entry: 1 << 30,
                    max_total: biggest,
                },
                "bytes of files, above the",
            ),
        ] {
            let staging = tempfile::tempdir().unwrap();
            let mut t = Tar::default();
            s.metadata(&mut t);
            // The first content entry is small: the refusal comes from the signed list.
            t.file("advisories/a.json", &s.content("advisories/a.json"));
            let (r, _) = t.stream();
            let res = read_entries(r, Some(staging.path()), limits, &s.opts(), &NoopProgress);
            let e = err_text(res);
            assert!(e.contains(needle), "{needle}: {e}");
            assert_eq!(dir_bytes(staging.path()), 0);
        }
    }

    #[test]
    fn zstd_windows_above_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.tar.zst");
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
            .unwrap();
        enc.write_all(&[0u8; 4096]).unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let mut out = Vec::new();
        let err = open_bundle_stream(&path)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
        // The general reader (docker archives given to `create`) keeps libzstd's default.
        let mut out = Vec::new();
        open_decompressed(&path)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 4096);
    }
}
