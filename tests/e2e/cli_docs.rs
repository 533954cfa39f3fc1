//! The CLI describing itself: bash completion as bash runs it (commands,
//! then the names of recorded experiments and started daemons), and every
//! man page rendered by groff without a warning.

use crate::util::*;

/// What bash's completion offers for the words typed so far (the last one
/// being completed), as a user pressing TAB would get it.
fn complete(agent: &Agent, words: &[&str]) -> Vec<String> {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_pmon-agent"));
    let script = agent.run(&["completions", "bash"]);
    assert!(script.status.success(), "{}", stderr_text(&script));
    let script_path = agent.dir.path().join("pmon-agent.bash");
    std::fs::write(&script_path, &script.stdout).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
         _pmon_agent_names pmon-agent '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script_path.display(),
        quoted.join(" "),
        words.len() - 1,
        line.len(),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = command("bash")
        .args(["--norc", "-c", &program])
        .env("PATH", path)
        .env("PMON_DATA_DIR", agent.data_dir())
        .env_remove("PMON_DATABASE_URL")
        .current_dir(agent.dir.path())
        .run_within("bash");
    assert!(out.status.success(), "{}", stderr_text(&out));
    let mut offered: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    offered.sort();
    offered
}

#[test]
fn bash_completes_commands_experiments_and_daemons() {
    let agent = Agent::new();
    let commands = complete(&agent, &["pmon-agent", ""]);
    for command in [
        "wrap",
        "tail",
        "ingest",
        "query",
        "daemon",
        "completions",
        "man",
    ] {
        assert!(
            commands.contains(&command.to_string()),
            "{command}: {commands:?}"
        );
    }
    assert!(
        !commands.iter().any(|c| c == "ship" || c == "notify-send"),
        "internal commands are not offered: {commands:?}"
    );
    assert_eq!(complete(&agent, &["pmon-agent", "query", "er"]), ["errors"]);
    assert!(complete(&agent, &["pmon-agent", "query", "errors", "--gr"])
        .contains(&"--group".to_string()));

    // Names come from the store: none yet, then the recorded ones.
    assert!(complete(&agent, &["pmon-agent", "query", "status", ""]).is_empty());
    for name in ["train-a", "train-b", "eval"] {
        let out = agent.run(&["wrap", "-e", name, "--", "true"]);
        assert!(out.status.success(), "{}", stderr_text(&out));
    }
    assert_eq!(
        complete(&agent, &["pmon-agent", "query", "status", "tr"]),
        ["train-a", "train-b"]
    );
    assert_eq!(
        complete(&agent, &["pmon-agent", "query", "logs", ""]),
        ["eval", "train-a", "train-b"]
    );
    let out = agent.run(&["daemon", "start", "--name", "nightly", "--", "true"]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    assert_eq!(
        complete(&agent, &["pmon-agent", "daemon", "logs", "n"]),
        ["nightly"]
    );
}

#[test]
fn zsh_and_fish_scripts_name_every_command() {
    let agent = Agent::new();
    for shell in ["zsh", "fish"] {
        let out = agent.run(&["completions", shell]);
        assert!(out.status.success(), "{}", stderr_text(&out));
        let script = String::from_utf8(out.stdout).unwrap();
        for command in ["wrap", "tail", "query", "daemon", "errors", "notify-on"] {
            assert!(script.contains(command), "{shell}: {command}");
        }
    }
}

#[test]
fn every_man_page_renders_without_a_warning() {
    let agent = Agent::new();
    let dir = agent.dir.path().join("man");
    let out = agent.run(&["man", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr_text(&out));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for page in [
        "pmon-agent.1",
        "pmon-agent-wrap.1",
        "pmon-agent-query.1",
        "pmon-agent-query-errors.1",
        "pmon-agent-daemon-start.1",
        "pmon-agent-db-prune.1",
        "pmon-agent-completions.1",
    ] {
        assert!(pages.contains(&page.to_string()), "{page}: {pages:?}");
    }
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("-help") || p.contains("ship") || p.contains("notify-send")),
        "{pages:?}"
    );
    for page in &pages {
        let out = command("groff")
            // -k: the pages are UTF-8 (as `man` reads them, through preconv).
            .args(["-k", "-man", "-Tutf8"])
            .arg(dir.join(page))
            .run_within("groff");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            stderr_text(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{page} has no examples");
    }
    let errors = command("groff")
        .args(["-k", "-man", "-Tutf8"])
        .arg(dir.join("pmon-agent-query-errors.1"))
        .run_within("groff");
    let text = String::from_utf8_lossy(&errors.stdout);
    assert!(
        text.contains("pmon-agent query errors") && text.contains("--group"),
        "{text}"
    );
}
