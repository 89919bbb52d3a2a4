//! Compression codecs of bundle archives: the parallel, deterministic gzip writer
//! ([`ParGzWriter`]), the pinned zstd encoder `pack` uses, and the readers that undo either
//! (detected by magic bytes) with a bounded zstd window and a read-ahead thread.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use crate::error::{IoContext as _, Result};

/// Archive compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// From the first bytes of a stream: the gzip or zstd magic (`None`: not compressed, or
    /// fewer bytes than the magic).
    pub(crate) fn from_magic(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

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
pub(crate) fn zstd_workers() -> u32 {
    u32::try_from(crate::hash::threads().clamp(2, 4)).unwrap_or(2)
}

/// The zstd encoder `pack` uses: level 3, pinned job layout, content checksum.
pub(crate) fn zstd_encoder<W: Write>(
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

// ------------------------------------------------------------------------------------------
// Parallel gzip
// ------------------------------------------------------------------------------------------

type Job = (u64, Vec<u8>, bool);
type Done = (u64, io::Result<(Vec<u8>, u32, usize)>, bool);

/// A gzip writer that compresses independent 1 MiB blocks on several threads (the pigz
/// scheme without the cross-block dictionary) and writes one standard gzip member: no file
/// name, zero mtime, XFL 0, OS 255. Segments that are already compressed (random-looking) are
/// stored rather than deflated. The output depends only on the input bytes.
pub(crate) struct ParGzWriter<W: Write + Send + 'static> {
    buf: Vec<u8>,
    seq: u64,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParGzWriter<W> {
    pub(crate) fn new(inner: W, threads: usize) -> Self {
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
    pub(crate) fn finish(mut self) -> io::Result<W> {
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
pub(crate) fn open_decompressed(path: &Path) -> Result<Box<dyn Read + Send>> {
    open_decompressed_with(path, None).map(|(r, _)| r)
}

/// [`open_decompressed`] for bundle archives: the zstd window is capped at
/// `ZSTD_WINDOW_LOG_MAX`, so decompression memory stays bounded whatever the frame asks for;
/// and the bytes of the file the decompressor has read so far, counted.
pub(crate) fn open_bundle_stream(path: &Path) -> Result<(Box<dyn Read + Send>, ReadCount)> {
    open_decompressed_with(path, Some(ZSTD_WINDOW_LOG_MAX))
}

/// Bytes read from an archive's file (or stream) before decompression, counted as the
/// decompressor reads them (on whichever thread): how the archive reader tells what a
/// compressed stream expands to against what it took.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadCount(Arc<std::sync::atomic::AtomicU64>);

impl ReadCount {
    /// `r`, counting into a new count.
    pub(crate) fn wrap<R: Read>(r: R) -> (Counting<R>, ReadCount) {
        let count = ReadCount::default();
        (
            Counting {
                inner: r,
                count: count.clone(),
            },
            count,
        )
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A reader that adds what it reads to a [`ReadCount`].
pub(crate) struct Counting<R> {
    inner: R,
    count: ReadCount,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn open_decompressed_with(
    path: &Path,
    window_log_max: Option<u32>,
) -> Result<(Box<dyn Read + Send>, ReadCount)> {
    let f = File::open(path).at(path)?;
    let (f, count) = ReadCount::wrap(f);
    let r = decompress(BufReader::with_capacity(1 << 20, f), window_log_max).at(path)?;
    Ok((r, count))
}

/// Undo gzip or zstd compression, detected by magic bytes (plain tar passes through).
pub(crate) fn decompress<R: io::BufRead + Send + 'static>(
    mut r: R,
    window_log_max: Option<u32>,
) -> io::Result<Box<dyn Read + Send>> {
    let magic = r
        .fill_buf()?
        .get(..4)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Ok(match Compression::from_magic(&magic) {
        Some(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Some(Compression::Zstd) => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
            if let Some(log) = window_log_max {
                d.window_log_max(log)?;
            }
            Box::new(d)
        }
        None => Box::new(r),
    })
}

/// Decompresses on its own thread, a few 1 MiB chunks ahead of the reader, so decompression
/// and hashing run on different cores. Memory: at most 4 chunks in flight.
pub(crate) struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    pub(crate) fn new(mut inner: Box<dyn Read + Send>) -> Self {
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

/// Largest zstd window the reader accepts (2^25 = 32 MiB: `zstd -19` uses 2^23, pack 2^21).
/// libzstd allocates the window a frame header asks for, so without this cap one header
/// could take 128 MiB (libzstd's own default limit) or, raised, gigabytes.
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 25;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::PIPE_CHUNK;

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
}
