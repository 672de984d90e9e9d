//! Which member owns which partition: a pure, deterministic, sticky assignment.
//!
//! Per topic (in name order), the partitions are split over the members that subscribe to it
//! so that counts differ by at most one. The members already holding the most partitions of
//! the topic get the larger shares, each member keeps as many of its current partitions as its
//! share allows, and only the rest move. A member therefore never loses one partition of a
//! topic and gains another in the same rebalance: partitions that do not have to move, don't.
//! Ties go to the member with the least load so far (across topics), then the lowest id, so
//! many single-partition topics still spread over the group.

use std::collections::{BTreeMap, BTreeSet};

use super::{MemberId, TopicPartition};

/// The new owner of every partition of every subscribed topic.
///
/// `previous` is the current assignment; `members` maps each live member to the topics it
/// subscribes to; `partition_counts` holds every existing topic's partition count.
pub fn assign(
    previous: &BTreeMap<TopicPartition, MemberId>,
    members: &BTreeMap<MemberId, BTreeSet<String>>,
    partition_counts: &BTreeMap<String, u32>,
) -> BTreeMap<TopicPartition, MemberId> {
    let mut result = BTreeMap::new();
    let mut load: BTreeMap<MemberId, u32> = members.keys().map(|&m| (m, 0)).collect();
    for (topic, &count) in partition_counts {
        let eligible: Vec<MemberId> =
            members.iter().filter(|(_, topics)| topics.contains(topic)).map(|(&m, _)| m).collect();
        if eligible.is_empty() || count == 0 {
            continue;
        }
        let topic_key: std::sync::Arc<str> = std::sync::Arc::from(topic.as_str());
        let mut held: BTreeMap<MemberId, Vec<u32>> = eligible.iter().map(|&m| (m, Vec::new())).collect();
        for partition in 0..count {
            let key = TopicPartition::new(topic_key.clone(), partition);
            if let Some(owner) = previous.get(&key)
                && let Some(list) = held.get_mut(owner)
            {
                list.push(partition);
            }
        }
        let members_n = eligible.len() as u32;
        let (base, extra) = (count / members_n, count % members_n);
        let mut by_claim = eligible.clone();
        by_claim.sort_by_key(|m| {
            (std::cmp::Reverse(held.get(m).map_or(0, Vec::len)), load.get(m).copied().unwrap_or(0), *m)
        });
        let quota: BTreeMap<MemberId, u32> =
            by_claim.iter().enumerate().map(|(i, &m)| (m, base + u32::from((i as u32) < extra))).collect();

        let mut taken = vec![false; count as usize];
        let mut given: BTreeMap<MemberId, u32> = eligible.iter().map(|&m| (m, 0)).collect();
        for (&member, partitions) in &held {
            let share = quota.get(&member).copied().unwrap_or(0) as usize;
            for &partition in partitions.iter().take(share) {
                taken[partition as usize] = true;
                result.insert(TopicPartition::new(topic_key.clone(), partition), member);
                *given.entry(member).or_default() += 1;
            }
        }
        let mut fill_order = eligible.clone();
        fill_order.sort_by_key(|m| (load.get(m).copied().unwrap_or(0), *m));
        let mut cursor = 0;
        for partition in (0..count).filter(|&p| !taken[p as usize]) {
            while cursor < fill_order.len() {
                let member = fill_order[cursor];
                if given.get(&member).copied().unwrap_or(0) < quota.get(&member).copied().unwrap_or(0) {
                    break;
                }
                cursor += 1;
            }
            let Some(&member) = fill_order.get(cursor) else { break };
            result.insert(TopicPartition::new(topic_key.clone(), partition), member);
            *given.entry(member).or_default() += 1;
        }
        for (member, n) in given {
            *load.entry(member).or_default() += n;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(list: &[(u64, &[&str])]) -> BTreeMap<MemberId, BTreeSet<String>> {
        list.iter().map(|(id, topics)| (MemberId(*id), topics.iter().map(|t| t.to_string()).collect())).collect()
    }

    fn counts_of(result: &BTreeMap<TopicPartition, MemberId>) -> BTreeMap<MemberId, usize> {
        let mut counts = BTreeMap::new();
        for member in result.values() {
            *counts.entry(*member).or_default() += 1;
        }
        counts
    }

    #[test]
    fn a_third_member_takes_one_partition_from_each_of_the_others() {
        let counts = BTreeMap::from([("orders".to_string(), 6)]);
        let two = assign(&BTreeMap::new(), &members(&[(1, &["orders"]), (2, &["orders"])]), &counts);
        assert_eq!(counts_of(&two).values().copied().collect::<Vec<_>>(), vec![3, 3]);
        let three = assign(&two, &members(&[(1, &["orders"]), (2, &["orders"]), (3, &["orders"])]), &counts);
        assert_eq!(counts_of(&three).values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        let moved = three.iter().filter(|(tp, owner)| two.get(*tp) != Some(*owner)).count();
        assert_eq!(moved, 2, "only the new member's two partitions move");
    }

    #[test]
    fn single_partition_topics_spread_over_the_group() {
        let counts: BTreeMap<String, u32> = ["a", "b", "c", "d"].iter().map(|t| (t.to_string(), 1)).collect();
        let all: &[&str] = &["a", "b", "c", "d"];
        let result = assign(&BTreeMap::new(), &members(&[(1, all), (2, all)]), &counts);
        assert_eq!(counts_of(&result).values().copied().collect::<Vec<_>>(), vec![2, 2]);
    }

    #[test]
    fn members_only_get_topics_they_subscribe_to() {
        let counts = BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2), ("c".to_string(), 1)]);
        let result = assign(&BTreeMap::new(), &members(&[(1, &["a"]), (2, &["a", "b"])]), &counts);
        for (tp, owner) in &result {
            if &*tp.topic == "b" {
                assert_eq!(*owner, MemberId(2));
            }
        }
        assert!(!result.keys().any(|tp| &*tp.topic == "c"), "nobody subscribes to c");
        assert_eq!(result.len(), 4);
    }

    /// A member id with, per topic, whether it subscribes.
    type MemberPicks = Vec<(u64, Vec<bool>)>;

    fn arbitrary_case() -> impl Strategy<Value = (BTreeMap<String, u32>, MemberPicks, MemberPicks)> {
        let counts = proptest::collection::btree_map("[a-c]", 0u32..9, 1..4);
        let member = (0u64..6, proptest::collection::vec(any::<bool>(), 3));
        (counts, proptest::collection::vec(member.clone(), 0..5), proptest::collection::vec(member, 1..5))
    }

    fn to_members(topics: &BTreeMap<String, u32>, list: &[(u64, Vec<bool>)]) -> BTreeMap<MemberId, BTreeSet<String>> {
        list.iter()
            .map(|(id, picks)| {
                let chosen = topics.keys().zip(picks).filter(|(_, pick)| **pick).map(|(t, _)| t.clone()).collect();
                (MemberId(*id), chosen)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn every_partition_has_one_eligible_owner_balanced_and_sticky((counts, before, after) in arbitrary_case()) {
            let before = to_members(&counts, &before);
            let after = to_members(&counts, &after);
            let previous = assign(&BTreeMap::new(), &before, &counts);
            let result = assign(&previous, &after, &counts);
            for (topic, &count) in &counts {
                let eligible: Vec<MemberId> =
                    after.iter().filter(|(_, t)| t.contains(topic)).map(|(&m, _)| m).collect();
                let mut per_member: BTreeMap<MemberId, BTreeSet<u32>> =
                    eligible.iter().map(|&m| (m, BTreeSet::new())).collect();
                for partition in 0..count {
                    let owner = result.get(&TopicPartition::new(topic.as_str().into(), partition));
                    match owner {
                        Some(owner) => {
                            prop_assert!(eligible.contains(owner), "owner subscribes to the topic");
                            per_member.entry(*owner).or_default().insert(partition);
                        }
                        None => prop_assert!(eligible.is_empty(), "a subscribed partition is always owned"),
                    }
                }
                let sizes: Vec<usize> = per_member.values().map(BTreeSet::len).collect();
                if let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max()) {
                    prop_assert!(max - min <= 1, "balanced per topic: {sizes:?}");
                }
                for (member, now) in &per_member {
                    let had: BTreeSet<u32> = (0..count)
                        .filter(|&p| previous.get(&TopicPartition::new(topic.as_str().into(), p)) == Some(member))
                        .collect();
                    prop_assert!(had.is_subset(now) || now.is_subset(&had),
                        "member {member:?} both lost and gained partitions of {topic}: {had:?} -> {now:?}");
                }
            }
            let again = assign(&result, &after, &counts);
            prop_assert_eq!(again, result, "a balanced assignment is left alone");
        }
    }
}
