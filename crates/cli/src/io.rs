//! File helpers: bounded reads, streaming SHA-256, atomic writes, passwords.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, Result};
use zeroize::Zeroizing;

use crate::exit::{fail, NOT_FOUND, USAGE};

/// Read a whole input file (or `-` for stdin), refusing files above `limit` bytes.
pub(crate) fn read_limited(path: &str, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == "-" {
        std::io::stdin()
            .take(limit + 1)
            .read_to_end(&mut buf)
            .context("reading standard input")?;
    } else {
        let f = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {path}"))?;
    }
    if buf.len() as u64 > limit {
        return Err(fail(
            USAGE,
            format!("{path} is larger than the {limit}-byte limit"),
        ));
    }
    Ok(buf)
}

pub(crate) fn open_error(path: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        fail(NOT_FOUND, format!("{path}: no such file"))
    } else {
        anyhow::Error::new(e).context(format!("cannot open {path}"))
    }
}

/// SHA-256 of a file, streamed in 1 MiB chunks.
pub(crate) fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut f =
        std::fs::File::open(path).map_err(|e| open_error(&path.display().to_string(), e))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// Write `data` to `path` atomically (temp file in the same folder, then rename), or to
/// stdout for `-`. `private` files get mode 0600.
pub(crate) fn write_atomic(path: &str, data: &[u8], private: bool) -> Result<()> {
    if path == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(data)?;
        out.flush()?;
        return Ok(());
    }
    let target = Path::new(path);
    // A device or FIFO (`-o /dev/null`, process substitution) is written straight into:
    // renaming a temp file over it would replace the device node with a regular file.
    if std::fs::metadata(target).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(target)
            .with_context(|| format!("cannot open {path} for writing"))?;
        f.write_all(data)
            .with_context(|| format!("writing {path}"))?;
        return Ok(());
    }
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".stella-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    if !private {
        set_mode(tmp.path(), 0o644)?;
    }
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {path}"))?;
    tmp.persist(target)
        .map_err(|e| anyhow::Error::new(e.error).context(format!("cannot write {path}")))?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> Result<()> {
    Ok(())
}

/// The key password: `COSIGN_PASSWORD` if set (empty allowed), else a prompt on the terminal.
pub(crate) fn password(confirm: bool) -> Result<Zeroizing<String>, stella_keys::KeyError> {
    if let Ok(p) = std::env::var("COSIGN_PASSWORD") {
        return Ok(Zeroizing::new(p));
    }
    if !std::io::stdin().is_terminal() {
        return Err(stella_keys::KeyError::Password(
            "COSIGN_PASSWORD is not set and there is no terminal to ask on".into(),
        ));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Enter password for private key: ")
            .map_err(|e| stella_keys::KeyError::Password(e.to_string()))?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Enter password for private key again: ")
                .map_err(|e| stella_keys::KeyError::Password(e.to_string()))?,
        );
        if first.as_bytes() != second.as_bytes() {
            return Err(stella_keys::KeyError::Password(
                "passwords do not match".into(),
            ));
        }
    }
    Ok(first)
}
