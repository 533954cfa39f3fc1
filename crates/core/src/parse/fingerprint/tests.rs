//! The grouping rule on real CPython 3.11 traceback shapes.

use super::*;
use crate::record::{Level, StreamKind};

fn record(level: Level, logger: Option<&str>, message: &str) -> LogRecord {
    let mut r = LogRecord::plain(message.to_string(), StreamKind::Stderr, "stderr");
    r.level = level;
    r.logger = logger.map(str::to_string);
    r
}

/// An ERROR record carrying `traceback`, with the exception type and
/// message taken from its last line as the collector would.
fn tb_record(traceback: &str) -> LogRecord {
    let last = traceback.lines().last().unwrap();
    let (ty, msg) = last.split_once(": ").unwrap_or((last, ""));
    let mut r = record(Level::Error, Some("train"), "step failed");
    r.traceback = Some(traceback.to_string());
    r.exception_type = Some(ty.to_string());
    r.exception_message = Some(msg.to_string());
    r
}

fn group(traceback: &str) -> String {
    error_group(&tb_record(traceback)).unwrap()
}

const NAN: &str = r#"Traceback (most recent call last):
  File "/srv/app-v2/pkg/train.py", line 22, in <module>
    run()
  File "/srv/app-v2/pkg/train.py", line 18, in run
    step(b)
  File "/srv/app-v2/pkg/train.py", line 7, in step
    return ops.check(loss)
           ^^^^^^^^^^^^^^^
  File "/srv/app-v2/.venv/lib/python3.11/site-packages/torch/ops.py", line 3, in check
    raise ValueError(f"loss is nan at step {x}")
ValueError: loss is nan at step 1200
"#;

/// The same bug: other line numbers, another message.
const NAN_EDITED: &str = r#"Traceback (most recent call last):
  File "/srv/app-v2/pkg/train.py", line 25, in <module>
    run()
  File "/srv/app-v2/pkg/train.py", line 21, in run
    step(b)
  File "/srv/app-v2/pkg/train.py", line 9, in step
    return ops.check(loss)
           ^^^^^^^^^^^^^^^
  File "/srv/app-v2/.venv/lib/python3.11/site-packages/torch/ops.py", line 5, in check
    raise ValueError(f"loss is nan at step {x}")
ValueError: loss is nan at step 88
"#;

/// The same bug deployed elsewhere, with another Python.
const NAN_ELSEWHERE: &str = r#"Traceback (most recent call last):
  File "/opt/releases/42/pkg/train.py", line 22, in <module>
    run()
  File "/opt/releases/42/pkg/train.py", line 18, in run
    step(b)
  File "/opt/releases/42/pkg/train.py", line 7, in step
    return ops.check(loss)
           ^^^^^^^^^^^^^^^
  File "/usr/local/lib/python3.12/dist-packages/torch/ops.py", line 3, in check
    raise ValueError(f"loss is nan at step {x}")
ValueError: loss is nan at step 3
"#;

const SUBSCRIPT: &str = r#"Traceback (most recent call last):
  File "/srv/app-v2/pkg/train.py", line 22, in <module>
    run()
  File "/srv/app-v2/pkg/train.py", line 18, in run
    step(b)
  File "/srv/app-v2/pkg/train.py", line 7, in step
    return batch["a"]["b"]
           ~~~~~~~~~~^^^^^
TypeError: 'NoneType' object is not subscriptable
"#;

const CHAINED: &str = r#"Traceback (most recent call last):
  File "/srv/app-v2/pkg/data.py", line 11, in load
    open(path)
FileNotFoundError: [Errno 2] No such file or directory: '/data/x.bin'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/srv/app-v2/pkg/train.py", line 23, in <module>
    load("/data/x.bin")
  File "/srv/app-v2/pkg/data.py", line 13, in load
    raise RuntimeError("shard missing: " + path) from e
RuntimeError: shard missing: /data/x.bin
"#;

#[test]
fn fnv1a64_is_pinned() {
    // Published FNV-1a 64 test vectors.
    assert_eq!(fnv1a64_parts(&[""]), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64_parts(&["a"]), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64_parts(&["foobar"]), 0x8594_4171_f739_67e8);
    // Parts are joined with 0x1f.
    assert_eq!(
        fnv1a64_parts(&["foo", "bar"]),
        fnv1a64_parts(&["foo\x1fbar"])
    );
    // The whole rule: this value must never change.
    let r = record(
        Level::Error,
        Some("loader"),
        "failed to load shard 17 from /data/a.bin",
    );
    assert_eq!(
        error_group(&r).unwrap(),
        format!(
            "{:016x}",
            fnv1a64_parts(&["msg", "loader", "failed to load shard <n> from <path>"])
        )
    );
    assert_eq!(error_group(&r).unwrap(), "ec24bde74e99caa0");
    // ["tb", "ValueError", "pkg/train.py", "<module>", "pkg/train.py", "run", "pkg/train.py", "step"]
    assert_eq!(group(NAN), "9483637145eb3e00");
}

#[test]
fn group_is_16_lowercase_hex() {
    let g = group(NAN);
    assert_eq!(g.len(), 16);
    assert!(g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
}

#[test]
fn same_bug_with_other_message_and_lines_is_one_group() {
    assert_eq!(group(NAN), group(NAN_EDITED));
}

#[test]
fn same_bug_under_another_install_directory_is_one_group() {
    assert_eq!(group(NAN), group(NAN_ELSEWHERE));
}

#[test]
fn other_exception_type_at_same_place_is_another_group() {
    assert_eq!(failure_site(SUBSCRIPT), failure_site(NAN));
    assert_ne!(group(NAN), group(SUBSCRIPT));
    let key_error = NAN.replace("ValueError: loss is nan at step 1200", "KeyError: 'loss'");
    assert_ne!(group(NAN), group(&key_error));
    // Also when the type has to be read from the traceback itself.
    let mut a = tb_record(NAN);
    let mut b = tb_record(&key_error);
    a.exception_type = None;
    b.exception_type = None;
    assert_eq!(error_group(&a), Some(group(NAN)));
    assert_eq!(error_group(&b), Some(group(&key_error)));
}

#[test]
fn other_innermost_own_function_is_another_group() {
    let other = NAN.replace("line 7, in step", "line 7, in eval_step");
    assert_ne!(group(NAN), group(&other));
}

#[test]
fn library_frames_innermost_are_skipped() {
    // The library frame is not part of the group: another library version
    // with another innermost function is the same group…
    let other_lib = NAN.replace("line 3, in check", "line 40, in _check_finite");
    assert_eq!(group(NAN), group(&other_lib));
    // …and failure_site points at the program's own frame.
    let site = failure_site(NAN).unwrap();
    assert_eq!(site.file, "/srv/app-v2/pkg/train.py");
    assert_eq!(site.function, "step");
}

#[test]
fn only_library_frames_use_the_innermost_frames() {
    let tb = r#"Traceback (most recent call last):
  File "<string>", line 5, in <module>
  File "<string>", line 4, in parse
  File "/root/.pyenv/versions/3.11.7/lib/python3.11/json/__init__.py", line 346, in loads
    return _default_decoder.decode(s)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/root/.pyenv/versions/3.11.7/lib/python3.11/json/decoder.py", line 337, in decode
    obj, end = self.raw_decode(s, idx=_w(s, 0).end())
               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/root/.pyenv/versions/3.11.7/lib/python3.11/json/decoder.py", line 353, in raw_decode
    obj, end = self.scan_once(s, idx)
               ^^^^^^^^^^^^^^^^^^^^^^
json.decoder.JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)
"#;
    assert!(final_frames(tb).iter().all(|f| !is_own(f)));
    let site = failure_site(tb).unwrap();
    assert_eq!((site.function.as_str(), site.line), ("raw_decode", 353));
    let changed_caller = tb.replace("in parse", "in parse_config");
    assert_eq!(group(tb), group(&changed_caller));
    let changed_inner = tb.replace("in raw_decode", "in raw_decode2");
    assert_ne!(group(tb), group(&changed_inner));
}

#[test]
fn chained_traceback_uses_the_final_part() {
    let frames = final_frames(CHAINED);
    let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
    assert_eq!(names, ["<module>", "load"]);
    let site = failure_site(CHAINED).unwrap();
    assert_eq!(
        (site.file.as_str(), site.line),
        ("/srv/app-v2/pkg/data.py", 13)
    );
    // The cause does not count: another cause is the same group.
    let final_only = &CHAINED[CHAINED.find("\nTraceback").unwrap() + 1..];
    assert_eq!(group(CHAINED), group(final_only));
    let other_cause = CHAINED.replace("in load\n    open", "in fetch\n    open");
    assert_eq!(group(CHAINED), group(&other_cause));
    // The type is the final exception's, also when read from the text.
    assert_eq!(parse_exception_type(CHAINED), "RuntimeError");
}

#[test]
fn during_handling_chain_uses_the_final_part() {
    let tb = r#"Traceback (most recent call last):
  File "/srv/app/pkg/cache.py", line 26, in get
    return self.items[key]
           ~~~~~~~~~~^^^^^
KeyError: 'k'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/srv/app/pkg/cache.py", line 28, in get
    return 1 / self.misses
           ~~^~~~~~~~~~~~~
ZeroDivisionError: division by zero
"#;
    let frames = final_frames(tb);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].line, 28);
    assert_eq!(parse_exception_type(tb), "ZeroDivisionError");
}

#[test]
fn recursion_depth_does_not_matter() {
    let deep = r#"Traceback (most recent call last):
  File "/srv/app/pkg/tree.py", line 31, in <module>
    walk(root)
  File "/srv/app/pkg/tree.py", line 30, in walk
    return walk(node.child)
           ^^^^^^^^^^^^^^^^
  File "/srv/app/pkg/tree.py", line 30, in walk
    return walk(node.child)
           ^^^^^^^^^^^^^^^^
  File "/srv/app/pkg/tree.py", line 30, in walk
    return walk(node.child)
           ^^^^^^^^^^^^^^^^
  [Previous line repeated 996 more times]
RecursionError: maximum recursion depth exceeded
"#;
    let shallow = r#"Traceback (most recent call last):
  File "/srv/app/pkg/tree.py", line 31, in <module>
    walk(root)
  File "/srv/app/pkg/tree.py", line 30, in walk
    return walk(node.child)
           ^^^^^^^^^^^^^^^^
RecursionError: maximum recursion depth exceeded
"#;
    assert_eq!(final_frames(deep).len(), 4);
    assert_eq!(group(deep), group(shallow));
}

#[test]
fn exception_group_uses_its_own_frames() {
    let tb = r#"  + Exception Group Traceback (most recent call last):
  |   File "/srv/app/pkg/train.py", line 38, in <module>
  |     raise ExceptionGroup("eg", errs + [TypeError("t")])
  | ExceptionGroup: eg (2 sub-exceptions)
  +-+---------------- 1 ----------------
    | Traceback (most recent call last):
    |   File "/srv/app/pkg/train.py", line 36, in <module>
    |     try: fn()
    |          ^^^^
    |   File "/srv/app/pkg/train.py", line 33, in g
    |     def g(): raise ValueError("v")
    |              ^^^^^^^^^^^^^^^^^^^^^
    | ValueError: v
    +---------------- 2 ----------------
    | TypeError: t
    +------------------------------------
"#;
    let frames = final_frames(tb);
    assert_eq!(
        frames,
        [Frame {
            file: "/srv/app/pkg/train.py".into(),
            line: 38,
            function: "<module>".into()
        }]
    );
    assert_eq!(parse_exception_type(tb), "ExceptionGroup");
}

#[test]
fn syntax_error_location_is_a_frame() {
    let tb = r#"Traceback (most recent call last):
  File "/srv/app/main.py", line 1, in <module>
    import bad
  File "/srv/app/pkg/bad.py", line 1
    x = = 1
        ^
SyntaxError: invalid syntax
"#;
    let site = failure_site(tb).unwrap();
    assert_eq!(
        (site.file.as_str(), site.line, site.function.as_str()),
        ("/srv/app/pkg/bad.py", 1, "")
    );
    assert_eq!(parse_exception_type(tb), "SyntaxError");
}

#[test]
fn failure_site_is_the_innermost_own_frame_as_printed() {
    let site = failure_site(NAN).unwrap();
    assert_eq!(
        site,
        Frame {
            file: "/srv/app-v2/pkg/train.py".into(),
            line: 7,
            function: "step".into()
        }
    );
    assert_eq!(failure_site("no traceback here"), None);
}

#[test]
fn plain_errors_group_by_logger_and_masked_message() {
    let a = record(
        Level::Error,
        Some("loader"),
        "failed to load shard 17 from /data/a.bin",
    );
    let b = record(
        Level::Error,
        Some("loader"),
        "failed to load shard 4 from /data/b.bin",
    );
    let c = record(
        Level::Error,
        Some("writer"),
        "failed to load shard 4 from /data/b.bin",
    );
    assert_eq!(error_group(&a), error_group(&b));
    assert_ne!(error_group(&a), error_group(&c));
    let critical = record(
        Level::Critical,
        Some("loader"),
        "failed to load shard 9 from /d/c.bin",
    );
    assert_eq!(error_group(&critical), error_group(&a));
    let mut typed = b.clone();
    typed.exception_type = Some("OSError".into());
    assert_ne!(error_group(&typed), error_group(&a));
}

#[test]
fn below_error_has_no_group() {
    for level in [Level::Debug, Level::Info, Level::Warning] {
        assert_eq!(error_group(&record(level, None, "failed")), None);
    }
    let mut info_with_tb = tb_record(NAN);
    info_with_tb.level = Level::Info;
    assert_eq!(error_group(&info_with_tb), None);
}

#[test]
fn own_frames() {
    let own = |file: &str| {
        is_own(&Frame {
            file: file.into(),
            line: 1,
            function: "f".into(),
        })
    };
    assert!(own("train.py"));
    assert!(own("./train.py"));
    assert!(own("/home/u/proj/train.py"));
    assert!(own("/home/u/lib/python/helpers.py"));
    assert!(own(r"C:\Users\u\proj\train.py"));
    assert!(own("<ipython-input-3-5e3b0a1c2d4f>"));
    assert!(!own(
        "/home/u/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py"
    ));
    assert!(!own("/usr/lib/python3/dist-packages/yaml/__init__.py"));
    assert!(!own("/usr/lib/python3.10/json/decoder.py"));
    assert!(!own("/usr/lib64/python3.9/asyncio/tasks.py"));
    assert!(!own("/opt/conda/lib/python3.13t/threading.py"));
    assert!(!own(r"C:\Python311\Lib\asyncio\runners.py"));
    assert!(!own(
        r"C:\proj\.venv\Lib\site-packages\numpy\core\_methods.py"
    ));
    assert!(!own("<frozen importlib._bootstrap>"));
    assert!(!own("<string>"));
    assert!(!own("<stdin>"));
}

#[test]
fn short_file_keeps_two_components() {
    assert_eq!(short_file("/srv/app-v2/pkg/train.py"), "pkg/train.py");
    assert_eq!(short_file("./train.py"), "train.py");
    assert_eq!(short_file("train.py"), "train.py");
    assert_eq!(short_file(r"C:\srv\app\pkg\train.py"), "pkg/train.py");
    assert_eq!(
        short_file("<frozen importlib._bootstrap>"),
        "<frozen importlib._bootstrap>"
    );
}

#[test]
fn frames_in_exception_groups_and_loguru_are_read() {
    let (d, f) = parse_frame_line(r#"    | File "x.py", line 3, in f"#).unwrap();
    assert_eq!(
        (d, f.file.as_str(), f.line, f.function.as_str()),
        (5, "x.py", 3, "f")
    );
    let (d, f) = parse_frame_line(r#"> File "x.py", line 3, in f"#).unwrap();
    assert_eq!((d, f.function.as_str()), (0, "f"));
    let (_, f) =
        parse_frame_line(r#"  File "x.py", line 3, in f [Previous line repeated 2 more times]"#)
            .unwrap();
    assert_eq!(f.function, "f");
    assert!(parse_frame_line("    ~~~~~~~~~~^^^^^").is_none());
    assert!(parse_frame_line("  [Previous line repeated 996 more times]").is_none());
}

#[test]
fn mask_examples() {
    let cases = [
        (
            "user 8812 not found in '/data/x.csv'",
            "user <n> not found in <str>",
        ),
        (
            "failed to load shard 17 from /data/a.bin",
            "failed to load shard <n> from <path>",
        ),
        ("loss -3.25e-4 at step 1,200", "loss <n> at step <n>,<n>"),
        ("object at 0x7f3a2c1d0e10", "object at <n>"),
        ("job 5f3a9b21e0 failed", "job <n> failed"),
        ("job 52839102 failed", "job <n> failed"),
        (
            "run 123e4567-e89b-12d3-a456-426614174000 done",
            "run <uuid> done",
        ),
        ("cannot reach 10.0.0.12:5432", "cannot reach <ip>"),
        (
            "GET https://api.example.com/v1/items?id=3 failed",
            "GET <url> failed",
        ),
        (r"missing C:\data\x.csv", "missing <path>"),
        ("read ./cache/a.npy and ~/x", "read <path> and <path>"),
        ("can't open 'a.txt': denied", "can't open <str>: denied"),
        (r#"key "alpha" missing"#, "key <str> missing"),
        (
            "gpu0 out of memory after 12ms",
            "gpu0 out of memory after <n>ms",
        ),
        ("shard-17 of 3/10", "shard-<n> of <n>/<n>"),
        ("at 2024-05-01T10:00:00.123Z", "at <ts>"),
        ("deadbeef and conv2d stay", "deadbeef and conv2d stay"),
        ("and/or stays", "and/or stays"),
        ("", ""),
    ];
    for (input, expected) in cases {
        assert_eq!(mask(input), expected, "mask({input:?})");
    }
}

#[test]
fn mask_is_safe_on_odd_input() {
    assert_eq!(mask("é 12 ü'x' 'ä'"), "é <n> ü'x' <str>");
    let long = "g".repeat(10_000) + &"1".repeat(10_000);
    assert_eq!(mask(&long), long);
}
