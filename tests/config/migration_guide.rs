//! docs/migration.md followed as a reader would: every ```` ```sh title="step" ```` block runs in
//! order with `sh -e`, in one empty directory, with the built `ferromq` first on `PATH`, against
//! Debian's `activemq` package (as the guide says); each must end with its `exit="N"` and print
//! every line of the ```` ```text title="output" ```` block that follows it (a line of the block
//! is found when some output line contains it; `<dir>` stands for the directory). Every other
//! shell block must say `title="example"`, so that no command of the guide escapes the test by
//! accident.

use std::path::Path;
use std::process::Command;

use super::activemq_examples::activemq_installed;

const GUIDE: &str = include_str!("../../docs/migration.md");

/// One shell block of the guide.
#[derive(Debug)]
struct Step {
    /// Line of the opening fence in docs/migration.md (1-based), for messages.
    line: usize,
    script: String,
    exit: i32,
    /// Lines the output must contain (each a substring of some output line).
    output: Vec<String>,
}

/// `key="value"` of a fence's info string.
fn attribute<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    let start = info.find(&format!("{key}=\""))? + key.len() + 2;
    let len = info[start..].find('"')?;
    Some(&info[start..start + len])
}

/// The steps of `guide`, in order; panics on a shell block that is neither a step nor an
/// example, a step without `exit`, or an unclosed fence.
fn steps(guide: &str) -> Vec<Step> {
    let lines: Vec<&str> = guide.lines().collect();
    let mut steps: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let opening = i + 1;
        let end = lines[i + 1..]
            .iter()
            .position(|l| l.trim_end() == "```")
            .map(|p| i + 1 + p)
            .unwrap_or_else(|| panic!("docs/migration.md:{opening}: unclosed code block"));
        let body = lines[i + 1..end].join("\n");
        let title = attribute(info, "title");
        let language = info.split_whitespace().next().unwrap_or("");
        match (language, title) {
            ("sh", Some("step")) => {
                let exit = attribute(info, "exit")
                    .and_then(|e| e.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("docs/migration.md:{opening}: a step needs exit=\"N\"")
                    });
                steps.push(Step {
                    line: opening,
                    script: body,
                    exit,
                    output: Vec::new(),
                });
            }
            ("sh" | "bash" | "shell" | "console", other) => assert_eq!(
                other,
                Some("example"),
                "docs/migration.md:{opening}: a shell block is title=\"step\" (run by this \
                 test) or title=\"example\""
            ),
            ("text", Some("output")) => {
                let step = steps
                    .last_mut()
                    .filter(|s| s.output.is_empty())
                    .unwrap_or_else(|| {
                        panic!("docs/migration.md:{opening}: an output block follows a step")
                    });
                step.output = body
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            _ => {}
        }
        i = end + 1;
    }
    steps
}

/// Run `step` in `dir`; the combined output.
fn run(step: &Step, dir: &Path, path: &str) -> String {
    let output = Command::new("sh")
        .args(["-e", "-c", &step.script])
        .current_dir(dir)
        .env("PATH", path)
        // The guide's steps set what they need; nothing of the test's environment leaks in.
        .env_remove("ACTIVEMQ_ENCRYPTION_PASSWORD")
        .env_remove("ACTIVEMQ_BASE")
        .env_remove("ACTIVEMQ_CONF")
        .env_remove("ACTIVEMQ_DATA")
        .env_remove("ACTIVEMQ_HOME")
        .env_remove("RUST_LOG")
        .output()
        .expect("run sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.status.code(),
        Some(step.exit),
        "docs/migration.md:{}: step exited {} instead of {}:\n{}\n--- output:\n{text}",
        step.line,
        output.status,
        step.exit,
        step.script
    );
    text
}

#[test]
fn the_migration_guide_is_true() {
    if !activemq_installed() {
        return;
    }
    let steps = steps(GUIDE);
    assert!(steps.len() >= 10, "the guide lost its steps: {steps:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = Path::new(env!("CARGO_BIN_EXE_ferromq"));
    let bin_dir = binary.parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let shown_dir = dir.path().display().to_string();
    for step in &steps {
        let output = run(step, dir.path(), &path);
        for wanted in &step.output {
            let wanted = wanted.replace("<dir>", &shown_dir);
            assert!(
                output.lines().any(|line| line.contains(&wanted)),
                "docs/migration.md:{}: no output line contains `{wanted}`:\n{}\n--- output:\n{output}",
                step.line,
                step.script
            );
        }
    }
}

#[test]
fn steps_are_read_with_their_exit_codes_and_outputs() {
    let guide = "text\n```sh title=\"step\" exit=\"3\"\necho a\necho b\n```\n\n\
                 ```text title=\"output\"\n a \n\nb\n```\n```sh title=\"example\"\nrun\n```\n\
                 ```xml\n<x/>\n```\n";
    let found = steps(guide);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].line, found[0].script.as_str(), found[0].exit),
        (2, "echo a\necho b", 3)
    );
    assert_eq!(found[0].output, ["a", "b"]);
}

#[test]
#[should_panic(expected = "title=\"step\"")]
fn an_unmarked_shell_block_is_refused() {
    steps("```sh\nferromq run\n```\n");
}
