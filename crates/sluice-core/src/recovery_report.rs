//! What start-up recovery did, summed over every partition and group: logged once at info
//! level when the broker opens, and kept for the `sluice_recovery_*` metrics, so a start after
//! a crash never looks like one after a clean stop.

use sluice_storage::Recovery;

/// Totals of one broker start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Partitions opened.
    pub partitions: u64,
    /// Of those, partitions that had not been closed cleanly (their tail was validated).
    pub unclean_partitions: u64,
    /// Bytes of segment data read and verified.
    pub scanned_bytes: u64,
    /// Torn tails cut, and their bytes.
    pub tails_cut: u64,
    /// Bytes of torn tails cut.
    pub cut_bytes: u64,
    /// Index files rebuilt from the log.
    pub indexes_rebuilt: u64,
    /// Offset ranges missing because a segment file was lost.
    pub missing_ranges: u64,
    /// Batch headers read to rebuild idempotent producer state.
    pub batches_replayed: u64,
    /// Group positions found past their partition's end and moved to it.
    pub group_positions_moved: u64,
}

impl RecoveryReport {
    /// Adds one partition's recovery.
    pub fn add_partition(&mut self, recovery: &Recovery, batches_replayed: u64) {
        self.partitions += 1;
        self.unclean_partitions += u64::from(recovery.unclean);
        self.scanned_bytes += recovery.scanned_bytes;
        self.tails_cut += u64::from(recovery.cut_bytes > 0);
        self.cut_bytes += recovery.cut_bytes;
        self.indexes_rebuilt += recovery.indexes_rebuilt;
        self.missing_ranges += recovery.missing_ranges;
        self.batches_replayed += batches_replayed;
    }

    /// The one info-level line about it.
    pub fn log(&self) {
        let what =
            if self.unclean_partitions > 0 { "recovered after an unclean stop" } else { "opened after a clean stop" };
        tracing::info!(
            partitions = self.partitions,
            unclean_partitions = self.unclean_partitions,
            scanned_bytes = self.scanned_bytes,
            tails_cut = self.tails_cut,
            cut_bytes = self.cut_bytes,
            indexes_rebuilt = self.indexes_rebuilt,
            missing_ranges = self.missing_ranges,
            batches_replayed = self.batches_replayed,
            group_positions_moved = self.group_positions_moved,
            "{what}"
        );
    }
}
