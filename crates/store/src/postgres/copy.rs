//! Log rows in COPY's binary format.
//!
//! Binary rather than text because the server is the bottleneck of a busy
//! database, not the agent: a text COPY makes the server parse every
//! timestamp and unescape every field, a binary one hands it the values
//! (`bench/README.md`, "Schema variants": 0.84× of a plain text `\copy`
//! into the shipped table against 0.66× for the same rows as text). The
//! agent spends that work on its own core instead.

use crate::sink::{RunContext, SeqRecord};
use chrono::{DateTime, Utc};

/// The columns of one row, in the order [`BinaryRows::push`] writes them.
pub const COLUMNS: &str = "id, experiment_id, run_id, origin, seq, timestamp, level, logger, message, traceback, exception_type, exception_message, stream, source, fields, error_group";
const FIELD_COUNT: i16 = 16;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// PostgreSQL's text and jsonb reject NUL; it is stored as U+2400 (␀).
pub const NUL_STANDIN: &str = "\u{2400}";

/// `text` with NUL made the stand-in.
pub fn safe(text: &str) -> String {
    text.replace('\0', NUL_STANDIN)
}

/// A growing COPY binary stream: header, rows, and the end marker.
pub struct BinaryRows {
    buf: Vec<u8>,
}

impl BinaryRows {
    pub fn new() -> BinaryRows {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        BinaryRows { buf }
    }

    /// Bytes encoded so far (the caller sends and `take`s them in pieces).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The bytes encoded so far, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn push(&mut self, id: i64, ctx: &RunContext, row: &SeqRecord) {
        let rec = &row.record;
        self.buf.extend_from_slice(&FIELD_COUNT.to_be_bytes());
        self.int8(id);
        self.text(Some(&ctx.experiment_id));
        self.text(Some(&ctx.run_id));
        self.text(Some(&row.origin));
        self.int8(row.seq as i64);
        self.timestamp(&rec.timestamp);
        self.text(Some(rec.level.as_str()));
        self.text(rec.logger.as_deref());
        self.text(Some(&rec.message));
        self.text(rec.traceback.as_deref());
        self.text(rec.exception_type.as_deref());
        self.text(rec.exception_message.as_deref());
        self.text(Some(rec.stream.as_str()));
        self.text(Some(&rec.source));
        self.jsonb(rec.fields.as_deref());
        self.text(pmon_core::parse::fingerprint::error_group(rec).as_deref());
    }

    /// The end-of-data marker; nothing may be pushed after it.
    pub fn finish(&mut self) {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
    }

    fn int8(&mut self, value: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    fn timestamp(&mut self, ts: &DateTime<Utc>) {
        self.int8(ts.timestamp_micros().saturating_sub(PG_EPOCH_MICROS));
    }

    fn text(&mut self, value: Option<&str>) {
        let Some(text) = value else {
            self.buf.extend_from_slice(&(-1i32).to_be_bytes());
            return;
        };
        if text.contains('\0') {
            self.bytes(safe(text).as_bytes());
        } else {
            self.bytes(text.as_bytes());
        }
    }

    /// jsonb's binary form: a version byte (1) and the JSON text. `\u0000`
    /// is refused by jsonb like NUL by text, so it gets the same stand-in.
    fn jsonb(&mut self, value: Option<&str>) {
        let Some(json) = value else {
            self.buf.extend_from_slice(&(-1i32).to_be_bytes());
            return;
        };
        let json = if json.contains("\\u0000") {
            std::borrow::Cow::Owned(json.replace("\\u0000", NUL_STANDIN))
        } else {
            std::borrow::Cow::Borrowed(json)
        };
        let len = i32::try_from(json.len() + 1).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.push(1);
        self.buf.extend_from_slice(json.as_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        // Records are capped far below 1 GiB (the framing's line limit).
        let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmon_core::record::{LogRecord, StreamKind};
    use std::sync::Arc;

    fn row(message: &str) -> SeqRecord {
        let mut record = LogRecord::plain(message.into(), StreamKind::Stdout, "stdout");
        record.timestamp = DateTime::parse_from_rfc3339("2000-01-01T00:00:01.5Z")
            .unwrap()
            .with_timezone(&Utc);
        SeqRecord {
            origin: Arc::from("stdout"),
            seq: 7,
            record,
        }
    }

    fn ctx() -> RunContext {
        RunContext {
            experiment_id: "e".into(),
            run_id: "r".into(),
        }
    }

    #[test]
    fn header_rows_and_trailer_follow_the_format() {
        let mut rows = BinaryRows::new();
        rows.push(3, &ctx(), &row("hi"));
        rows.finish();
        let buf = rows.take();
        assert_eq!(&buf[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&buf[19..21], &16i16.to_be_bytes());
        // id: length 8, value 3
        assert_eq!(&buf[21..25], &8i32.to_be_bytes());
        assert_eq!(&buf[25..33], &3i64.to_be_bytes());
        // experiment "e"
        assert_eq!(&buf[33..38], b"\0\0\0\x01e");
        // fields NULL, error_group NULL (an INFO record), then the trailer
        assert_eq!(
            &buf[buf.len() - 10..],
            &[255, 255, 255, 255, 255, 255, 255, 255, 255, 255]
        );
        // 1.5 s after PostgreSQL's epoch
        let micros = 1_500_000i64.to_be_bytes();
        assert!(buf.windows(8).any(|w| w == micros));
    }

    #[test]
    fn nul_becomes_a_visible_stand_in() {
        let mut rows = BinaryRows::new();
        rows.push(1, &ctx(), &row("a\0b"));
        let buf = rows.take();
        let wanted = "a\u{2400}b".as_bytes();
        assert!(buf.windows(wanted.len()).any(|w| w == wanted));
        assert!(!buf[19..].windows(3).any(|w| w == b"a\0b"));
    }
}
