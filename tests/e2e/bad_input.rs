//! Bad input never crashes the agent or poisons a batch.

use crate::util::*;
use pretty_assertions::assert_eq;

#[test]
fn nul_bytes_invalid_utf8_and_control_sequences_are_stored_safely() {
    let agent = Agent::new();
    let code = r#"import os; os.write(1, b"a\x00b\n\xff\xfe\n\x1b[1;31mcolour\x1b[0m\n\x1b]0;title\x07after title\nok\n")"#;
    let out = agent.run(&["wrap", "-e", "bad", "--", "python3", "-c", code]);
    assert!(out.status.success());
    let msgs: Vec<String> = agent
        .json_lines(&["query", "logs", "bad"])
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        msgs,
        vec![
            "a\u{2400}b",
            "\u{fffd}\u{fffd}",
            "colour",
            "after title",
            "ok"
        ]
    );
}

#[test]
fn multi_megabyte_lines_are_capped_with_a_marker() {
    let agent = Agent::new();
    let code = "import sys; sys.stdout.write('x' * (5 * 1024 * 1024) + '\\nafter\\n')";
    let out = agent.run(&[
        "wrap",
        "-e",
        "huge",
        "--no-echo",
        "--",
        "python3",
        "-c",
        code,
    ]);
    assert!(out.status.success());
    let logs = agent.json_lines(&["query", "logs", "huge"]);
    assert_eq!(logs.len(), 2);
    let first = logs[0]["message"].as_str().unwrap();
    assert!(first.starts_with(&"x".repeat(1024)));
    assert!(
        first.ends_with(&format!(
            "[pmon: line truncated, {} bytes omitted]",
            4 * 1024 * 1024
        )),
        "{}",
        &first[first.len() - 80..]
    );
    assert_eq!(logs[1]["message"], "after");
}

#[test]
fn text_output_escapes_control_characters() {
    let agent = Agent::new();
    let code = r#"import os; os.write(1, b"ring\x07bell back\x08space\n")"#;
    agent.run(&["wrap", "-e", "ctl", "--", "python3", "-c", code]);
    let out = agent.run(&["query", "logs", "ctl"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.bytes().any(|b| b == 0x07 || b == 0x08 || b == 0x1b),
        "{text:?}"
    );
    assert!(text.contains("ring\\x07bell"), "{text:?}");
}

#[test]
fn a_bad_config_names_the_file_line_and_key() {
    let agent = Agent::new();
    let config = agent.dir.path().join("config.yml");
    std::fs::write(
        &config,
        "logging:\n  level: INFO\n  databse:\n    url: null\n",
    )
    .unwrap();
    // Named, it is the user's word: an error before the program starts.
    let out = agent.run(&["--config", "config.yml", "wrap", "-e", "x", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_text(&out);
    assert!(
        err.contains("config.yml:3:3") && err.contains("line 3") && err.contains("databse"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    // Found where the agent looks, it may be a project's own: skipped with
    // a notice that still says what does not fit.
    let out = agent.run(&["wrap", "-e", "x", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr_text(&out);
    assert!(
        err.contains("config.yml is not a pmon-agent configuration (line 3")
            && err.contains("databse"),
        "{err}"
    );
}

/// Random bytes (seeded): binary garbage, NUL, half UTF-8 sequences, escape
/// sequences, `\r`-only stretches and one line past the 1 MiB cap, written in
/// random chunk sizes. The echo and the plain log file get them byte for byte;
/// the store gets safe text; the agent exits with the program's code.
#[test]
fn garbage_passes_through_byte_for_byte_and_is_stored_safely() {
    let agent = Agent::new();
    let program = r#"
import os, random, sys
random.seed(11)
pieces = [b"\x00", b"\xff\xfe", b"\xe2\x82", b"\x1b[31m", b"\x1b]0;t\x07", b"\x1b[2A", b"\r" * 7,
          b"\r\n", b"\n", b"ok line\n", "é€😀".encode(), b"x" * (1200 * 1024) + b"\n"]
data = bytearray()
for _ in range(3000):
    if random.random() < 0.5:
        data += bytes(random.getrandbits(8) for _ in range(random.randint(1, 60)))
    else:
        data += random.choice(pieces[:-1])
data += pieces[-1]
data += b"the end\n"
with open(sys.argv[1], "wb") as f:
    f.write(data)
at = 0
while at < len(data):
    n = random.randint(1, 70000)
    at += os.write(1, bytes(data[at:at + n]))
"#;
    let expected_path = agent.dir.path().join("expected.bin");
    let out = agent.run(&[
        "wrap",
        "-e",
        "garbage",
        "--",
        "python3",
        "-c",
        program,
        expected_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    let expected = std::fs::read(&expected_path).unwrap();
    assert!(
        out.stdout == expected,
        "the echo differs from what the program wrote"
    );
    let logs_dir = agent.data_dir().join("logs/garbage");
    let plain = std::fs::read_dir(&logs_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        std::fs::read(plain).unwrap() == expected,
        "the plain log file differs"
    );
    let records = agent.json_lines(&["query", "logs", "garbage"]);
    assert!(
        records.iter().any(|r| r["message"] == "the end"),
        "the last line is stored"
    );
    assert!(records
        .iter()
        .all(|r| !r["message"].as_str().unwrap().contains('\0')));
    let capped = records
        .iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .unwrap()
                .contains("[pmon: line truncated, ")
        })
        .count();
    assert!(capped >= 1, "the 1.2 MiB line is capped with a marker");
}
