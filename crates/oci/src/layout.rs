//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), the form
//! mirror bundles carry images in. Blobs are content-addressed and shared: a blob is written
//! once (to a temporary file in the same folder, renamed into place only after its digest
//! checked out), so a file at `blobs/sha256/<hex>` written by us always holds those bytes.
//! Reading for a push re-hashes everything anyway: a layout may come from elsewhere.
//!
//! `index.json` entries are annotated with `org.opencontainers.image.ref.name`; adding an
//! image replaces any entry with the same name and keeps every other entry as it was; the
//! file is canonical JSON with entries sorted by name (what mirror bundles write too).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::digest::{hash_file_upto, Digest, Hashed};
use crate::error::{Error, IoContext as _, Result};
use crate::media::{Descriptor, OCI_INDEX, REF_NAME};

/// Serialises `index.json` read-modify-writes within this process.
static INDEX_LOCK: Mutex<()> = Mutex::new(());

/// An OCI image layout on disk.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Open an existing layout (it must declare `imageLayoutVersion` 1.x).
    pub fn open(root: &Path) -> Result<Self> {
        let header = root.join("oci-layout");
        let bytes = read_limited(&header, 64 * 1024)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Integrity(format!("{}: {e}", header.display())))?;
        match v.get("imageLayoutVersion").and_then(Value::as_str) {
            Some(s) if s.starts_with("1.") => {}
            _ => {
                return Err(Error::Integrity(format!(
                    "{} does not declare imageLayoutVersion 1.x",
                    header.display()
                )))
            }
        }
        let l = Layout {
            root: root.to_path_buf(),
        };
        l.index()?;
        Ok(l)
    }

    /// Open a layout, creating an empty one if `root` holds none.
    pub fn create(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root.join("blobs").join("sha256")).at(root)?;
        let header = root.join("oci-layout");
        if !header.exists() {
            write_atomic(&header, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let empty = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
            write_atomic(&index, &canonical(&empty)?)?;
        }
        Layout::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(d.hex())
    }

    /// Is blob `d` present with `size` bytes? (Existence only; see the module doc.)
    pub fn has_blob(&self, d: &Digest, size: u64) -> bool {
        std::fs::metadata(self.blob_path(d)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// Read a small blob (manifest, index, config), checking size and digest.
    pub fn read_blob(&self, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
        if desc.size > max {
            return Err(Error::Integrity(format!(
                "layout blob {} is {} bytes, above the {max}-byte limit",
                desc.digest, desc.size
            )));
        }
        let path = self.blob_path(&desc.digest);
        let bytes = read_limited(&path, max).map_err(|e| self.lacks(desc, e))?;
        let got = Digest::of(&bytes);
        if got != desc.digest || bytes.len() as u64 != desc.size {
            return Err(self.mismatch(desc, got.to_string(), bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// A missing blob file is an integrity failure of the layout; other errors pass through.
    fn lacks(&self, desc: &Descriptor, e: Error) -> Error {
        match e.kind() {
            crate::ErrorKind::NotFound => Error::Integrity(format!(
                "layout {} lacks blob {}",
                self.root.display(),
                desc.digest
            )),
            _ => e,
        }
    }

    /// Hash blob `desc` on disk (blocking; large blobs take a while), reading no further
    /// than its descriptor's size and one byte: a larger file is refused on that.
    pub fn verify_blob(&self, desc: &Descriptor) -> Result<()> {
        let path = self.blob_path(&desc.digest);
        match hash_file_upto(&path, desc.size).map_err(|e| self.lacks(desc, e))? {
            Hashed::Whole(got, len) if got == desc.digest && len == desc.size => Ok(()),
            Hashed::Whole(got, len) => Err(self.mismatch(desc, got.to_string(), len)),
            Hashed::Longer(len) => Err(self.mismatch(
                desc,
                "a larger file not read past its expected size".into(),
                len,
            )),
        }
    }

    fn mismatch(&self, desc: &Descriptor, got: String, got_size: u64) -> Error {
        Error::DigestMismatch {
            what: format!("blob {}", desc.digest),
            source_name: format!("layout {}", self.root.display()),
            expected: desc.digest.to_string(),
            expected_size: desc.size,
            got,
            got_size,
        }
    }

    /// Store bytes as a blob (no-op if present).
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if !self.has_blob(&d, bytes.len() as u64) {
            write_atomic(&self.blob_path(&d), bytes)?;
        }
        Ok(d)
    }

    /// `index.json` as JSON.
    pub fn index(&self) -> Result<Value> {
        let path = self.root.join("index.json");
        let bytes = read_limited(&path, crate::media::MAX_MANIFEST_BYTES)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Integrity(format!("{}: {e}", path.display())))?;
        if !v.get("manifests").is_some_and(Value::is_array) {
            return Err(Error::Integrity(format!(
                "{} has no `manifests` list",
                path.display()
            )));
        }
        Ok(v)
    }

    /// The entries of `index.json`.
    pub fn entries(&self) -> Result<Vec<Descriptor>> {
        let what = format!("{}/index.json", self.root.display());
        self.index()?["manifests"]
            .as_array()
            .map(|a| a.iter().map(|v| Descriptor::from_value(v, &what)).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// The entry named `name` (`org.opencontainers.image.ref.name`).
    pub fn find_ref(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|e| e.annotations.get(REF_NAME).map(String::as_str) == Some(name)))
    }

    /// Add (or replace) the entry named `name`.
    pub fn set_ref(&self, desc: &Descriptor, name: &str) -> Result<()> {
        let _guard = INDEX_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.index()?;
        let mut entry = desc.clone();
        entry
            .annotations
            .insert(REF_NAME.to_string(), name.to_string());
        let list = index["manifests"]
            .as_array_mut()
            .ok_or_else(|| Error::Integrity("index.json has no manifests".into()))?;
        list.retain(|e| e["annotations"][REF_NAME].as_str() != Some(name));
        list.push(entry.to_value());
        // Sorted by name (unnamed entries first), so equal content gives equal bytes.
        list.sort_by(|a, b| {
            a["annotations"][REF_NAME]
                .as_str()
                .cmp(&b["annotations"][REF_NAME].as_str())
        });
        write_atomic(&self.root.join("index.json"), &canonical(&index)?)
    }
}

fn canonical(v: &Value) -> Result<Vec<u8>> {
    stella_dsse::jcs::to_vec(v).map_err(|e| Error::Input(format!("cannot serialise JSON: {e}")))
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).at(path)?;
    let mut buf = Vec::new();
    f.take(limit + 1).read_to_end(&mut buf).at(path)?;
    if buf.len() as u64 > limit {
        return Err(Error::Integrity(format!(
            "{} is larger than the {limit}-byte limit",
            path.display()
        )));
    }
    Ok(buf)
}

/// Write a file atomically (temporary file in the same folder, then rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .at(dir)?;
    tmp.write_all(bytes).at(tmp.path())?;
    tmp.as_file().sync_data().at(tmp.path())?;
    set_readable(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(unix)]
pub(crate) fn set_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).at(path)
}

#[cfg(not(unix))]
pub(crate) fn set_readable(_: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_write_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::create(dir.path()).unwrap();
        let d = l.write_blob(b"hello").unwrap();
        let desc = Descriptor::new("application/octet-stream", d, 5);
        assert_eq!(l.read_blob(&desc, 100).unwrap(), b"hello");
        l.verify_blob(&desc).unwrap();
        l.set_ref(&desc, "a").unwrap();
        l.set_ref(&desc, "b").unwrap();
        l.set_ref(&desc, "a").unwrap();
        assert_eq!(l.entries().unwrap().len(), 2);
        assert_eq!(l.find_ref("b").unwrap().unwrap().digest, d);
        std::fs::write(l.blob_path(&d), b"hellO").unwrap();
        let err = l.verify_blob(&desc).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        // Swapped for a sparse 64 GiB file: refused on its size, not read through.
        std::fs::File::create(l.blob_path(&d))
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let err = l.verify_blob(&desc).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert!(
            err.to_string()
                .contains("a larger file not read past its expected size (68719476736 bytes)"),
            "{err}"
        );
        let missing = Descriptor::new("x", Digest::of(b"nope"), 4);
        assert!(l
            .verify_blob(&missing)
            .unwrap_err()
            .to_string()
            .contains("lacks"));
        assert!(Layout::open(&dir.path().join("none")).is_err());
    }
}
