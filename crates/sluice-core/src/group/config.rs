//! A group's policy (reset, ack timeout, retries, dead-letter topic, ordering, damage handling,
//! delivery mode) lives with the group: set when it is created (by `create_group`, or by the
//! join that creates it) and changed only by `alter_group_config`. A join to an existing group
//! that names a policy value the group does not have is refused with
//! [`Error::PolicyConflict`], so no member runs under a policy it did not expect and no member
//! changes it for the others.

use std::time::Duration;

use super::types::{DeliveryMode, GroupSettings, PolicyChange};
use super::{ACK_TIMEOUT_RANGE, check_range};
use crate::broker::Broker;
use crate::error::{Error, Result};

/// Checks a policy change on its own. `alter` allows the clearing values (0 attempts, an empty
/// dead-letter topic), which a join may not use.
pub(crate) fn validate(change: &PolicyChange, topics: &[String], alter: bool) -> Result<()> {
    if let Some(timeout) = change.ack_timeout {
        check_range("ack_timeout", timeout, ACK_TIMEOUT_RANGE)?;
    }
    if change.retry.max_attempts == Some(0) && !alter {
        return Err(Error::InvalidArgument("max_delivery_attempts must be at least 1".into()));
    }
    if let Some(multiplier) = change.retry.multiplier
        && !(1.0..=100.0).contains(&multiplier)
    {
        return Err(Error::InvalidArgument(format!("backoff_multiplier must be between 1 and 100, got {multiplier}")));
    }
    if let (Some(initial), Some(max)) = (change.retry.initial, change.retry.max)
        && initial > max
    {
        return Err(Error::InvalidArgument(format!("backoff_initial ({initial:?}) is above backoff_max ({max:?})")));
    }
    if let Some(template) = change.dead_letter_topic.as_deref().filter(|t| !t.is_empty() || !alter) {
        let sample = if topics.is_empty() { vec!["topic".to_owned()] } else { topics.to_vec() };
        for topic in &sample {
            crate::topic_name::validate(&template.replace("{topic}", topic))
                .map_err(|e| Error::InvalidArgument(format!("dead_letter_topic: {e}")))?;
        }
    }
    Ok(())
}

/// Refuses settings that do not go together.
pub(crate) fn check_combination(settings: &GroupSettings) -> Result<()> {
    if settings.strict_ordering && settings.delivery == DeliveryMode::Shared {
        return Err(Error::InvalidArgument(
            "strict ordering needs partition-owned delivery: shared delivery gives each record to any member and keeps no order".into(),
        ));
    }
    Ok(())
}

/// Applies a change to settings.
pub(crate) fn apply(settings: &mut GroupSettings, change: &PolicyChange) {
    if let Some(reset) = change.reset {
        settings.reset = reset;
    }
    if let Some(timeout) = change.ack_timeout {
        settings.ack_timeout = timeout;
    }
    if let Some(max) = change.retry.max_attempts {
        settings.max_attempts = (max != 0).then_some(max);
    }
    let retry = &mut settings.retry;
    retry.initial = change.retry.initial.unwrap_or(retry.initial);
    retry.multiplier = change.retry.multiplier.unwrap_or(retry.multiplier);
    retry.max = change.retry.max.unwrap_or(retry.max);
    if let Some(template) = &change.dead_letter_topic {
        settings.dead_letter_topic = (!template.is_empty()).then(|| template.clone());
    }
    if let Some(strict) = change.strict_ordering {
        settings.strict_ordering = strict;
    }
    if let Some(skip) = change.skip_damaged {
        settings.skip_damaged = skip;
    }
    if let Some(delivery) = change.delivery {
        settings.delivery = delivery;
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// The fields where `change` asks for something `settings` does not have, as
/// "field: group has X, join asks Y".
pub(crate) fn differences(settings: &GroupSettings, change: &PolicyChange) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |field: &str, group: String, asked: String| {
        if group != asked {
            out.push(format!("{field}: the group has {group}, the join asks for {asked}"));
        }
    };
    if let Some(reset) = change.reset {
        differ("reset", format!("{:?}", settings.reset).to_lowercase(), format!("{reset:?}").to_lowercase());
    }
    if let Some(timeout) = change.ack_timeout {
        differ("ack_timeout", ms(settings.ack_timeout), ms(timeout));
    }
    if let Some(max) = change.retry.max_attempts {
        let group = settings.max_attempts.map_or("the topic's or broker's limit".to_owned(), |n| n.to_string());
        differ("max_delivery_attempts", group, max.to_string());
    }
    if let Some(initial) = change.retry.initial {
        differ("backoff_initial", ms(settings.retry.initial), ms(initial));
    }
    if let Some(multiplier) = change.retry.multiplier {
        differ("backoff_multiplier", settings.retry.multiplier.to_string(), multiplier.to_string());
    }
    if let Some(max) = change.retry.max {
        differ("backoff_max", ms(settings.retry.max), ms(max));
    }
    if let Some(template) = &change.dead_letter_topic {
        let group = settings.dead_letter_topic.clone().unwrap_or_else(|| "the topic's or broker's".into());
        differ("dead_letter_topic", group, template.clone());
    }
    if let Some(strict) = change.strict_ordering {
        let name = |strict: bool| if strict { "strict" } else { "relaxed" }.to_owned();
        differ("ordering", name(settings.strict_ordering), name(strict));
    }
    if let Some(skip) = change.skip_damaged {
        let name = |skip: bool| if skip { "skip" } else { "stop" }.to_owned();
        differ("on_damage", name(settings.skip_damaged), name(skip));
    }
    if let Some(delivery) = change.delivery {
        differ("delivery", delivery_name(settings.delivery).into(), delivery_name(delivery).into());
    }
    out
}

/// How a delivery mode is written in messages and by the CLI.
pub fn delivery_name(mode: DeliveryMode) -> &'static str {
    match mode {
        DeliveryMode::PartitionOwned => "partition-owned",
        DeliveryMode::Shared => "shared",
    }
}

/// Refuses a join to an existing group whose policy differs from what the join names.
pub(crate) fn check_join(group: &str, settings: &GroupSettings, change: &PolicyChange) -> Result<()> {
    let differences = differences(settings, change);
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::PolicyConflict { group: group.to_owned(), differences: differences.join("; ") })
}

impl Broker {
    /// Creates a group with a policy (unset fields take the broker's defaults) before any
    /// member joins. Durable when it returns. Refused with [`Error::GroupExists`] if it exists.
    pub async fn create_group(&self, id: &str, change: &PolicyChange) -> Result<GroupSettings> {
        self.check_open()?;
        crate::topic_name::validate_group(id)?;
        validate(change, &[], false)?;
        let mut settings = self.config().groups.settings();
        apply(&mut settings, change);
        check_combination(&settings)?;
        let group = self.groups().create(id, settings.clone()).ok_or_else(|| Error::GroupExists(id.to_owned()))?;
        group.flush().await?;
        tracing::info!(group = %id, ?settings, "group created");
        Ok(settings)
    }

    /// Changes a group's policy; returns the new one. Leases already granted keep their ack
    /// deadline; everything after uses the new policy. The delivery mode changes only while no
    /// member is connected. Durable when it returns.
    pub async fn alter_group_config(&self, id: &str, change: &PolicyChange) -> Result<GroupSettings> {
        self.check_open()?;
        let group = self.groups().get(id).ok_or_else(|| Error::GroupNotFound(id.to_owned()))?;
        validate(change, &[], true)?;
        let settings = {
            let mut state = group.lock();
            let mut settings = state.settings.clone();
            apply(&mut settings, change);
            check_combination(&settings)?;
            if settings.delivery != state.settings.delivery && !state.members.is_empty() {
                return Err(Error::GroupHasMembers { group: id.to_owned(), members: state.members.len() as u32 });
            }
            if settings != state.settings {
                let mode_changed = settings.delivery != state.settings.delivery;
                state.settings = settings.clone();
                state.dirty = true;
                if mode_changed {
                    let topology = self.group_topology(&state, &[]);
                    let offsets = |tp: &super::TopicPartition| self.partition_offsets(tp);
                    state.rebalance(&topology, &offsets);
                }
                for member in state.members.values() {
                    member.shared.wake.notify_one();
                }
            }
            settings
        };
        group.flush().await?;
        tracing::info!(group = %id, ?settings, "group policy changed");
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::RetryOverrides;

    #[test]
    fn a_join_naming_the_groups_own_values_is_accepted_and_a_different_one_is_told_why() {
        let settings = GroupSettings::defaults_for_tests();
        let same = PolicyChange { ack_timeout: Some(settings.ack_timeout), ..PolicyChange::default() };
        assert!(check_join("g", &settings, &same).is_ok());
        assert!(check_join("g", &settings, &PolicyChange::default()).is_ok(), "naming nothing is fine");
        let other = PolicyChange {
            ack_timeout: Some(Duration::from_secs(5)),
            delivery: Some(DeliveryMode::Shared),
            ..PolicyChange::default()
        };
        let message = check_join("g", &settings, &other).map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(message.contains("ack_timeout: the group has 30000ms, the join asks for 5000ms"), "{message}");
        assert!(message.contains("delivery: the group has partition-owned, the join asks for shared"), "{message}");
    }

    #[test]
    fn alter_values_clear_the_groups_own_limit_and_topic() {
        let mut settings = GroupSettings {
            max_attempts: Some(3),
            dead_letter_topic: Some("x".into()),
            ..GroupSettings::defaults_for_tests()
        };
        let change = PolicyChange {
            retry: RetryOverrides { max_attempts: Some(0), ..RetryOverrides::default() },
            dead_letter_topic: Some(String::new()),
            ..PolicyChange::default()
        };
        assert!(validate(&change, &[], true).is_ok());
        assert!(validate(&change, &[], false).is_err(), "a join may not clear");
        apply(&mut settings, &change);
        assert_eq!((settings.max_attempts, settings.dead_letter_topic), (None, None));
    }

    #[test]
    fn strict_ordering_and_shared_delivery_do_not_go_together() {
        let settings = GroupSettings {
            strict_ordering: true,
            delivery: DeliveryMode::Shared,
            ..GroupSettings::defaults_for_tests()
        };
        assert!(check_combination(&settings).is_err());
    }
}
