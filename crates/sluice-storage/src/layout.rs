//! Every on-disk name and constant of a partition directory, in one place.
//!
//! A partition directory holds, for each segment, three files named by the segment's base offset
//! padded to 20 digits (so a directory listing sorts in offset order):
//!
//! | file                          | contents                                               |
//! |-------------------------------|--------------------------------------------------------|
//! | `00000000000000000000.log`      | record batches, back to back (see [`crate::codec`])    |
//! | `00000000000000000000.index`    | sparse offset index, 8-byte entries (see [`crate::index`]) |
//! | `00000000000000000000.timeindex`| sparse time index, 16-byte entries                     |
//!
//! plus `clean-shutdown`, present only between a clean close and the next open.

use std::path::{Path, PathBuf};

/// Extension of segment data files.
pub const LOG_EXTENSION: &str = "log";
/// Extension of sparse offset index files.
pub const INDEX_EXTENSION: &str = "index";
/// Extension of sparse time index files.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";
/// Marker written after a clean close; its presence lets the next open skip tail validation.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// Suffix of temporary files written by [`crate::store::write_atomic`].
pub const TEMP_SUFFIX: &str = ".tmp";
/// Number of digits in a segment file name.
pub const SEGMENT_NAME_DIGITS: usize = 20;

/// Current batch format version, stored in every batch header: records stored as the entries
/// of a read response, offsets included ([`crate::record_v3`]).
pub const BATCH_FORMAT_VERSION: u8 = 3;
/// The first batch format, with fixed-width record fields; still read, no longer written.
pub const BATCH_FORMAT_V1: u8 = 1;
/// The second batch format, records as their protobuf fields 1 to 4 ([`crate::record_v2`]);
/// still read, no longer written.
pub const BATCH_FORMAT_V2: u8 = 2;

fn segment_file(dir: &Path, base_offset: u64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// Path of the data file of the segment starting at `base_offset`.
pub fn log_path(dir: &Path, base_offset: u64) -> PathBuf {
    segment_file(dir, base_offset, LOG_EXTENSION)
}

/// Path of the offset index of the segment starting at `base_offset`.
pub fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    segment_file(dir, base_offset, INDEX_EXTENSION)
}

/// Path of the time index of the segment starting at `base_offset`.
pub fn time_index_path(dir: &Path, base_offset: u64) -> PathBuf {
    segment_file(dir, base_offset, TIME_INDEX_EXTENSION)
}

/// Parses a segment data file name (`<20 digits>.log`) into its base offset.
pub fn parse_log_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(LOG_EXTENSION)?.strip_suffix('.')?;
    if stem.len() != SEGMENT_NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_roundtrip_and_sort_by_offset() {
        let dir = Path::new("/p");
        let a = log_path(dir, 9);
        let b = log_path(dir, 10);
        assert!(a < b);
        let name = b.file_name().and_then(|n| n.to_str()).unwrap();
        assert_eq!(name, "00000000000000000010.log");
        assert_eq!(parse_log_name(name), Some(10));
    }

    #[test]
    fn foreign_names_are_not_segments() {
        for name in ["10.log", "0000000000000000001x.log", "00000000000000000010.index", "x"] {
            assert_eq!(parse_log_name(name), None, "{name}");
        }
    }
}
