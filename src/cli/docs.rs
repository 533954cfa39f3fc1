//! `completions` and `man`: the CLI describing itself, from the same clap
//! definitions that parse it, so the scripts and pages cannot drift from
//! the commands. The bash script asks `complete-names` (a command) for the
//! experiment and daemon names it offers after `query status`, `daemon
//! logs` and the like.

use super::{Cli, CompletionShell};
use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::path::Path;

/// Words after which the next argument is an experiment or a daemon name.
const EXPERIMENT_COMMANDS: &[&str] = &["status", "logs", "errors", "metrics", "watch"];
const DAEMON_COMMANDS: &[&str] = &["status", "logs", "pause", "resume", "stop", "restart"];

pub fn completions(shell: CompletionShell) -> anyhow::Result<i32> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "pmon-agent", &mut out);
    if shell == clap_complete::Shell::Bash {
        // clap_complete 4.6 names the states of a hyphenated program two
        // ways (`pmon__agent__subcmd__query` where it walks the words,
        // `pmon__subcmd__agent__subcmd__query` where it completes them), so
        // nothing past the first word would complete: one spelling.
        let script =
            String::from_utf8_lossy(&out).replace("pmon__subcmd__agent__", "pmon__agent__");
        out = without_hidden(&script, &hidden_words(&cmd)).into_bytes();
        out.extend_from_slice(bash_names().as_bytes());
    }
    std::io::stdout()
        .write_all(&out)
        .context("could not write the completion script to stdout")?;
    Ok(0)
}

/// The internal commands and options (`ship`, `--quiet-config`…), which
/// clap's bash script offers with the others.
fn hidden_words(cmd: &clap::Command) -> Vec<String> {
    let mut words: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() {
            words.push(sub.get_name().to_string());
        } else {
            words.extend(hidden_words(sub));
        }
    }
    words
}

/// The script with `words` taken out of every list of words it offers.
fn without_hidden(script: &str, words: &[String]) -> String {
    script
        .lines()
        .map(|line| match line.trim_start().strip_prefix("opts=\"") {
            Some(rest) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                let list = rest.trim_end_matches('"');
                let kept: Vec<&str> = list
                    .split(' ')
                    .filter(|w| !words.iter().any(|h| h == w))
                    .collect();
                format!("{indent}opts=\"{}\"\n", kept.join(" "))
            }
            None => format!("{line}\n"),
        })
        .collect()
}

/// Bash only: after `query status|logs|errors|metrics|watch` the names of
/// experiments, after `daemon status|logs|pause|resume|stop|restart` those
/// of daemons, read from the store by `pmon-agent complete-names` (with
/// PostgreSQL configured that is one query to it per TAB). Zsh and fish
/// complete commands and flags only.
fn bash_names() -> String {
    format!(
        r#"
# Experiment and daemon names (pmon-agent complete-names), then clap's completion.
_pmon_agent_names() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" group="${{COMP_WORDS[1]}}" verb="${{COMP_WORDS[2]}}" kind=""
    if [[ $COMP_CWORD -eq 3 && "$cur" != -* ]]; then
        case "$group $verb" in
            {experiments}) kind=experiments ;;
            {daemons}) kind=daemons ;;
        esac
    fi
    if [[ -n "$kind" ]]; then
        local IFS=$'\n'
        COMPREPLY=( $(compgen -W "$("${{COMP_WORDS[0]}}" complete-names "$kind" 2>/dev/null)" -- "$cur") )
        return 0
    fi
    _pmon__agent "$@"
}}
complete -F _pmon_agent_names -o bashdefault -o default pmon-agent
"#,
        experiments = alternatives("query", EXPERIMENT_COMMANDS),
        daemons = alternatives("daemon", DAEMON_COMMANDS),
    )
}

/// `"query status"|"query logs"|…` for a bash `case`.
fn alternatives(group: &str, verbs: &[&str]) -> String {
    verbs
        .iter()
        .map(|verb| format!("\"{group} {verb}\""))
        .collect::<Vec<_>>()
        .join("|")
}

/// One page per command that users run: `pmon-agent.1`,
/// `pmon-agent-query.1`, `pmon-agent-query-errors.1`…
pub fn man(dir: &Path) -> anyhow::Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "could not create {}; pass a directory you can write to",
            dir.display()
        )
    })?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = 0;
    write_pages(&cmd, "pmon-agent", dir, &mut written)?;
    eprintln!(
        "wrote {written} man pages to {}; read one with man -l {}/pmon-agent.1, or put the directory on MANPATH",
        dir.display(),
        dir.display()
    );
    Ok(0)
}

fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut usize,
) -> anyhow::Result<()> {
    write_page(cmd, name, "pmon-agent", dir)?;
    *written += 1;
    walk(cmd, name, "pmon-agent", dir, written)
}

/// The pages of `cmd`'s subcommands (not clap's `help`, not internal ones).
fn walk(
    cmd: &clap::Command,
    name: &str,
    bin: &str,
    dir: &Path,
    written: &mut usize,
) -> anyhow::Result<()> {
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub_bin = format!("{bin} {}", sub.get_name());
        write_page(sub, &sub_name, &sub_bin, dir)?;
        *written += 1;
        walk(sub, &sub_name, &sub_bin, dir, written)?;
    }
    Ok(())
}

fn write_page(cmd: &clap::Command, name: &str, bin: &str, dir: &Path) -> anyhow::Result<()> {
    let page = cmd.clone().name(name.to_string()).bin_name(bin.to_string());
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .context("could not render a man page")?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, text).with_context(|| format!("could not write {}", path.display()))
}
