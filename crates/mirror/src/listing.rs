//! A bundle's file list read from its `manifest.json`: into a sink ([`read_file_list`]), or
//! as a stream of batches sent from a thread of its own ([`stream_files`], for lists merged
//! with another — `diff`'s two manifests, `pack`'s folder walk — or read twice, never held).

use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, IoContext as _, Result};
use crate::manifest::{FileEntry, Manifest, ManifestError, TypedFiles, Wire};
use crate::streamed::FileIndex;
use crate::BundlePath;
use serde::Deserialize as _;

/// Entries sent from a parsing thread at a time.
const BATCH: usize = 1024;

/// A bundle's file list from its `manifest.json` (`path`), and the digest of the bytes read:
/// the manifest without its `files` (left empty) and the files as a [`FileIndex`]. A manifest
/// above `limits.stream_above` is read as a stream ([`crate::streamed::parse_manifest`], never
/// held whole; its canonical form is left to `verify`), a smaller one as before
/// ([`Manifest::from_json`], same messages). Errors are input errors naming `path`.
pub fn read_file_list(
    path: &Path,
    limits: &crate::streamed::Limits,
) -> Result<(Manifest, FileIndex, crate::hash::Digest)> {
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
        let (m, list) =
            crate::streamed::parse_manifest(io::BufReader::with_capacity(256 << 10, &mut hashing))
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
    let mut list = FileIndex::default();
    for f in std::mem::take(&mut manifest.files) {
        list.push(f).map_err(shape)?;
    }
    Ok((manifest, list, digest))
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

/// The entries of an index, in path order, as manifest entries (an index holds only entries
/// typed as `FileEntry`, so every path parses again).
pub(crate) fn entries(ix: &FileIndex) -> impl Iterator<Item = FileEntry> + '_ {
    let mut files = ix.cursor();
    std::iter::from_fn(move || loop {
        let e = files.next_entry()?;
        if let Ok(path) = BundlePath::new(e.path) {
            return Some(FileEntry {
                path,
                size: e.size,
                sha256: e.sha256,
                media_type: e.media_type.to_string(),
            });
        }
    })
}

/// Read the manifest in file `path`, sending its files in path order to `tx`: the manifest
/// without its files, refused as [`read_file_list`] refuses it.
pub(crate) fn stream_files(
    path: &Path,
    limits: &crate::streamed::Limits,
    tx: std::sync::mpsc::SyncSender<Vec<FileEntry>>,
) -> Result<Manifest> {
    let len = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => m.len(),
        // read_file_list has the messages for the rest (not a regular file, not found).
        _ => 0,
    };
    if len <= limits.stream_above {
        // Small enough to hold (bounded by the limit, not by the file count): as before.
        let (m, ix, _) = read_file_list(path, limits)?;
        let mut batch = Vec::with_capacity(BATCH);
        for e in entries(&ix) {
            batch.push(e);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.send(full).is_err() {
                    return Ok(m);
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        return Ok(m);
    }
    if len > limits.max_manifest {
        return Err(Error::input(format!(
            "{} is {len} bytes, above the {}-byte limit for streamed bundle metadata",
            path.display(),
            limits.max_manifest
        )));
    }
    let shape = |e: ManifestError| Error::input(format!("{}: {e}", path.display()));
    let read = |sink: Sink| -> Result<(Manifest, Sink)> {
        let f = std::fs::File::open(path).at(path)?;
        SINK.with(|s| *s.borrow_mut() = Some(sink));
        let parsed = (|| {
            let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
                256 << 10,
                f,
            ));
            let m = Wire::<StreamSink>::deserialize(&mut de).map_err(ManifestError::Shape)?;
            de.end().map_err(ManifestError::Shape)?;
            m.with_files(TypedFiles::default()).0.into_manifest()
        })();
        let sink = SINK.with(|s| s.borrow_mut().take());
        let m = parsed.map_err(shape)?;
        let sink = sink.ok_or_else(|| Error::input(format!("{}: no files", path.display())))?;
        Ok((m, sink))
    };
    let (m, _) = read(Sink::Send {
        tx,
        batch: Vec::with_capacity(BATCH),
        order: Default::default(),
    })?;
    // A path both listed and removed is refused (the first such in `removed`): looked for in
    // a second pass, since `removed` follows `files` in a canonical manifest.
    if !m.removed.is_empty() {
        let (_, sink) = read(Sink::Removed {
            removed: m
                .removed
                .iter()
                .enumerate()
                .map(|(i, r)| (r.to_string(), i))
                .collect(),
            first: None,
        })?;
        if let Sink::Removed { first: Some(i), .. } = sink {
            if let Some(r) = m.removed.get(i) {
                return Err(shape(ManifestError::FileAndRemoved(r.to_string())));
            }
        }
    }
    Ok(m)
}

/// What the `files` array of a streamed manifest feeds (per thread: see [`SINK`]).
enum Sink {
    /// Check each entry as [`crate::streamed::FileIndex`] does and send it on, in batches.
    Send {
        tx: std::sync::mpsc::SyncSender<Vec<FileEntry>>,
        batch: Vec<FileEntry>,
        order: crate::manifest::PathOrder,
    },
    /// Find the first entry of `removed` (path → position) that is also listed.
    Removed {
        removed: std::collections::HashMap<String, usize>,
        first: Option<usize>,
    },
}

thread_local! {
    /// The sink of the manifest this thread is parsing (`Wire` types its `files` with
    /// `Deserialize`, which takes no state).
    static SINK: std::cell::RefCell<Option<Sink>> = const { std::cell::RefCell::new(None) };
}

/// The `files` array, fed entry by entry to this thread's [`SINK`].
struct StreamSink;

impl<'de> serde::Deserialize<'de> for StreamSink {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StreamSink;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of file entries")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<StreamSink, A::Error> {
                use serde::de::Error as _;
                let mut sink = SINK
                    .with(|s| s.borrow_mut().take())
                    .ok_or_else(|| A::Error::custom("files listed twice"))?;
                let r = feed(&mut sink, &mut seq);
                SINK.with(|s| *s.borrow_mut() = Some(sink));
                r.map(|()| StreamSink)
            }
        }
        d.deserialize_seq(V)
    }
}

fn feed<'de, A: serde::de::SeqAccess<'de>>(
    sink: &mut Sink,
    seq: &mut A,
) -> std::result::Result<(), A::Error> {
    use serde::de::Error as _;
    match sink {
        Sink::Send { tx, batch, order } => {
            while let Some(e) = seq.next_element::<FileEntry>()? {
                crate::manifest::check_next(order, &e).map_err(A::Error::custom)?;
                batch.push(e);
                if batch.len() == BATCH {
                    let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
                    // The merge stops receiving only once it has everything it wants.
                    let _ = tx.send(full);
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(std::mem::take(batch));
            }
        }
        Sink::Removed { removed, first } => {
            while let Some(e) = seq.next_element::<FileEntry>()? {
                if let Some(&i) = removed.get(e.path.as_str()) {
                    *first = Some(first.map_or(i, |f| f.min(i)));
                }
            }
        }
    }
    Ok(())
}
