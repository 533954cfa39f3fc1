//! A project's own `config.yml` (Hydra's, a `logging.config.dictConfig`
//! file) sits where the agent looks for its configuration: it is skipped
//! with one notice and never stops a program. A file named by `--config` or
//! `PMON_CONFIG` is the user's word: strict, its errors naming the file.

use crate::util::*;

/// The shape of a Hydra project's `config.yml` (Hydra's own examples).
const HYDRA: &str = "\
defaults:
  - model: resnet50
  - _self_
trainer:
  max_epochs: 10
  precision: 16
data:
  path: /data/imagenet
  batch_size: 256
";

/// A `logging.config.dictConfig` file: its one key is also one of ours.
const DICT_CONFIG: &str = "\
logging:
  version: 1
  formatters:
    plain:
      format: '%(asctime)s %(levelname)s %(message)s'
  handlers:
    console:
      class: logging.StreamHandler
      formatter: plain
  root:
    level: INFO
    handlers: [console]
";

const PROGRAM: &str = "print('INFO:train:epoch 1 done')";

fn stored(agent: &Agent, exp: &str) -> i64 {
    agent.count(&format!(
        "SELECT count(*) FROM pipeline_logs WHERE experiment_id = '{exp}' AND message = 'epoch 1 done'"
    ))
}

#[test]
fn a_projects_own_config_yml_is_skipped_with_one_notice() {
    for (exp, text, why) in [
        ("hydra", HYDRA, "unknown field `defaults`"),
        ("dictconfig", DICT_CONFIG, "unknown field `version`"),
    ] {
        let agent = Agent::new().with_config(text);
        let out = agent.run(&["wrap", "-e", exp, "--", "python3", "-c", PROGRAM]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "INFO:train:epoch 1 done\n"
        );
        let err = stderr_text(&out);
        assert_eq!(err.lines().count(), 1, "one notice: {err}");
        assert!(
            err.starts_with("pmon-agent: notice: config.yml is not a pmon-agent configuration (")
                && err.contains(why)
                && err.ends_with(
                    "), so it was skipped; to use it anyway, name it with --config or PMON_CONFIG\n"
                ),
            "{err}"
        );
        assert_eq!(stored(&agent, exp), 1, "the run was recorded");
    }
}

#[test]
fn discovery_goes_on_to_the_xdg_file_past_a_foreign_one() {
    let agent = Agent::new().with_config(HYDRA);
    let xdg = agent.dir.path().join("xdg-config/pmon");
    std::fs::create_dir_all(&xdg).unwrap();
    // Ours, and it keeps only warnings and worse: the INFO line is not stored.
    std::fs::write(xdg.join("config.yml"), "logging:\n  level: WARNING\n").unwrap();
    let out = agent
        .cmd(&["wrap", "-e", "xdg", "--", "python3", "-c", PROGRAM])
        // The harness's DEBUG would override the file's level.
        .env_remove("PMON_LOG_LEVEL")
        .run_within("wrap with a foreign ./config.yml and an XDG one");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_text(&out));
    assert!(stderr_text(&out).contains("config.yml is not a pmon-agent configuration"));
    assert_eq!(stored(&agent, "xdg"), 0, "the XDG file's level applies");
    let show = agent.run(&["config", "show"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.starts_with(&format!("# from {}", xdg.join("config.yml").display())),
        "{text}"
    );
}

#[test]
fn a_named_file_is_strict_and_its_error_names_the_file_line_and_key() {
    let agent = Agent::new().with_config(HYDRA);
    let marker = agent.dir.path().join("ran");
    let program = format!("open({:?}, 'w').close()", marker.to_str().unwrap());
    for how in ["flag", "env"] {
        let mut cmd = match how {
            "flag" => agent.cmd(&[
                "--config",
                "config.yml",
                "wrap",
                "-e",
                "x",
                "--",
                "python3",
                "-c",
                &program,
            ]),
            _ => agent.cmd(&["wrap", "-e", "x", "--", "python3", "-c", &program]),
        };
        if how == "env" {
            cmd.env("PMON_CONFIG", "config.yml");
        }
        let out = cmd.run_within("wrap with a foreign config file named");
        assert_eq!(out.status.code(), Some(1), "{how}");
        let err = stderr_text(&out);
        assert!(
            err.starts_with("pmon-agent: error: invalid config file config.yml")
                && err.contains("config.yml:1:1")
                && err.contains("unknown field `defaults`")
                && !err.contains("<input>"),
            "{how}: {err}"
        );
        assert!(!marker.exists(), "{how}: the program must not start");
    }
}
