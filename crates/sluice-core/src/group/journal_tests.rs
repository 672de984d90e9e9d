use super::*;

fn entry(seq: u64, change: Change, offset: u64) -> Entry {
    Entry {
        seq,
        change,
        key: (TopicPartition::new(Arc::from("orders.dlq"), 0), offset),
        letter: DeadLettered {
            source: TopicPartition::new(Arc::from("orders"), 1),
            source_offset: offset + 100,
            at_ms: 5,
        },
    }
}

#[test]
fn appended_entries_read_back_in_order() -> Result<(), crate::error::Error> {
    let dir = tempfile::tempdir().map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    let path = dir.path().join("g.deadletters");
    let (mut journal, entries) = Journal::open(path.clone())?;
    assert!(entries.is_empty());
    journal.append(&[entry(0, Change::Added, 1), entry(1, Change::Added, 2)])?;
    journal.append(&[entry(2, Change::Redriven, 1)])?;
    let (_, entries) = Journal::open(path)?;
    assert_eq!(entries, vec![entry(0, Change::Added, 1), entry(1, Change::Added, 2), entry(2, Change::Redriven, 1)]);
    Ok(())
}

#[test]
fn a_torn_tail_is_cut_and_appends_continue_after_it() -> Result<(), crate::error::Error> {
    let dir = tempfile::tempdir().map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    let path = dir.path().join("g.deadletters");
    let (mut journal, _) = Journal::open(path.clone())?;
    journal.append(&[entry(0, Change::Added, 1), entry(1, Change::Added, 2)])?;
    let full = std::fs::read(&path).map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    std::fs::write(&path, &full[..full.len() - 7]).map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    let (mut journal, entries) = Journal::open(path.clone())?;
    assert_eq!(entries, vec![entry(0, Change::Added, 1)], "only the torn entry is lost");
    journal.append(&[entry(2, Change::Discarded, 1)])?;
    let (_, entries) = Journal::open(path)?;
    assert_eq!(entries, vec![entry(0, Change::Added, 1), entry(2, Change::Discarded, 1)]);
    Ok(())
}

#[test]
fn a_damaged_entry_in_the_middle_costs_only_itself() -> Result<(), crate::error::Error> {
    let mut bytes = MAGIC.to_vec();
    bytes.push(VERSION);
    for e in [entry(0, Change::Added, 1), entry(1, Change::Added, 2), entry(2, Change::Added, 3)] {
        encode(&e, &mut bytes);
    }
    let one = (bytes.len() - HEADER as usize) / 3;
    let flip = HEADER as usize + one + 20;
    bytes[flip] ^= 0xff;
    let loaded = parse(&bytes).map_err(crate::error::Error::Internal)?;
    assert_eq!(loaded.entries, vec![entry(0, Change::Added, 1), entry(2, Change::Added, 3)]);
    assert_eq!((loaded.skipped, loaded.torn), (vec![HEADER + one as u64], 0));
    assert!(parse(b"nope!").is_err(), "not a journal");
    Ok(())
}

#[test]
fn compaction_keeps_only_live_dead_letters() -> Result<(), crate::error::Error> {
    let dir = tempfile::tempdir().map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    let path = dir.path().join("g.deadletters");
    let (mut journal, _) = Journal::open(path.clone())?;
    let mut entries = Vec::new();
    for offset in 0..12_000u64 {
        entries.push(entry(offset * 2, Change::Added, offset));
        if offset != 7 {
            entries.push(entry(offset * 2 + 1, Change::Redriven, offset));
        }
    }
    journal.append(&entries)?;
    assert!(journal.wants_compaction());
    journal.compact()?;
    assert!(!journal.wants_compaction());
    let (mut journal, read) = Journal::open(path.clone())?;
    assert_eq!(read, vec![entry(0, Change::Added, 7)], "carried entries have sequence 0");
    journal.append(&[entry(24_000, Change::Discarded, 7)])?;
    let (_, read) = Journal::open(path)?;
    assert_eq!(read.len(), 2);
    Ok(())
}
