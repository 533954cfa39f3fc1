//! Which declarative parsers a run uses: the user's directories, in order,
//! each file checked by its own examples (which takes the whole assembler,
//! so this sits above it), then the shipped parsers.

use super::declarative::{
    compile_source, dir_sources, shipped_sources, DeclarativeParser, LoadedParsers,
    ParserFileError, ParserSource,
};
use super::examples::run_examples;
use std::path::PathBuf;
use std::sync::Arc;

/// Compiles a file and runs its examples: the check every user file passes
/// before it is used.
pub fn load_checked(source: &ParserSource) -> Result<Arc<DeclarativeParser>, ParserFileError> {
    let parser = Arc::new(compile_source(source)?);
    if let Some(failure) = run_examples(&parser).into_iter().next() {
        return Err(ParserFileError::new(
            &source.origin,
            Some(failure.line),
            format!("example {} fails: {}", failure.index + 1, failure.short()),
        ));
    }
    Ok(parser)
}

/// The user's directories, in order, then the shipped parsers. `strict`:
/// a broken user file is an error (at start); otherwise it is skipped with
/// a warning (a shipper restarted under a running program must go on).
pub fn load(dirs: &[PathBuf], strict: bool) -> Result<LoadedParsers, ParserFileError> {
    let mut loaded = LoadedParsers::default();
    for dir in dirs {
        let sources = match dir_sources(dir) {
            Ok(s) => s,
            Err(e) if strict => return Err(e),
            Err(e) => {
                loaded.warnings.push(e.to_string());
                continue;
            }
        };
        for source in sources {
            match load_checked(&source) {
                Ok(p) => add(&mut loaded, p, false),
                Err(e) if strict => return Err(e),
                Err(e) => loaded.warnings.push(format!("{e} (parser left out)")),
            }
        }
    }
    for source in shipped_sources() {
        match compile_source(&source) {
            Ok(p) => add(&mut loaded, Arc::new(p), true),
            Err(e) => loaded.warnings.push(e.to_string()),
        }
    }
    Ok(loaded)
}

fn add(loaded: &mut LoadedParsers, parser: Arc<DeclarativeParser>, shipped: bool) {
    if let Some(first) = loaded.parsers.iter().find(|p| p.name == parser.name) {
        // A user's parser replaces the shipped one of its name, quietly; two
        // of the user's own with one name is worth a word.
        if !shipped {
            loaded.warnings.push(format!(
                "{}: a parser named '{}' is already defined in {}; this one is left out",
                parser.origin, parser.name, first.origin
            ));
        }
        return;
    }
    loaded.parsers.push(parser);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{LineParser, Output, ParserChain};
    use crate::record::Level;

    fn compile(yaml: &str) -> Result<DeclarativeParser, ParserFileError> {
        compile_source(&ParserSource {
            origin: "p.yml".into(),
            text: yaml.into(),
        })
    }

    #[test]
    fn broken_files_name_the_line_and_the_reason() {
        let e = compile("name: x\nregex: '(a'\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(
            e.reason
                .starts_with("`regex` is not a valid regex: unclosed group"),
            "{e}"
        );
        let e = compile("name: x\nregex: a\nlevles: {}\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.reason.contains("levles"), "{e}");
        let e = compile("name: x\nregex: a\ntime_format: '%Q'\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = compile("name: x\nregex: a\nlevels: {W: LOUD}\n").unwrap_err();
        assert!(e.reason.contains("LOUD"), "{e}");
        let e = compile("name: x\n").unwrap_err();
        assert!(e.reason.contains("needs a `regex:`"), "{e}");
        let e = compile("name: x\nmultiline:\n  start: a\n").unwrap_err();
        assert!(e.reason.contains("continue"), "{e}");
        assert_eq!(e.to_string(), format!("p.yml:3: {}", e.reason));
    }

    #[test]
    fn levels_map_text_and_numbers_and_fall_back_to_level_names() {
        let p = compile(
            "name: x\nregex: '^(?P<level>\\w+) (?P<message>.*)'\nlevels: {\"3\": ERROR, W: WARNING}\ndefaults: {level: DEBUG}\n",
        )
        .unwrap();
        let level = |l: &str| p.parse(l).unwrap().level;
        assert_eq!(level("3 x"), Level::Error);
        assert_eq!(level("W x"), Level::Warning);
        assert_eq!(level("w x"), Level::Warning);
        assert_eq!(level("fatal x"), Level::Critical);
        assert_eq!(level("zzz x"), Level::Debug);
    }

    #[test]
    fn time_formats_read_with_and_without_a_year() {
        let p = compile("name: x\nregex: '^(?P<timestamp>\\S+ \\S+) (?P<message>.*)'\ntime_format: '%m%d %H:%M:%S%.6f'\ntimezone: utc\n").unwrap();
        let ts = p
            .parse("0102 03:04:05.000006 hi")
            .unwrap()
            .timestamp
            .unwrap();
        use chrono::Datelike;
        assert_eq!(
            ts.format("%m-%d %H:%M:%S%.6f").to_string(),
            "01-02 03:04:05.000006"
        );
        assert!(ts <= chrono::Utc::now() + chrono::Duration::days(1));
        assert!(ts.year() >= 2025);
        let p = compile(
            "name: x\nregex: '^(?P<timestamp>\\d+) (?P<message>.*)'\ntime_format: unix_ms\n",
        )
        .unwrap();
        let ts = p.parse("1764547200123 hi").unwrap().timestamp.unwrap();
        assert_eq!(crate::record::format_ts(&ts), "2025-12-01T00:00:00.123000Z");
    }

    fn run(yaml: &str, input: &str) -> Vec<Output> {
        let chain = Arc::new(ParserChain::new(vec![Arc::new(compile(yaml).unwrap())]));
        super::super::examples::assemble(&chain, input)
    }

    fn records(out: &[Output]) -> Vec<&crate::record::LogRecord> {
        out.iter()
            .filter_map(|o| match o {
                Output::Record(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    const STACK: &str = "name: s\nmultiline:\n  start: '^Boom: (?P<exception_message>.*)'\n  continue: '^\\s+at |^$'\ndefaults: {exception_type: Boom}\n";

    #[test]
    fn a_start_line_alone_is_an_ordinary_line_with_its_own_offset() {
        let out = run(STACK, "Boom: not a trace\nnext\n");
        let recs = records(&out);
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].message.as_str(), recs[0].offset),
            ("Boom: not a trace", Some(0))
        );
        assert_eq!(recs[0].traceback, None);
        assert_eq!(recs[1].offset, Some(18));
    }

    #[test]
    fn blank_lines_belong_only_between_lines_that_belong() {
        let out = run(STACK, "Boom: x\n  at a\n\n  at b\n\n\nafter\n");
        let recs = records(&out);
        assert_eq!(recs.len(), 2, "{recs:#?}");
        assert_eq!(
            recs[0].traceback.as_deref(),
            Some("Boom: x\n  at a\n\n  at b\n")
        );
        assert_eq!(recs[0].exception_type.as_deref(), Some("Boom"));
        assert_eq!(recs[0].level, Level::Error);
        assert_eq!(
            (recs[1].message.as_str(), recs[1].offset),
            ("after", Some(25))
        );
    }

    #[test]
    fn a_stack_trace_after_an_error_line_is_that_records_traceback() {
        let out = run(
            STACK,
            "ERROR:loader:shard failed\nBoom: x\n  at a\nINFO:root:next\n",
        );
        let recs = records(&out);
        assert_eq!(recs.len(), 2, "{recs:#?}");
        assert_eq!(recs[0].message, "shard failed");
        assert_eq!(recs[0].traceback.as_deref(), Some("Boom: x\n  at a\n"));
        assert_eq!(recs[0].exception_type.as_deref(), Some("Boom"));
    }

    #[test]
    fn a_broken_user_file_is_an_error_when_strict_and_left_out_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yml"), "name: a\nregex: '(x'\n").unwrap();
        std::fs::write(
            dir.path().join("b.yml"),
            "name: b\nregex: '^b (?P<message>.*)'\n",
        )
        .unwrap();
        let dirs = [dir.path().to_path_buf()];
        let e = load(&dirs, true).err().unwrap();
        assert!(e.to_string().contains("a.yml:2:"), "{e}");
        let loaded = load(&dirs, false).unwrap();
        assert!(
            loaded.warnings[0].contains("a.yml:2:"),
            "{:?}",
            loaded.warnings
        );
        assert_eq!(loaded.parsers[0].name, "b");
        assert!(loaded.parsers.iter().any(|p| p.name == "java"));
    }

    #[test]
    fn progress_captures_are_a_progress_update_and_the_line_a_record() {
        let yaml = "name: steps\nregex: '^step (?P<progress_current>\\d+)/(?P<progress_total>\\d+) (?P<message>.*)'\ndefaults: {progress_task: train}\n";
        let out = run(yaml, "step 30/100 loss=0.2\n");
        let Output::Progress(p) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (p.task.as_str(), p.current, p.total),
            ("train", 30.0, Some(100.0))
        );
        assert_eq!(records(&out)[0].message, "loss=0.2");
    }

    #[test]
    fn every_shipped_parser_compiles_and_passes_its_examples() {
        for source in shipped_sources() {
            let parser = Arc::new(compile_source(&source).unwrap());
            assert!(!parser.examples.is_empty(), "{}", source.origin);
            let failures = run_examples(&parser);
            assert!(failures.is_empty(), "{}: {:?}", source.origin, failures);
        }
    }
}
