//! Files in memory and the archives made of them, byte for byte the same
//! from the same inputs: entries sorted by path, every time stamp set to
//! `SOURCE_DATE_EPOCH`, owner root, modes fixed, no gzip name or time.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};

/// One file of an artifact: where it goes (relative, `/`-separated), its
/// bytes and its mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct File {
    pub(crate) path: String,
    pub(crate) data: Vec<u8>,
    pub(crate) mode: u32,
}

impl File {
    pub(crate) fn new(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self { path: path.into(), data: data.into(), mode: 0o644 }
    }

    pub(crate) fn executable(path: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self { mode: 0o755, ..Self::new(path, data) }
    }

    /// The same file under `dir/`.
    pub(crate) fn under(&self, dir: &str) -> Self {
        Self { path: format!("{dir}/{}", self.path), ..self.clone() }
    }
}

/// `sha256:`-less lower-case hex SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// gzip at the best level with no file name and time 0 in the header
/// (`gzip -9n`).
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzBuilder::new().mtime(0).write(Vec::new(), Compression::best());
    enc.write_all(data)?;
    Ok(enc.finish()?)
}

/// Every directory the files need, parents first, each once, as `a/`,
/// `a/b/`.
fn directories(files: &[File]) -> Vec<String> {
    let mut dirs: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let parts: Vec<&str> = f.path.split('/').collect();
            (1..parts.len()).map(move |n| format!("{}/", parts[..n].join("/")))
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// A ustar archive of `files` and their directories, sorted by path.
pub(crate) fn tar(files: &[File], mtime: u64) -> Result<Vec<u8>> {
    let mut files: Vec<&File> = files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    let owned: Vec<File> = files.iter().map(|f| (*f).clone()).collect();
    let mut entries: Vec<(String, Option<&File>)> = directories(&owned).into_iter().map(|d| (d, None)).collect();
    entries.extend(files.iter().map(|f| (f.path.clone(), Some(*f))));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, file) in entries {
        match file {
            None => builder.append_data(&mut header(tar::EntryType::Directory, 0o755, 0), &path, std::io::empty()),
            Some(f) => builder.append_data(&mut header(tar::EntryType::Regular, f.mode, f.data.len() as u64), &path, f.data.as_slice()),
        }
        .with_context(|| format!("adding {path} to an archive"))?;
    }
    Ok(builder.into_inner()?)
}

/// Writes `files` under `root` on disk with their modes, for a packager
/// that reads a directory.
pub(crate) fn write_tree(root: &Path, files: &[File]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for f in files {
        let path = root.join(&f.path);
        let parent = path.parent().context("a file has a directory")?;
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        std::fs::write(&path, &f.data).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (the civil-from-days algorithm of
/// Howard Hinnant's date library).
pub(crate) fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64 + 719_468;
    let secs = epoch % 86_400;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        // `date -u -d @1795000000 +%FT%TZ`
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn archives_depend_only_on_their_contents() {
        let a = [File::executable("x/bin/q", "binary"), File::new("x/doc/README", "read me")];
        let b = [a[1].clone(), a[0].clone()];
        let one = gzip(&tar(&a, 1000).unwrap()).unwrap();
        assert_eq!(one, gzip(&tar(&b, 1000).unwrap()).unwrap(), "the order files are given in does not matter");
        assert_ne!(one, gzip(&tar(&a, 1001).unwrap()).unwrap(), "the time stamp is in the archive");
        let mut listed = Vec::new();
        let bytes = tar(&a, 1000).unwrap();
        for e in tar::Archive::new(bytes.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            listed.push((e.path().unwrap().display().to_string(), e.header().mode().unwrap(), e.header().mtime().unwrap()));
        }
        let want = [("x/", 0o755), ("x/bin/", 0o755), ("x/bin/q", 0o755), ("x/doc/", 0o755), ("x/doc/README", 0o644)];
        assert_eq!(listed, want.iter().map(|(p, m)| ((*p).to_owned(), *m, 1000)).collect::<Vec<_>>());
    }
}
