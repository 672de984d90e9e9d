//! Runs the README's CLI walk-through against a fresh broker and compares every output shown
//! there with what the command printed, so the documentation cannot drift from the tool.

mod common;

use std::path::Path;
use std::process::Command;

use common::Broker;

struct Step {
    command: String,
    exit: i32,
    expected: Vec<String>,
}

/// The `$ ` commands of the console blocks between the walk-through markers, each with the
/// lines shown after it. `# exit N` at the end of a command gives its expected exit code.
fn steps(readme: &str) -> Vec<Step> {
    let begin = readme.find("<!-- walkthrough:begin -->").expect("walk-through start marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("walk-through end marker");
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for line in readme[begin..end].lines() {
        if line.starts_with("```") {
            in_block = line == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            let (command, exit) = match command.rsplit_once("# exit ") {
                Some((command, code)) => (command.trim_end(), code.trim().parse().expect("an exit code")),
                None => (command, 0),
            };
            steps.push(Step { command: command.to_owned(), exit, expected: Vec::new() });
        } else if let Some(step) = steps.last_mut() {
            step.expected.push(line.to_owned());
        }
    }
    steps
}

fn squeeze(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whitespace runs count as one space; `…` stands for any text.
fn matches(expected: &str, actual: &str) -> bool {
    let (expected, actual) = (squeeze(expected), squeeze(actual));
    let parts: Vec<&str> = expected.split('…').collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual.ends_with(last) || actual.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let steps = steps(&readme);
    assert!(steps.len() >= 10, "the walk-through has its commands");
    let broker = Broker::start();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_sluice")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for step in &steps {
        let output = Command::new("bash")
            .args(["-o", "pipefail", "-c", &format!("{} 2>&1", step.command)])
            .env("PATH", &path)
            .env("SLUICE_SERVER", &broker.addr)
            .env("SLUICE_CLI_CONFIG", "/nonexistent/sluice/config.toml")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(step.exit), "`{}` printed:\n{printed}", step.command);
        let printed: Vec<&str> = printed.lines().collect();
        assert_eq!(printed.len(), step.expected.len(), "`{}` printed:\n{}", step.command, printed.join("\n"));
        for (expected, actual) in step.expected.iter().zip(&printed) {
            assert!(matches(expected, actual), "`{}`:\n  README: {expected}\n  actual: {actual}", step.command);
        }
    }
}

#[test]
fn ellipses_match_any_text_and_nothing_else_differs() {
    assert!(matches("0  0  353  …  1  ok", "0 0 353 15.3 KiB 1 ok"));
    assert!(matches("a … c … e", "a b c d e"));
    assert!(!matches("a … c", "a b d"));
    assert!(!matches("orders 3", "orders 4"));
    assert!(matches("x:   …", "x: anything"));
}
