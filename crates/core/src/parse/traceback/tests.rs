use super::*;

/// Feeds `text` line by line; a line nobody takes becomes `Line`, and at the
/// end of input the collector is finished as the caller would at end of stream.
#[derive(Debug, PartialEq)]
enum Out {
    Tb(Traceback),
    Line(String),
}

fn run(text: &str) -> Vec<Out> {
    let mut c = TracebackCollector::new();
    let mut out = Vec::new();
    let mut events = Vec::new();
    for line in text.lines() {
        let taken = c.feed(line, |l| l.starts_with("INFO:"), &mut events);
        drain(&mut events, &mut out);
        if !taken {
            out.push(Out::Line(line.to_string()));
        }
    }
    c.finish(&mut events);
    drain(&mut events, &mut out);
    out
}

fn drain(events: &mut Vec<TracebackEvent>, out: &mut Vec<Out>) {
    for e in events.drain(..) {
        out.push(match e {
            TracebackEvent::Finished(t) => Out::Tb(t),
            TracebackEvent::Released(l) => Out::Line(l),
        });
    }
}

fn only_tb(text: &str) -> Traceback {
    let mut out = run(text);
    assert_eq!(out.len(), 1, "expected one traceback, got {out:#?}");
    match out.remove(0) {
        Out::Tb(t) => t,
        other => panic!("expected a traceback, got {other:?}"),
    }
}

#[test]
fn plain_traceback_with_caret_lines_is_one_record() {
    let text = "Traceback (most recent call last):\n  File \"/x/a.py\", line 3, in <module>\n    main()\n  File \"/x/a.py\", line 2, in main\n    return data[\"a\"][\"b\"]\n           ~~~~~~~~~^^^^^\nTypeError: 'NoneType' object is not subscriptable\n";
    let tb = only_tb(text);
    assert_eq!(tb.text, text);
    assert_eq!(tb.exception_type, "TypeError");
    assert_eq!(
        tb.exception_message,
        "'NoneType' object is not subscriptable"
    );
    assert_eq!(
        tb.exception_line,
        "TypeError: 'NoneType' object is not subscriptable"
    );
}

#[test]
fn chained_by_cause_and_context_keeps_every_part_and_describes_the_last() {
    let text = "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nKeyError: 'k'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"a.py\", line 3, in <module>\nValueError: v\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \"a.py\", line 5, in <module>\nmypkg.errors.StageFailed: stage 'load' failed\n";
    let tb = only_tb(text);
    assert_eq!(tb.text, text);
    assert_eq!(tb.exception_type, "mypkg.errors.StageFailed");
    assert_eq!(tb.exception_message, "stage 'load' failed");
}

#[test]
fn chain_part_without_frames_is_kept() {
    let text = "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nKeyError: 'k'\n\nThe above exception was the direct cause of the following exception:\n\nRuntimeError: wrapped\n";
    let tb = only_tb(text);
    assert_eq!(tb.text, text);
    assert_eq!(tb.exception_type, "RuntimeError");
}

#[test]
fn exception_group_nested_is_one_record_described_by_the_outer_group() {
    let text = concat!(
        "  + Exception Group Traceback (most recent call last):\n",
        "  |   File \"g.py\", line 9, in <module>\n",
        "  |     raise ExceptionGroup(\"stage failures\", errors)\n",
        "  | ExceptionGroup: stage failures (2 sub-exceptions)\n",
        "  +-+---------------- 1 ----------------\n",
        "    | Traceback (most recent call last):\n",
        "    |   File \"g.py\", line 3, in load\n",
        "    | ValueError: bad shard\n",
        "    +---------------- 2 ----------------\n",
        "    | ExceptionGroup: inner (1 sub-exception)\n",
        "    +-+---------------- 1 ----------------\n",
        "      | TypeError: nope\n",
        "      +------------------------------------\n",
    );
    let tb = only_tb(text);
    assert_eq!(tb.text, text);
    assert_eq!(tb.exception_type, "ExceptionGroup");
    assert_eq!(tb.exception_message, "stage failures (2 sub-exceptions)");
    assert_eq!(
        tb.exception_line,
        "ExceptionGroup: stage failures (2 sub-exceptions)"
    );
}

#[test]
fn unindented_line_after_a_group_is_not_part_of_it() {
    let text = "  + Exception Group Traceback (most recent call last):\n  | ExceptionGroup: g (1 sub-exception)\n  +-+---------------- 1 ----------------\n    | ValueError: x\n    +------------------------------------\nnext output\n";
    let out = run(text);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], Out::Line("next output".into()));
}

#[test]
fn compile_time_syntax_error_has_no_header() {
    let text =
        "  File \"/x/bad.py\", line 3\n    x = (1,\n        ^\nSyntaxError: '(' was never closed\n";
    let tb = only_tb(text);
    assert_eq!(tb.text, text);
    assert_eq!(tb.exception_type, "SyntaxError");
    assert_eq!(tb.exception_message, "'(' was never closed");
}

#[test]
fn runtime_syntax_error_with_carets() {
    let text = "Traceback (most recent call last):\n  File \"/x/s.py\", line 2, in <module>\n    compile(src, \"<cfg>\", \"exec\")\n  File \"<cfg>\", line 1\n    x = = 1\n        ^\nSyntaxError: invalid syntax\n";
    let tb = only_tb(text);
    assert_eq!(tb.text, text);
    assert_eq!(tb.exception_message, "invalid syntax");
}

#[test]
fn repeated_line_marker_and_keyboard_interrupt_without_colon() {
    let text = "Traceback (most recent call last):\n  File \"r.py\", line 1, in f\n    f()\n  [Previous line repeated 996 more times]\nKeyboardInterrupt\n";
    let tb = only_tb(text);
    assert_eq!(tb.exception_type, "KeyboardInterrupt");
    assert_eq!(tb.exception_message, "");
}

#[test]
fn multi_line_messages_and_notes_belong_to_the_exception() {
    let text = "Traceback (most recent call last):\n  File \"m.py\", line 1, in <module>\nValueError: first line\nsecond line\n  indented third\nnote one\n";
    let tb = only_tb(text);
    assert_eq!(tb.text, text);
    assert_eq!(
        tb.exception_message,
        "first line\nsecond line\n  indented third\nnote one"
    );
}

#[test]
fn a_log_line_after_the_exception_ends_the_traceback() {
    let out = run("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: v\nINFO:root:next\n");
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], Out::Line("INFO:root:next".into()));
}

#[test]
fn trailing_blank_lines_are_released_not_swallowed() {
    let out = run("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: v\n\nplain text\n");
    assert_eq!(out.len(), 3, "{out:#?}");
    match &out[0] {
        Out::Tb(t) => assert!(t.text.ends_with("ValueError: v\n")),
        other => panic!("{other:?}"),
    }
    assert_eq!(out[1], Out::Line(String::new()));
    assert_eq!(out[2], Out::Line("plain text".into()));
}

#[test]
fn two_tracebacks_back_to_back_are_two_records() {
    let one =
        "Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: v\n";
    let out = run(&format!("{one}{one}"));
    assert_eq!(out.len(), 2);
    assert!(matches!(&out[1], Out::Tb(t) if t.text == one));
}

#[test]
fn idle_policy_is_long_inside_frames_and_short_after_the_exception() {
    let mut c = TracebackCollector::new();
    let mut ev = Vec::new();
    assert_eq!(c.idle_policy(), IdlePolicy::None);
    c.feed(HEADER, |_| false, &mut ev);
    assert_eq!(c.idle_policy(), IdlePolicy::Long);
    c.feed("ValueError: x", |_| false, &mut ev);
    assert_eq!(c.idle_policy(), IdlePolicy::Short);
    c.feed("", |_| false, &mut ev);
    c.feed(CONTEXT, |_| false, &mut ev);
    assert_eq!(c.idle_policy(), IdlePolicy::Long);
}

#[test]
fn ordinary_lines_are_not_tracebacks() {
    for line in ["File saved", "  indented text", "Traceback is a word", ""] {
        assert!(!TracebackCollector::is_start(line), "{line:?}");
    }
}

#[test]
fn a_group_header_is_found_behind_spaces_and_pipes_only() {
    let header = "+ Exception Group Traceback (most recent call last):";
    assert_eq!(group_header_col(header), Some(0));
    assert_eq!(group_header_col(&format!("  {header}")), Some(2));
    assert_eq!(group_header_col(&format!("    | {header}")), Some(6));
    assert_eq!(group_header_col(&format!("x {header}")), None);
    assert_eq!(group_header_col(&format!("  | note: {header}")), None);
    assert_eq!(group_header_col("  | ValueError: x"), None);
    assert_eq!(group_header_col("   "), None);
    assert_eq!(group_header_col(""), None);
}
