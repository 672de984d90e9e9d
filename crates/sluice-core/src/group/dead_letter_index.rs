//! A group's dead letters not yet redriven or discarded, with the counts DescribeGroup and the
//! metrics need kept up to date (so nothing scans a million dead letters under the group
//! lock), and the changes not yet written to the group's dead-letter journal
//! ([`super::journal`]).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::journal::{Change, Entry};
use super::types::{DeadLettered, TopicPartition};

/// A dead letter's key: its partition and offset in the dead-letter topic.
pub type Key = (TopicPartition, u64);

#[derive(Debug, Default)]
pub(crate) struct DeadLetterIndex {
    letters: BTreeMap<Key, DeadLettered>,
    per_topic: BTreeMap<Arc<str>, u64>,
    /// How many dead letters were dead-lettered at each time (for the oldest).
    ages: BTreeMap<i64, u32>,
    /// Changes not yet in the journal, in order.
    unsaved: Vec<Entry>,
    /// Sequence number of the next change.
    next_seq: u64,
}

impl DeadLetterIndex {
    fn add(&mut self, key: Key, letter: DeadLettered) {
        let topic = key.0.topic.clone();
        let at_ms = letter.at_ms;
        if let Some(old) = self.letters.insert(key, letter) {
            self.forget_counts(&old, &topic);
        }
        *self.per_topic.entry(topic).or_default() += 1;
        *self.ages.entry(at_ms).or_default() += 1;
    }

    fn forget_counts(&mut self, letter: &DeadLettered, topic: &Arc<str>) {
        if let Some(count) = self.per_topic.get_mut(topic) {
            *count -= 1;
            if *count == 0 {
                self.per_topic.remove(topic);
            }
        }
        if let Some(count) = self.ages.get_mut(&letter.at_ms) {
            *count -= 1;
            if *count == 0 {
                self.ages.remove(&letter.at_ms);
            }
        }
    }

    fn remove(&mut self, key: &Key, change: Option<Change>) -> Option<DeadLettered> {
        let letter = self.letters.remove(key)?;
        self.forget_counts(&letter, &key.0.topic);
        if let Some(change) = change {
            self.record(change, key.clone(), letter.clone());
        }
        Some(letter)
    }

    fn record(&mut self, change: Change, key: Key, letter: DeadLettered) {
        // Sequence 0 marks entries compaction carried over.
        let seq = self.next_seq.max(1);
        self.unsaved.push(Entry { seq, change, key, letter });
        self.next_seq = seq + 1;
    }

    /// A new dead letter.
    pub fn insert(&mut self, key: Key, letter: DeadLettered) {
        self.record(Change::Added, key.clone(), letter.clone());
        self.add(key, letter);
    }

    /// Takes a dead letter out to redrive it.
    pub fn redrive(&mut self, key: &Key) -> Option<DeadLettered> {
        self.remove(key, Some(Change::Redriven))
    }

    /// Takes a dead letter out without redriving it (discarded, or deleted by retention).
    pub fn discard(&mut self, key: &Key) -> Option<DeadLettered> {
        self.remove(key, Some(Change::Discarded))
    }

    /// Applies a change read back from the journal (not journaled again).
    pub fn replay(&mut self, entry: &Entry) {
        match entry.change {
            Change::Added => self.add(entry.key.clone(), entry.letter.clone()),
            Change::Redriven | Change::Discarded => {
                self.remove(&entry.key, None);
            }
        }
        self.next_seq = self.next_seq.max(entry.seq + 1);
    }

    /// Changes to write, taken out; the caller gives them back with [`Self::unsave`] if the
    /// write fails.
    pub fn take_unsaved(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.unsaved)
    }

    /// Changes whose write failed, to be written first next time.
    pub fn unsave(&mut self, mut entries: Vec<Entry>) {
        entries.append(&mut self.unsaved);
        self.unsaved = entries;
    }

    /// Sequence number of the next change: every change before it is in the journal once the
    /// unsaved ones are written.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Moves the sequence past `seq` (the group file names the journal position it reflects).
    pub fn advance_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    pub fn len(&self) -> usize {
        self.letters.len()
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.letters.contains_key(key)
    }

    /// Dead letters in the dead-letter topic `topic`.
    pub fn depth(&self, topic: &str) -> u64 {
        self.per_topic.get(topic).copied().unwrap_or(0)
    }

    /// When the oldest dead letter was dead-lettered.
    pub fn oldest_ms(&self) -> Option<i64> {
        self.ages.keys().next().copied()
    }

    /// Up to `limit` keys in `topic`'s partition `partition` from `first` to `last`.
    pub fn keys_in(&self, topic: &Arc<str>, partition: u32, first: u64, last: u64, limit: usize) -> Vec<Key> {
        let tp = TopicPartition::new(topic.clone(), partition);
        self.letters.range((tp.clone(), first)..=(tp, last.max(first))).take(limit).map(|(k, _)| k.clone()).collect()
    }

    /// Up to `limit` keys in `topic`, in order, after `after` (from the start if `None`).
    pub fn keys_of_topic(&self, topic: &Arc<str>, after: Option<&Key>, limit: usize) -> Vec<Key> {
        let from = match after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Included((TopicPartition::new(topic.clone(), 0), 0)),
        };
        self.letters
            .range((from, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|(tp, _)| tp.topic == *topic)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The dead-letter partitions that hold dead letters, found by jumping from one to the next.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut found = Vec::new();
        let mut after: Option<TopicPartition> = None;
        loop {
            let next = match &after {
                None => self.letters.keys().next(),
                Some(tp) => self
                    .letters
                    .range((Bound::Excluded((tp.clone(), u64::MAX)), Bound::Unbounded))
                    .next()
                    .map(|(k, _)| k),
            };
            let Some((tp, _)) = next else { return found };
            found.push(tp.clone());
            after = Some(tp.clone());
        }
    }

    /// Every dead letter, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &DeadLettered)> + '_ {
        self.letters.iter()
    }

    /// Discards the dead letters of `tp` below `start` (retention deleted them); returns how many.
    pub fn prune_below(&mut self, tp: &TopicPartition, start: u64) -> usize {
        let keys: Vec<Key> = self.letters.range((tp.clone(), 0)..(tp.clone(), start)).map(|(k, _)| k.clone()).collect();
        for key in &keys {
            self.discard(key);
        }
        keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, partition: u32, offset: u64) -> Key {
        (TopicPartition::new(Arc::from(topic), partition), offset)
    }

    fn letter(offset: u64, at_ms: i64) -> DeadLettered {
        DeadLettered { source: TopicPartition::new(Arc::from("orders"), 0), source_offset: offset, at_ms }
    }

    #[test]
    fn counts_follow_inserts_redrives_and_discards() {
        let mut index = DeadLetterIndex::default();
        index.insert(key("a.dlq", 0, 1), letter(10, 50));
        index.insert(key("a.dlq", 1, 2), letter(11, 40));
        index.insert(key("b.dlq", 0, 3), letter(12, 60));
        assert_eq!((index.len(), index.depth("a.dlq"), index.depth("b.dlq"), index.oldest_ms()), (3, 2, 1, Some(40)));
        assert_eq!(index.redrive(&key("a.dlq", 1, 2)).map(|l| l.source_offset), Some(11));
        assert!(index.redrive(&key("a.dlq", 1, 2)).is_none(), "only once");
        assert_eq!((index.depth("a.dlq"), index.oldest_ms()), (1, Some(50)));
        assert_eq!(index.partitions().len(), 2);
        assert_eq!(index.keys_of_topic(&Arc::from("a.dlq"), None, 10), vec![key("a.dlq", 0, 1)]);
        assert_eq!(index.keys_of_topic(&Arc::from("a.dlq"), Some(&key("a.dlq", 0, 1)), 10), vec![]);
        assert_eq!(index.prune_below(&TopicPartition::new(Arc::from("b.dlq"), 0), 4), 1);
        let changes: Vec<(u64, Change)> = index.take_unsaved().iter().map(|e| (e.seq, e.change)).collect();
        assert_eq!(
            changes,
            vec![
                (1, Change::Added),
                (2, Change::Added),
                (3, Change::Added),
                (4, Change::Redriven),
                (5, Change::Discarded)
            ]
        );
        assert_eq!(index.next_seq(), 6);
    }

    #[test]
    fn replay_rebuilds_without_journaling_again() {
        let mut source = DeadLetterIndex::default();
        source.insert(key("a.dlq", 0, 1), letter(10, 50));
        source.insert(key("a.dlq", 0, 2), letter(11, 51));
        source.discard(&key("a.dlq", 0, 1));
        let mut index = DeadLetterIndex::default();
        for entry in source.take_unsaved() {
            index.replay(&entry);
        }
        assert_eq!((index.len(), index.next_seq(), index.take_unsaved().len()), (1, 4, 0));
        assert!(index.contains(&key("a.dlq", 0, 2)));
    }
}
