//! Conversions for dead-letter inspection and redrive.

use sluice_core::group::dead_letter as headers;
use sluice_core::group::redrive::{DeadLetterPage, ListSpec, Selection};
use sluice_proto::v1 as pb;
use tonic::Status;

fn invalid(message: impl Into<String>) -> Status {
    crate::status::to_status(sluice_core::Error::InvalidArgument(message.into()))
}

fn page_token(token: &str) -> Result<Option<(u32, u64)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let parsed = token.split_once(':').and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
    parsed.map(Some).ok_or_else(|| invalid(format!("page_token '{token}' is not one this broker issued")))
}

fn nonzero(value: i64) -> Option<i64> {
    (value != 0).then_some(value)
}

/// A listing request for the core.
pub fn list(request: pb::ListDeadLettersRequest) -> Result<ListSpec, Status> {
    Ok(ListSpec {
        from: page_token(&request.page_token)?,
        topic: request.topic,
        group: (!request.group.is_empty()).then_some(request.group),
        since_ms: nonzero(request.since_ms),
        until_ms: nonzero(request.until_ms),
        limit: request.limit as usize,
    })
}

/// A page for the wire.
pub fn page(page: DeadLetterPage) -> Result<pb::ListDeadLettersResponse, Status> {
    let mut dead_letters = Vec::with_capacity(page.entries.len());
    for entry in page.entries {
        let field = |name: &str| entry.provenance.get(name).cloned().unwrap_or_default();
        let number = |name: &str| field(name).parse::<i64>().unwrap_or_default();
        dead_letters.push(pb::DeadLetter {
            partition: entry.partition,
            offset: entry.offset,
            source_topic: field(headers::HEADER_TOPIC),
            source_partition: number(headers::HEADER_PARTITION) as u32,
            source_offset: number(headers::HEADER_OFFSET) as u64,
            group: entry.group.clone(),
            reason: field(headers::HEADER_MESSAGE),
            delivery_count: number(headers::HEADER_DELIVERY_COUNT) as u32,
            first_failure_ms: number(headers::HEADER_FIRST_FAILURE),
            last_failure_ms: number(headers::HEADER_LAST_FAILURE),
            redriven: entry.redriven,
            record: Some(crate::convert::record(entry.record, entry.partition)?),
        });
    }
    Ok(pb::ListDeadLettersResponse {
        dead_letters,
        next_page_token: page.next.map(|(p, o)| format!("{p}:{o}")).unwrap_or_default(),
        depth: page.depth,
    })
}

/// What a discard selects.
pub fn discard_selection(request: &pb::DiscardDeadLettersRequest) -> Result<Selection, Status> {
    use pb::dead_letter_selection::Selection as Wire;
    match request.selection.as_ref().and_then(|s| s.selection.as_ref()) {
        Some(Wire::All(_)) => Ok(Selection::All),
        Some(Wire::Range(r)) => Ok(Selection::Range { partition: r.partition, first: r.first, last: r.last }),
        Some(Wire::Offsets(list)) => {
            Ok(Selection::Offsets(list.positions.iter().map(|p| (p.partition, p.offset)).collect()))
        }
        None => Err(invalid("discard needs a selection: all, range or offsets")),
    }
}

/// What a redrive selects.
pub fn selection(request: &pb::RedriveDeadLettersRequest) -> Result<Selection, Status> {
    use pb::redrive_dead_letters_request::Selection as Wire;
    match &request.selection {
        Some(Wire::All(_)) => Ok(Selection::All),
        Some(Wire::Range(r)) => Ok(Selection::Range { partition: r.partition, first: r.first, last: r.last }),
        Some(Wire::Offsets(list)) => {
            Ok(Selection::Offsets(list.positions.iter().map(|p| (p.partition, p.offset)).collect()))
        }
        None => Err(invalid("redrive needs a selection: all, range or offsets")),
    }
}
