//! Hostile input, fuzzed (proptest): arbitrary bytes — terminal control
//! sequences, half UTF-8 sequences at chunk borders, `\r`-only output, NUL,
//! lines at and past the length cap — through framing and the whole parser
//! chain (tracebacks, progress, directives) in chunks cut anywhere.
//!
//! What must hold: nothing panics; how the bytes were cut into chunks never
//! changes what comes out; no text that reaches a store holds a NUL (which
//! PostgreSQL rejects) or an ESC (which would drive a terminal); a line
//! never grows past the cap (in bytes read) plus its marker.

use super::assemble::{AssemblerTiming, Output, RecordAssembler};
use super::chain::ParserChain;
use super::progress::ProgressParser;
use crate::framing::{Frame, LineFramer};
use crate::record::StreamKind;
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Instant;

const CAP: usize = 256;

/// Bytes that exercise the edges: pieces of escape sequences, UTF-8 and its
/// fragments, line ends of every kind, pmon directives, traceback lines.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        Just(b"\x1b[31m".to_vec()),
        Just(b"\x1b[A".to_vec()),
        Just(b"\x1b[2A".to_vec()),
        Just(b"\x1b]0;title\x07".to_vec()),
        Just(b"\x1b".to_vec()),
        Just("é€😀".as_bytes().to_vec()),
        Just(vec![0xe2, 0x82]),
        Just(vec![0xff, 0xfe, 0x00]),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b" 45%|####5     | 45/100 [00:01<00:01, 39.87it/s]".to_vec()),
        Just(b"##pmon[metric name=loss value=0.1 step=3]\n".to_vec()),
        Just(b"##pmon[progress task=a/b current=1 total=".to_vec()),
        Just(
            b"Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n".to_vec()
        ),
        Just(b"ValueError: bad\n".to_vec()),
        Just(b"ERROR:app:failed\n".to_vec()),
        Just(vec![b'x'; CAP + 7]),
    ]
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..30).prop_map(|pieces| pieces.concat())
}

/// Everything the pipeline would make of `bytes` fed in chunks ending at `cuts`.
fn run(bytes: &[u8], cuts: &[usize]) -> Vec<Output> {
    let mut framer = LineFramer::new(CAP);
    let mut assembler = RecordAssembler::new(
        Arc::new(ParserChain::builtin()),
        Arc::new(ProgressParser::new()),
        AssemblerTiming::default(),
        StreamKind::Stderr,
        "stderr",
    );
    let mut frames = Vec::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    for end in ends {
        framer.push(&bytes[at..end.max(at)], &mut frames);
        at = end.max(at);
    }
    framer.finish(&mut frames);
    let now = Instant::now();
    let mut out = Vec::new();
    for frame in frames {
        let (_, Frame::Line(text) | Frame::Overwrite(text) | Frame::Drawn { text, .. }) = &frame;
        assert!(!text.contains('\0') && !text.contains('\x1b'), "{text:?}");
        // Each byte kept becomes at most 3 (an invalid byte is U+FFFD, NUL
        // is U+2400), plus the marker saying how much was cut.
        assert!(
            text.len() <= 3 * CAP + 64,
            "a line past the cap: {} bytes",
            text.len()
        );
        assembler.frame(frame, now, &mut out);
    }
    assembler.finish(&mut out);
    out
}

/// The parts of an output that must not depend on chunking (timestamps do).
fn comparable(out: &[Output]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Output::Record(r) => format!(
                "record {:?} {:?} {:?} {:?} {:?} {:?}",
                r.level, r.logger, r.message, r.traceback, r.exception_type, r.offset
            ),
            Output::Progress(p) => format!("progress {} {} {:?}", p.task, p.current, p.total),
            Output::Metric(m) => format!("metric {} {} {:?}", m.name, m.value, m.step),
            Output::ParseError { line, reason } => format!("parse error {line:?} {reason}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_cut_anywhere_parse_alike_and_safely(
        bytes in input(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = run(&bytes, &[]);
        let chunked = run(&bytes, &cuts);
        prop_assert_eq!(comparable(&whole), comparable(&chunked));
        for o in &whole {
            if let Output::Record(r) = o {
                for text in [Some(&r.message), r.traceback.as_ref(), r.exception_message.as_ref()].into_iter().flatten() {
                    prop_assert!(!text.contains('\0'), "NUL in {:?}", text);
                }
            }
        }
    }
}
