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
use crate::from_base::SortedPaths;
use crate::fs::walk_each;
use crate::hash::Progress;
use crate::manifest::Manifest;
use crate::names;
use crate::path::{file_mode, ustar_split, BundlePath};
use crate::streamed::{FileIndex, FilesSink};

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
/// `stream_above` is read as a stream into a [`FileIndex`] (tests take that path with small
/// bundles). Either way the folder is walked once as a stream, each file looked up in the
/// index (~100 B per file), and only paths and sizes (16 B + the path per file) are kept while
/// the archive is written: no lists of the folder's paths.
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
    // Only paths (front-coded) and sizes are kept of the manifest's files, from the start: at
    // 1,000,000 files of ~86-byte paths the full index (digests, media types) took ~142 MB.
    let (manifest, list, _) = read_list::<PackList>(&dir.join(names::MANIFEST), limits)?;
    let kind = manifest.kind;
    if !dir.join(names::ENVELOPE).is_file() {
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
    // One walk, one flag per listed file: no list of the folder's paths.
    let mut present = vec![false; list.paths.len()];
    walk_each(dir, &mut |p| {
        if names::is_metadata(p) {
            return Ok(());
        }
        match list.paths.find(p) {
            Some(i) => {
                present[i] = true;
                Ok(())
            }
            None => Err(Error::input(format!(
                "unlisted file {p} in {}: a bundle folder holds only the files its manifest lists",
                dir.display()
            ))),
        }
    })?;
    if kind != crate::Kind::Thin {
        if let Some(i) = present.iter().position(|here| !*here) {
            let mut paths = list.paths.cursor();
            for _ in 0..i {
                paths.next_path();
            }
            let path = paths.next_path().unwrap_or("");
            return Err(Error::input(format!(
                "file {path} is missing from {}",
                dir.display()
            )));
        }
    }
    // Thin: absent files come from the base; only those present go into the archive.
    let (paths, mut sizes) = if present.iter().all(|here| *here) {
        (list.paths, list.sizes)
    } else {
        let (mut paths, mut sizes) = (SortedPaths::default(), Vec::new());
        let mut all = list.paths.cursor();
        for (here, size) in present.iter().zip(&list.sizes) {
            let Some(p) = all.next_path() else { break };
            if *here {
                paths.push(p);
                sizes.push(*size);
            }
        }
        (paths, sizes)
    };
    drop(present);
    sizes.shrink_to_fit();
    let entries = Entries {
        meta,
        paths: paths.done(),
        sizes,
    };
    let total: u64 =
        entries.meta.iter().map(|e| e.1).sum::<u64>() + entries.sizes.iter().sum::<u64>();
    let count = entries.meta.len() + entries.sizes.len();

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
/// present (a thin bundle lacks those its base carries), their paths front-coded in manifest
/// order ([`SortedPaths`]: ~13 B per advisory path) and their sizes (8 B).
struct Entries {
    meta: Vec<(String, u64)>,
    paths: SortedPaths,
    sizes: Vec<u64>,
}

impl Entries {
    /// Each entry's (bundle path, size), in archive order.
    fn each(&self, f: &mut dyn FnMut(&str, u64) -> Result<()>) -> Result<()> {
        for (p, s) in &self.meta {
            f(p, *s)?;
        }
        let mut c = self.paths.cursor();
        let mut sizes = self.sizes.iter();
        while let (Some(p), Some(s)) = (c.next_path(), sizes.next()) {
            f(p, *s)?;
        }
        Ok(())
    }
}

/// A bundle's file list from its `manifest.json` (`path`), and the digest of the bytes read:
/// the manifest without its `files` (left empty) and the files as a [`FileIndex`]. A manifest
/// above `limits.stream_above` is read as a stream ([`crate::streamed::parse_manifest`], never
/// held whole; its canonical form is left to `verify`), a smaller one as before
/// ([`Manifest::from_json`], same messages). Errors are input errors naming `path`.
pub fn read_file_list(
    path: &Path,
    limits: &crate::streamed::Limits,
) -> Result<(Manifest, FileIndex, crate::hash::Digest)> {
    read_list(path, limits)
}

/// [`read_file_list`] into any [`FilesSink`] (`pack` keeps a [`PackList`]).
pub(crate) fn read_list<T: FilesSink>(
    path: &Path,
    limits: &crate::streamed::Limits,
) -> Result<(Manifest, T, crate::hash::Digest)> {
    let (f, len) = match crate::fs::open_regular(path, crate::fs::Links::Refuse).at(path)? {
        crate::fs::Opened::File(f, len) => (f, len),
        crate::fs::Opened::NotRegular => {
            return Err(Error::input(format!(
                "{}: not a regular file",
                path.display()
            )))
        }
        crate::fs::Opened::Missing => return Err(Error::NotFound(path.to_path_buf())),
    };
    let shape =
        |e: crate::manifest::ManifestError| Error::input(format!("{}: {e}", path.display()));
    if len > limits.stream_above {
        if len > limits.max_manifest {
            return Err(Error::input(format!(
                "{} is {len} bytes, above the {}-byte limit for streamed bundle metadata",
                path.display(),
                limits.max_manifest
            )));
        }
        let mut hashing = HashingReader {
            inner: f,
            hasher: crate::hash::Hasher::new(),
        };
        let (m, list) = crate::streamed::parse_manifest_into::<T>(io::BufReader::with_capacity(
            256 << 10,
            &mut hashing,
        ))
        .map_err(shape)?;
        // The parser stops at the end of the JSON value: hash what may follow it too.
        io::copy(&mut hashing, &mut io::sink()).at(path)?;
        return Ok((m, list, hashing.hasher.finish()));
    }
    let mbytes = crate::fs::read_to_limit(f, len, crate::MAX_METADATA_BYTES)
        .at(path)?
        .ok_or_else(|| crate::fs::larger_than(path, crate::MAX_METADATA_BYTES))?;
    let digest = crate::hash::Digest::of(&mbytes);
    let mut manifest = Manifest::from_json(&mbytes).map_err(shape)?;
    drop(mbytes);
    let mut list = T::default();
    for f in std::mem::take(&mut manifest.files) {
        list.push_entry(f).map_err(shape)?;
    }
    Ok((manifest, list, digest))
}

/// What `pack` keeps of a manifest's files: their paths, front-coded, and sizes, in path
/// order (~16 B + the path's new bytes per file, not a [`FileIndex`]'s 56 B + the path).
#[derive(Default)]
pub(crate) struct PackList {
    paths: SortedPaths,
    sizes: Vec<u64>,
}

impl FilesSink for PackList {
    fn push_wire(
        &mut self,
        w: &crate::manifest::WireEntryRef<'_>,
    ) -> std::result::Result<(), crate::manifest::ManifestError> {
        w.check(self.paths.last())?;
        self.paths.push(&w.path);
        self.sizes.push(w.size);
        Ok(())
    }

    fn push_entry(
        &mut self,
        f: crate::manifest::FileEntry,
    ) -> std::result::Result<(), crate::manifest::ManifestError> {
        // Checked already (`Manifest::from_json`).
        self.paths.push(&f.path);
        self.sizes.push(f.size);
        Ok(())
    }

    fn lists(&self, path: &str) -> bool {
        self.paths.find(path).is_some()
    }
}

/// Hashes what is read through it.
struct HashingReader<R> {
    inner: R,
    hasher: crate::hash::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
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

    #[test]
    fn entries_come_back_in_order_with_their_sizes() {
        let mut listed: Vec<(String, u64)> = vec![
            ("advisories/è.json".into(), 1),
            ("advisories/é.json".into(), 2),
            ("advisories/é/x".into(), 0),
            (format!("{}/{}", "d".repeat(150), "f".repeat(90)), 1 << 40),
        ];
        for i in 0..1000u64 {
            listed.push((format!("advisories/osv/{:03}/OSV-{i:07}.json", i % 13), i));
        }
        listed.sort();
        let meta = vec![
            ("manifest.dsse".to_string(), 7),
            ("manifest.json".to_string(), 9),
        ];
        let mut paths = SortedPaths::default();
        for (p, _) in &listed {
            paths.push(p);
        }
        let entries = Entries {
            meta: meta.clone(),
            paths: paths.done(),
            sizes: listed.iter().map(|e| e.1).collect(),
        };
        let mut seen = Vec::new();
        entries
            .each(&mut |p, s| {
                seen.push((p.to_string(), s));
                Ok(())
            })
            .unwrap();
        let want: Vec<(String, u64)> = meta.into_iter().chain(listed).collect();
        assert_eq!(seen, want);
        // The first error ends the walk and is returned.
        let mut n = 0;
        let e = entries.each(&mut |_, _| {
            n += 1;
            if n == 3 {
                return Err(Error::input("stop"));
            }
            Ok(())
        });
        assert_eq!(e.unwrap_err().to_string(), "stop");
        assert_eq!(n, 3);
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
