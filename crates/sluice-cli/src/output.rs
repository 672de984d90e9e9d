//! Printing: aligned tables or JSON on stdout, colors only on a terminal.

use std::io::{IsTerminal, Write};

use comfy_table::{Attribute, Cell, CellAlignment, Table, presets};

use crate::error::CliError;

/// How reading commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts; field names are stable.
    Json,
}

fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether error lines may be colored.
pub fn stderr_color() -> bool {
    color_allowed() && std::io::stderr().is_terminal()
}

/// Writes a command's results.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub output: Output,
    pub color: bool,
}

fn numeric(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-')
}

impl Printer {
    pub fn new(output: Output) -> Self {
        Printer { output, color: color_allowed() && std::io::stdout().is_terminal() }
    }

    pub fn json_mode(&self) -> bool {
        self.output == Output::Json
    }

    /// One line of text.
    pub fn line(&self, text: &str) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        Ok(())
    }

    /// Pretty JSON.
    pub fn json(&self, value: &serde_json::Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        self.line(&text)
    }

    /// Columns aligned under a header; columns holding only numbers are right-aligned.
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) -> Result<(), CliError> {
        let mut table = Table::new();
        table.load_style(presets::NOTHING);
        let bold = |text: &str| {
            let cell = Cell::new(text);
            if self.color { cell.add_attribute(Attribute::Bold) } else { cell }
        };
        table.set_header(header.iter().map(|h| bold(h)));
        for row in rows {
            table.add_row(row);
        }
        for (i, column) in table.column_iter_mut().enumerate() {
            column.set_padding((0, 2));
            if !rows.is_empty() && rows.iter().all(|r| r.get(i).is_some_and(|c| numeric(c))) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        if !self.color {
            table.force_no_tty();
        }
        let text = table.to_string();
        let trimmed: Vec<&str> = text.lines().map(|l| l.trim_end()).collect();
        self.line(&trimmed.join("\n"))
    }

    /// `name: value` lines, the values aligned.
    pub fn pairs(&self, pairs: &[(&str, String)]) -> Result<(), CliError> {
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        let mut out = std::io::stdout().lock();
        for (key, value) in pairs {
            let key = format!("{key}:");
            if self.color {
                writeln!(out, "\x1b[1m{key:width$}\x1b[0m {value}")?;
            } else {
                writeln!(out, "{key:width$} {value}")?;
            }
        }
        Ok(())
    }
}
