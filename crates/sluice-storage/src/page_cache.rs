//! Segment reads that may only copy from the page cache.
//!
//! A read handed to tokio's blocking pool pays two thread wake-ups, which on this project's VMs
//! cost tens of microseconds: as much as copying a few hundred KiB. Readers that are close behind
//! the writer (the usual case past the tail cache) find their data in the page cache, so the
//! broker first tries such a read on the calling thread with `preadv2(RWF_NOWAIT)`, which copies
//! only what is cached and fails with `EAGAIN` instead of waiting for the disk. Any failure of a
//! cache-only read (data not cached, damage, a kernel or filesystem without `RWF_NOWAIT`) just
//! sends the caller to the ordinary read, which then decides the result; so a cache-only read
//! never returns anything the ordinary read would not.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustix::io::{Errno, ReadWriteFlags};

/// Whether a read may wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// An ordinary read.
    Disk,
    /// Only what the page cache holds; anything else fails with [`io::ErrorKind::WouldBlock`].
    CacheOnly,
}

/// The error of a cache-only read that would have waited.
pub(crate) fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

/// Fills `buf` from `position` of `file`.
pub(crate) fn read_exact_at(file: &File, mut buf: &mut [u8], mut position: u64, wait: Wait) -> io::Result<()> {
    if wait == Wait::Disk {
        return file.read_exact_at(buf, position);
    }
    while !buf.is_empty() {
        let read = match rustix::io::preadv2(file, &mut [io::IoSliceMut::new(buf)], position, ReadWriteFlags::NOWAIT) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(read) => read,
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Err(would_block()),
            Err(other) => return Err(other.into()),
        };
        buf = &mut buf[read..];
        position += read as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_cached_file_reads_the_same_either_way() -> Result<(), Box<dyn std::error::Error>> {
        let mut file = tempfile::tempfile()?;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data)?;
        let mut disk = vec![0u8; 150_000];
        read_exact_at(&file, &mut disk, 1_000, Wait::Disk)?;
        let mut cached = vec![0u8; 150_000];
        match read_exact_at(&file, &mut cached, 1_000, Wait::CacheOnly) {
            Ok(()) => assert_eq!(cached, disk),
            // A filesystem without RWF_NOWAIT: callers fall back, as they do for uncached data.
            Err(e) if e.raw_os_error() == Some(Errno::OPNOTSUPP.raw_os_error()) => {}
            Err(e) => return Err(e.into()),
        }
        assert_eq!(&disk[..], &data[1_000..151_000]);
        Ok(())
    }

    #[test]
    fn reading_past_the_end_fails_in_both_modes() -> Result<(), Box<dyn std::error::Error>> {
        let mut file = tempfile::tempfile()?;
        file.write_all(&[7u8; 100])?;
        let mut buf = [0u8; 50];
        assert!(read_exact_at(&file, &mut buf, 80, Wait::Disk).is_err());
        assert!(read_exact_at(&file, &mut buf, 80, Wait::CacheOnly).is_err());
        Ok(())
    }
}
