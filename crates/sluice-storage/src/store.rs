//! Atomic replacement of small files (metadata, snapshots).

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

#[cfg(test)]
mod tests {
    use super::*;

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
