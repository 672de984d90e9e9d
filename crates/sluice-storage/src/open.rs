//! Opening a partition directory: finding segments, checking indexes, recovering the tail.

use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use crate::config::LogConfig;
use crate::error::{Error, Result};
use crate::index::{IndexBuilder, IndexEntries, IndexHit, SealedIndex};
use crate::io::fsync_dir;
use crate::layout;
use crate::recovery::{self, ScanTarget, Tail};
use crate::segment::{SegmentIndex, SegmentView};
use crate::writer::{ActiveSegment, Counters, create_segment, open_segment_file};

/// What opening needs besides the directory.
pub(crate) struct OpenContext<'a> {
    pub dir: &'a Path,
    pub config: &'a LogConfig,
    pub counters: &'a Counters,
    pub now_ms: i64,
}

/// Base offsets of the segments in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("listing partition", dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing partition", dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(layout::parse_log_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn file_len(file: &fs::File, path: &Path) -> Result<u64> {
    Ok(file.metadata().map_err(|e| Error::io("reading segment metadata", path, e))?.len())
}

/// Finds and checks the segments in the directory (creating it, and a first segment, if needed).
pub(crate) fn load_segments(cx: &OpenContext<'_>) -> Result<(Vec<SegmentView>, ActiveSegment)> {
    let dir = cx.dir;
    fs::create_dir_all(dir).map_err(|e| Error::io("creating partition directory", dir, e))?;
    let marker = dir.join(layout::CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    let bases = list_segments(dir)?;
    cx.counters.recovery_unclean.store(!bases.is_empty() && !clean, Ordering::Relaxed);
    if clean {
        // Removed before any append, so a crash from here on is never mistaken for a clean stop.
        fs::remove_file(&marker).map_err(|e| Error::io("removing clean-shutdown marker", &marker, e))?;
        fsync_dir(dir)?;
    }
    let Some((&active_base, sealed_bases)) = bases.split_last() else {
        return Ok((Vec::new(), create_segment(dir, cx.config, cx.now_ms, 0)?));
    };
    let mut sealed = Vec::with_capacity(sealed_bases.len());
    for (i, &base) in sealed_bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied().unwrap_or(active_base);
        sealed.push(open_sealed(cx, base, next_base)?);
    }
    let active = open_active(cx, active_base, clean)?;
    Ok((sealed, active))
}

fn open_sealed(cx: &OpenContext<'_>, base: u64, next_base: u64) -> Result<SegmentView> {
    let dir = cx.dir;
    let path = layout::log_path(dir, base);
    let file = open_segment_file(&path, false)?;
    let len = file_len(&file, &path)?;
    let (index_path, time_path) = (layout::index_path(dir, base), layout::time_index_path(dir, base));
    let index = match SealedIndex::open(&index_path, &time_path, len)? {
        Some(index) => index,
        None => {
            tracing::warn!(segment = %path.display(), "index missing or damaged; rebuilding from the log");
            cx.counters.recovery_indexes_rebuilt.fetch_add(1, Ordering::Relaxed);
            let mut entries = IndexEntries::default();
            let mut builder = IndexBuilder::resume(&entries, cx.config.index_interval_bytes);
            let target = ScanTarget { file: &file, path: &path, base_offset: base, file_len: len };
            let scanned = recovery::scan(&target, IndexHit::START, &mut entries, &mut builder, Tail::MustBeIntact)?;
            cx.counters.recovery_scanned_bytes.fetch_add(scanned.scanned_bytes, Ordering::Relaxed);
            if scanned.next_offset > next_base {
                return Err(Error::Corrupt {
                    path,
                    position: len,
                    reason: format!(
                        "segment ends at offset {} but the next one starts at {next_base}",
                        scanned.next_offset
                    ),
                });
            }
            builder.finish(&mut entries);
            entries.write_files(&index_path, &time_path)?;
            SealedIndex::open(&index_path, &time_path, len)?.ok_or_else(|| Error::Corrupt {
                path: index_path.clone(),
                position: 0,
                reason: "rebuilt index does not validate".into(),
            })?
        }
    };
    let last_hit = index.last_hit();
    let mut view = SegmentView {
        base_offset: base,
        next_offset: next_base,
        len,
        max_timestamp: index.max_timestamp().unwrap_or(i64::MIN),
        file: Arc::new(file),
        path: Arc::from(path),
        index: SegmentIndex::Sealed(Arc::new(index)),
    };
    // The next segment's name says where this one should end; its own last batches say where it
    // does. Less means the segments between were lost: the log then has a gap, which readers
    // are told of, instead of this segment claiming offsets it does not hold.
    match view.end_from(last_hit) {
        Ok(end) if end > next_base => {
            return Err(Error::Corrupt {
                path: view.path.to_path_buf(),
                position: len,
                reason: format!("segment ends at offset {end} but the next one starts at {next_base}"),
            });
        }
        Ok(end) => view.next_offset = end,
        Err(e) => {
            tracing::warn!(segment = %view.path.display(), cause = %e, "cannot find where the segment ends; trusting the next segment's name")
        }
    }
    if view.next_offset < next_base {
        tracing::warn!(segment = %view.path.display(), missing_from = view.next_offset, missing_to = next_base, "offsets missing after this segment (a segment file was lost)");
    }
    Ok(view)
}

/// Opens the last segment. After a clean shutdown its index files are trusted and only the
/// batches after the last index entry are checked; otherwise the whole segment is validated and
/// cut at the first damaged batch.
fn open_active(cx: &OpenContext<'_>, base: u64, clean: bool) -> Result<ActiveSegment> {
    let dir = cx.dir;
    let path = layout::log_path(dir, base);
    let file = open_segment_file(&path, false)?;
    let len = file_len(&file, &path)?;
    let trusted = if clean {
        SealedIndex::open(&layout::index_path(dir, base), &layout::time_index_path(dir, base), len)?
    } else {
        None
    };
    let mut entries = trusted.map(|index| index.to_entries()).unwrap_or_default();
    let start = entries.offsets.last().map_or(IndexHit::START, |e| IndexHit::from(*e));
    let mut builder = IndexBuilder::resume(&entries, cx.config.index_interval_bytes);
    let target = ScanTarget { file: &file, path: &path, base_offset: base, file_len: len };
    let scanned = recovery::scan(&target, start, &mut entries, &mut builder, Tail::Truncate)?;
    cx.counters.recovery_scanned_bytes.fetch_add(scanned.scanned_bytes, Ordering::Relaxed);
    if let Some(reason) = &scanned.damage {
        tracing::warn!(
            segment = %path.display(),
            valid_bytes = scanned.valid_len,
            dropped_bytes = len - scanned.valid_len,
            reason = %reason,
            "cutting torn tail of the active segment"
        );
        file.set_len(scanned.valid_len).map_err(|e| Error::io("truncating torn tail", &path, e))?;
        cx.counters.recovery_cut_bytes.fetch_add(len - scanned.valid_len, Ordering::Relaxed);
        file.sync_all().map_err(|e| Error::io("syncing segment", &path, e))?;
    } else {
        // Space reserved ahead of the data before a crash is still allocated past the end.
        crate::writer::release_reserve(&file, &path, scanned.valid_len)?;
    }
    Ok(ActiveSegment {
        base_offset: base,
        next_offset: scanned.next_offset,
        len: scanned.valid_len,
        file: Arc::new(file),
        path: Arc::from(path),
        entries: Arc::new(RwLock::new(entries)),
        builder,
        created_ms: cx.now_ms,
        reserved_to: scanned.valid_len,
    })
}
