//! The readers' snapshot of a partition: its segments and readable range.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::segment::SegmentView;

/// An immutable snapshot of the log, published by the writer after each change.
#[derive(Debug, Clone)]
pub(crate) struct LogView {
    /// Sealed segments in offset order.
    pub sealed: Arc<Vec<SegmentView>>,
    /// The active segment (always present, possibly empty).
    pub active: SegmentView,
}

impl LogView {
    /// First readable offset.
    pub fn start_offset(&self) -> u64 {
        self.sealed.first().map_or(self.active.base_offset, |s| s.base_offset)
    }

    /// Offset the next record will get.
    pub fn end_offset(&self) -> u64 {
        self.active.next_offset
    }

    /// All segments in offset order.
    pub fn segments(&self) -> impl Iterator<Item = &SegmentView> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    /// The error for an offset outside `start..end`.
    pub fn out_of_range(&self, requested: u64) -> Error {
        Error::OffsetOutOfRange { requested, start: self.start_offset(), end: self.end_offset() }
    }

    /// The segment holding `offset`, which must be in `start..end`.
    pub fn segment_for(&self, offset: u64) -> Result<&SegmentView> {
        if offset < self.start_offset() || offset >= self.end_offset() {
            return Err(self.out_of_range(offset));
        }
        if offset >= self.active.base_offset {
            return Ok(&self.active);
        }
        let idx = self.sealed.partition_point(|s| s.base_offset <= offset);
        let segment = idx.checked_sub(1).and_then(|i| self.sealed.get(i)).ok_or_else(|| self.out_of_range(offset))?;
        if offset >= segment.next_offset {
            let to = self.segments().nth(idx).map_or(self.end_offset(), |next| next.base_offset);
            return Err(Error::DataLoss {
                from: segment.next_offset,
                to,
                path: None,
                position: None,
                reason: "the segment holding these offsets is missing".into(),
            });
        }
        Ok(segment)
    }

    /// Offset ranges between segments that no segment holds (a segment file was lost), in order.
    pub fn gaps(&self) -> Vec<MissingRange> {
        self.sealed
            .iter()
            .zip(self.segments().skip(1))
            .filter(|(segment, next)| segment.next_offset < next.base_offset)
            .map(|(segment, next)| MissingRange { from: segment.next_offset, to: next.base_offset })
            .collect()
    }
}

/// Offsets `from..to` of a partition that no segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingRange {
    /// First missing offset.
    pub from: u64,
    /// First offset present again.
    pub to: u64,
}
