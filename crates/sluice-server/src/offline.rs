//! Commands that work on a data directory without serving it: `verify` (read only) and
//! `recover-topic-meta`. Each prints what it did and returns the process exit code.

use std::io::Write;
use std::path::Path;

use sluice_core::TopicConfig;
use sluice_storage::verify::{Finding, Severity};

/// Exit code when the data directory is damaged.
pub const EXIT_DAMAGED: u8 = 1;
/// Exit code when the command itself could not run.
pub const EXIT_FAILED: u8 = 2;

fn finding_line(finding: &Finding, data_dir: &Path) -> String {
    let label = match finding.severity {
        Severity::Damage => "DAMAGE",
        Severity::Note => "note",
    };
    let path = finding.path.strip_prefix(data_dir).unwrap_or(&finding.path).display();
    match finding.position {
        Some(at) => format!("  {label:6} {path} at byte {at}: {}", finding.what),
        None => format!("  {label:6} {path}: {}", finding.what),
    }
}

/// Verifies `data_dir` and prints a report to `out`: one line per partition, then each
/// finding. Returns 0 when nothing is damaged, [`EXIT_DAMAGED`] otherwise.
/// `sluice-server token-create`: adds a token to a stopped broker's data directory and prints
/// it (the only time it is shown).
pub fn create_token(data_dir: &Path, principal: &str, superuser: bool, out: &mut impl Write) -> std::io::Result<u8> {
    let created = sluice_core::auth::Security::open(data_dir).and_then(|s| s.tokens.create(principal, superuser));
    match created {
        Ok((info, token)) => {
            writeln!(out, "{token}")?;
            let kind = if superuser { "superuser" } else { "principal" };
            eprintln!(
                "created token {} for {kind} '{}'; it is shown only once: keep it in a secret store",
                info.id, info.principal
            );
            Ok(0)
        }
        Err(e) => {
            writeln!(out, "token-create: {e}")?;
            Ok(EXIT_FAILED)
        }
    }
}

pub fn verify(data_dir: &Path, out: &mut impl Write) -> std::io::Result<u8> {
    let report = match sluice_core::verify::verify_data_dir(data_dir) {
        Ok(report) => report,
        Err(e) => {
            writeln!(out, "verify: cannot read {}: {e}", data_dir.display())?;
            return Ok(EXIT_FAILED);
        }
    };
    for p in &report.partitions {
        let segments = &p.report.segments;
        let (start, end) =
            (segments.first().map_or(0, |s| s.base_offset), segments.last().map_or(0, |s| s.next_offset));
        let batches: u64 = segments.iter().map(|s| s.batches).sum();
        let records: u64 = segments.iter().map(|s| s.records).sum();
        let verdict = if p.report.is_damaged() { "DAMAGED" } else { "ok" };
        writeln!(
            out,
            "{}/{}: {} segments, offsets {start}..{end}, {batches} batches, {records} records: {verdict}",
            p.topic,
            p.partition,
            segments.len()
        )?;
        for finding in &p.report.findings {
            writeln!(out, "{}", finding_line(finding, data_dir))?;
        }
    }
    if !report.findings.is_empty() {
        writeln!(out, "metadata and group files:")?;
        for finding in &report.findings {
            writeln!(out, "{}", finding_line(finding, data_dir))?;
        }
    }
    let all = report.findings.iter().chain(report.partitions.iter().flat_map(|p| &p.report.findings));
    let (damage, notes) = all.fold((0, 0), |(d, n), f| match f.severity {
        Severity::Damage => (d + 1, n),
        Severity::Note => (d, n + 1),
    });
    writeln!(
        out,
        "verify: {} partitions, {damage} damaged, {notes} notes: {}",
        report.partitions.len(),
        if report.is_damaged() { "DAMAGED" } else { "ok" }
    )?;
    Ok(if report.is_damaged() { EXIT_DAMAGED } else { 0 })
}

/// Rebuilds `topic`'s lost `topic.meta` in `data_dir` from its partition directories, with
/// `defaults` as its settings. Returns the exit code.
pub fn recover_topic_meta(
    data_dir: &Path,
    topic: &str,
    defaults: &TopicConfig,
    out: &mut impl Write,
) -> std::io::Result<u8> {
    let dir = sluice_core::metadata::topic_dir(data_dir, topic);
    match sluice_core::metadata::recover_topic_meta(&dir, defaults) {
        Ok(meta) => {
            writeln!(
                out,
                "rebuilt {} with {} partitions and the default topic settings; check them with `sluice topic describe {topic}` and change them with `sluice topic alter`",
                dir.join(sluice_core::metadata::TOPIC_META_FILE).display(),
                meta.partitions
            )?;
            Ok(0)
        }
        Err(e) => {
            writeln!(out, "recover-topic-meta: {e}")?;
            Ok(EXIT_FAILED)
        }
    }
}
