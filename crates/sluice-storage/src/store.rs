//! Atomic replacement of small files (metadata, snapshots), and the checksum line that lets
//! a reader of such a text file tell a damaged one from a good one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::fsync_dir;
use crate::layout::TEMP_SUFFIX;

/// Replaces `path` with `contents` so that after a crash the file holds either the old or the
/// new contents, never a mix: write a temporary file, fsync it, rename it over `path`, fsync the
/// directory.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(TEMP_SUFFIX);
    let temp = dir.join(temp_name);
    let mut file = File::create(&temp).map_err(|e| Error::io("creating", &temp, e))?;
    file.write_all(contents).map_err(|e| Error::io("writing", &temp, e))?;
    file.sync_all().map_err(|e| Error::io("syncing", &temp, e))?;
    drop(file);
    fs::rename(&temp, path).map_err(|e| Error::io("renaming into place", path, e))?;
    fsync_dir(dir)
}

/// Prefix of the last line of a checksummed text file.
const CHECKSUM_PREFIX: &str = "crc32=";

/// `body` (which must end with a newline) followed by the line `crc32=<8 hex digits>`: the
/// CRC-32 of every byte of `body`.
pub fn with_checksum(body: &str) -> String {
    format!("{body}{CHECKSUM_PREFIX}{:08x}\n", crc32fast::hash(body.as_bytes()))
}

/// What [`verify_checksum`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked<'a> {
    /// The checksum line matches: the body, without it.
    Intact(&'a str),
    /// There is no checksum line (a file written before checksums were kept).
    Unchecked(&'a str),
    /// The checksum line does not match the body; the text says how.
    Damaged(String),
}

/// Splits off and checks the checksum line written by [`with_checksum`].
pub fn verify_checksum(text: &str) -> Checked<'_> {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let (body, last) = match trimmed.rfind('\n') {
        Some(at) => (&text[..=at], &trimmed[at + 1..]),
        None => ("", trimmed),
    };
    let Some(stored) = last.strip_prefix(CHECKSUM_PREFIX) else { return Checked::Unchecked(text) };
    let computed = crc32fast::hash(body.as_bytes());
    match u32::from_str_radix(stored, 16) {
        Ok(stored) if stored == computed && last.len() == CHECKSUM_PREFIX.len() + 8 => Checked::Intact(body),
        Ok(stored) => Checked::Damaged(format!("checksum mismatch: stored {stored:08x}, contents give {computed:08x}")),
        Err(_) => Checked::Damaged(format!("checksum line '{last}' is not 8 hex digits")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksummed_text_roundtrips_and_any_changed_byte_is_detected() {
        let body = "version=2\npartitions=2\n";
        let text = with_checksum(body);
        assert_eq!(verify_checksum(&text), Checked::Intact(body));
        for at in 0..text.len() - 1 {
            let mut bytes = text.clone().into_bytes();
            bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
            let changed = String::from_utf8(bytes).unwrap();
            assert!(
                !matches!(verify_checksum(&changed), Checked::Intact(_)),
                "change at {at} went unnoticed: {changed}"
            );
        }
        assert_eq!(verify_checksum(body), Checked::Unchecked(body));
    }

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
