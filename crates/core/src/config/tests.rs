use super::*;
use crate::options::{NotifyOn, NotifyOverride};
use crate::record::Level;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn a_readable_config_with_a_password_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    let with = "logging:\n  database:\n    url: postgres://u:s3cret@db/x\n";
    std::fs::write(&path, with).unwrap();
    let set =
        |mode| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    set(0o644);
    let config = Config::from_file(&path).unwrap();
    let warning = config.exposed_password_warning(&path).unwrap();
    assert!(
        warning.contains("mode 644")
            && warning.contains("chmod 600")
            && !warning.contains("s3cret"),
        "{warning}"
    );
    set(0o600);
    assert_eq!(config.exposed_password_warning(&path), None);
    set(0o644);
    std::fs::write(&path, "logging:\n  database:\n    url: postgres://u@db/x\n").unwrap();
    let config = Config::from_file(&path).unwrap();
    assert_eq!(
        config.exposed_password_warning(&path),
        None,
        "no password, nothing to hide"
    );
}

#[test]
fn the_shipped_config_is_the_default() {
    assert_eq!(
        Config::from_yaml(DEFAULT_CONFIG).unwrap(),
        Config::default()
    );
}

#[test]
fn durations_accept_numbers_and_humantime() {
    let c = Config::from_yaml(
        "logging:\n  database:\n    flush_interval: 250ms\nmonitoring:\n  metrics_interval: 2\n",
    )
    .unwrap();
    assert_eq!(
        c.logging.database.flush_interval,
        Duration::from_millis(250)
    );
    assert_eq!(c.monitoring.metrics_interval, Duration::from_secs(2));
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key_and_line() {
    let e = Config::from_yaml("logging:\n  level: INFO\n  databse: {}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("databse") && e.contains('3'), "{e}");
    let e = Config::from_yaml("logging:\n  database:\n    batch_size: lots\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch_size") || e.contains('3'), "{e}");
    let e = Config::from_yaml("logging:\n  level: LOUD\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("LOUD"), "{e}");
}

#[test]
fn a_named_file_is_strict_and_its_errors_name_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pmon.yml");
    std::fs::write(&path, "logging:\n  levl: INFO\n").unwrap();
    let e = Config::load(Some(&path)).unwrap_err().to_string();
    let name = path.display().to_string();
    assert!(
        e.contains(&format!("{name}:2:3")) && e.contains("unknown field `levl`"),
        "{e}"
    );
    assert!(!e.contains("<input>"), "{e}");
}

/// Writes `files` (name, text) into a temp dir; returns it and their paths.
fn locations(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = files
        .iter()
        .map(|(name, text)| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    (dir, paths)
}

#[test]
fn a_discovered_file_that_is_not_ours_is_skipped_for_the_next_one() {
    let hydra = "defaults:\n  - model: resnet\nmodel:\n  layers: 50\ntrainer:\n  epochs: 3\n";
    let ours = "logging:\n  level: WARNING\n";
    let (_dir, paths) = locations(&[("config.yml", hydra), ("xdg/pmon/config.yml", ours)]);
    let loaded = Config::discover(&paths);
    assert_eq!(loaded.path.as_deref(), Some(paths[1].as_path()));
    assert_eq!(loaded.config.logging.level, Level::Warning);
    assert_eq!(loaded.skipped.len(), 1);
    let notice = loaded.skipped[0].to_string();
    assert!(
        notice.starts_with(&format!(
            "{} is not a pmon-agent configuration (",
            paths[0].display()
        )) && notice.contains("defaults")
            && notice.ends_with("name it with --config or PMON_CONFIG")
            && !notice.contains('\n'),
        "{notice}"
    );
}

#[test]
fn our_top_level_keys_with_foreign_sections_are_not_ours_either() {
    // A `logging.config.dictConfig` file: `logging:` is one of our keys,
    // but its contents are the standard library's.
    let dict_config =
        "logging:\n  version: 1\n  handlers:\n    console:\n      class: logging.StreamHandler\n";
    let not_yaml = "model: [unclosed\n";
    let a_list = "- one\n- two\n";
    for text in [dict_config, not_yaml, a_list] {
        let (_dir, paths) = locations(&[("config.yml", text)]);
        let loaded = Config::discover(&paths);
        assert_eq!(loaded.path, None, "{text}");
        assert_eq!(loaded.config, Config::default());
        assert_eq!(loaded.skipped.len(), 1, "{text}");
    }
}

#[test]
fn a_discovered_file_of_ours_is_used() {
    let (_dir, paths) = locations(&[
        ("config.yml", "monitoring:\n  metrics_interval: 2\n"),
        ("xdg/pmon/config.yml", "logging:\n  level: ERROR\n"),
    ]);
    let loaded = Config::discover(&paths);
    assert_eq!(loaded.path.as_deref(), Some(paths[0].as_path()));
    assert_eq!(
        loaded.config.monitoring.metrics_interval,
        Duration::from_secs(2)
    );
    assert!(loaded.skipped.is_empty());
    let (_dir, empty) = locations(&[("config.yml", "")]);
    assert_eq!(
        Config::discover(&empty).path.as_deref(),
        Some(empty[0].as_path())
    );
}

#[test]
fn database_urls_must_be_postgresql_urls() {
    assert_eq!(check_database_url("postgres://u@h/db"), Ok(()));
    assert_eq!(
        check_database_url("postgresql://u@h:5433/db?sslmode=require"),
        Ok(())
    );
    let e = check_database_url("mysql://root:s3cret@h/db").unwrap_err();
    assert!(
        e.contains("not a PostgreSQL URL (its scheme is mysql://)") && !e.contains("s3cret"),
        "{e}"
    );
    assert!(check_database_url("localhost:5432")
        .unwrap_err()
        .contains("is not a URL"));
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact_url("postgres://u:s3cret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(
        redact_url("postgres://h/db?user=u&password=pw&sslmode=off"),
        "postgres://h/db?user=u&password=***&sslmode=off"
    );
    let c = DatabaseConfig {
        url: Some("postgres://u:s3cret@h/db".into()),
        ..Default::default()
    };
    assert!(!format!("{c:?}").contains("s3cret"));
}

#[test]
fn flags_replace_the_configured_targets_and_triggers() {
    let config = NotifyConfig {
        webhook: Some("https://hooks.example/a".into()),
        ..NotifyConfig::default()
    };
    let flags = NotifyOverride::from_flags(&["./page-me.sh".into()], &[NotifyOn::Crashed]);
    let applied = config.with_override(flags.as_ref());
    assert_eq!(applied.webhook, None);
    assert_eq!(applied.command.as_deref(), Some("./page-me.sh"));
    assert!(applied.wants(NotifyOn::Crashed));
    assert!(!applied.wants(NotifyOn::Failed));
    let off = NotifyOverride::from_flags(&["none".into()], &[]);
    assert!(!config.with_override(off.as_ref()).wants(NotifyOn::Crashed));
    assert_eq!(NotifyOverride::from_flags(&[], &[]), None);
    assert_eq!(config.with_override(None), config);
}

#[test]
fn nothing_is_wanted_without_a_target() {
    assert!(!NotifyConfig::default().wants(NotifyOn::Failed));
}

#[test]
fn a_webhook_is_shown_by_its_host_only() {
    assert_eq!(
        redact_webhook("https://hooks.slack.com/services/T0/B0/secret"),
        "https://hooks.slack.com/…"
    );
    assert_eq!(
        redact_webhook("http://u:pw@127.0.0.1:9/x"),
        "http://127.0.0.1:9/…"
    );
}
