//! Framing: turns the raw bytes a program writes into lines of clean text.
//!
//! A [`LineFramer`] is fed arbitrary chunks (a pipe read may end in the middle of
//! a line, of a UTF-8 character or of a CRLF) and yields [`Frame`]s:
//!
//! * `\n` and `\r\n` end a [`Frame::Line`];
//! * a bare `\r` ends a [`Frame::Overwrite`]: the terminal would overwrite that
//!   text, as tqdm does many times a second. Overwrites go to the progress parser
//!   only, so they never become a flood of log records;
//! * text after which the program moves the cursor back up (`ESC [ A`) is a
//!   [`Frame::Drawn`] row: tqdm draws a nested bar (`position=N`) N rows
//!   below the cursor and returns. Like an overwrite it is display, not output;
//!   how far up the cursor went says which bar it is;
//! * a line longer than `max_line_bytes` is capped with a visible marker, and the
//!   framer's memory stays bounded however long the line gets;
//! * the text is decoded lossily (invalid UTF-8 becomes U+FFFD), ANSI/terminal
//!   escape sequences are removed and NUL bytes become `␀` (PostgreSQL text
//!   rejects NUL).
//!
//! Framing knows nothing about log formats; it never drops bytes other than escape
//! sequences and what the cap cuts off.

/// The most bytes any source hands the pipeline in one message. The
/// pipeline's inbox holds 8 messages, so at most 512 KiB of input waits
/// there, whatever the program prints (its queues are bounded by bytes).
pub const CHUNK_BYTES: usize = 64 * 1024;

mod text;

pub use text::clean_text;

/// One unit of text produced by the framer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its line ending.
    Line(String),
    /// Text ended by a bare carriage return (to be overwritten on a terminal).
    Overwrite(String),
    /// Text drawn on a row below the cursor's, which then moved `rows_up`
    /// rows back up: a nested progress bar's row.
    Drawn { text: String, rows_up: u16 },
}

/// A frame and the byte offset in its stream where it starts.
pub type Framed = (u64, Frame);

/// Splits a byte stream into [`Frame`]s. One framer per stream or file.
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    /// Stream offset of the first byte of the current (partial) line.
    line_start: u64,
    /// Stream offset just past the last byte pushed.
    consumed: u64,
    /// Bytes of the current line dropped because of the cap.
    dropped: usize,
    /// The previous chunk ended in `\r`: CRLF or a bare CR, decided by the next byte.
    pending_cr: bool,
    max_line_bytes: usize,
}

impl LineFramer {
    pub fn new(max_line_bytes: usize) -> LineFramer {
        LineFramer {
            buf: Vec::new(),
            line_start: 0,
            consumed: 0,
            dropped: 0,
            pending_cr: false,
            max_line_bytes: max_line_bytes.max(16),
        }
    }

    /// Starts counting offsets at `offset` (a file read from a checkpoint).
    pub fn starting_at(mut self, offset: u64) -> LineFramer {
        self.line_start = offset;
        self.consumed = offset;
        self
    }

    /// The offset of the first byte not yet part of an emitted frame: where a
    /// re-read must start so that nothing is lost.
    pub fn unframed_offset(&self) -> u64 {
        self.line_start
    }

    /// Feeds one chunk; complete frames are appended to `out` with their offsets.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Framed>) {
        if self.pending_cr && !bytes.is_empty() {
            self.pending_cr = false;
            if bytes[0] == b'\n' {
                self.consumed += 1;
                self.emit_line(out);
                bytes = &bytes[1..];
            } else {
                self.emit_overwrite(out);
            }
        }
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.append(&bytes[..pos]);
            if bytes[pos] == b'\n' {
                self.consumed += 1;
                self.emit_line(out);
                bytes = &bytes[pos + 1..];
                continue;
            }
            match bytes.get(pos + 1) {
                Some(b'\n') => {
                    self.consumed += 2;
                    self.emit_line(out);
                    bytes = &bytes[pos + 2..];
                }
                Some(_) => {
                    self.consumed += 1;
                    self.emit_overwrite(out);
                    bytes = &bytes[pos + 1..];
                }
                None => {
                    self.consumed += 1;
                    self.pending_cr = true;
                    return;
                }
            }
        }
        self.append(bytes);
    }

    /// End of stream: whatever is buffered becomes a last line.
    pub fn finish(&mut self, out: &mut Vec<Framed>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.emit_overwrite(out);
        }
        if !self.buf.is_empty() || self.dropped > 0 {
            self.emit_line(out);
        }
    }

    fn emit_line(&mut self, out: &mut Vec<Framed>) {
        let start = self.split_drawn(out);
        out.push((start, Frame::Line(self.take())));
        self.line_start = self.consumed;
    }

    /// What the current text drew before its last cursor-up (`ESC [ N A`)
    /// is a [`Frame::Drawn`] row (tqdm's nested bar; blank when a bar was
    /// cleared); what follows it is printed on the row above, as output (a
    /// log line written right after a bar closed). Returns where that rest
    /// starts.
    fn split_drawn(&mut self, out: &mut Vec<Framed>) -> u64 {
        let Some(end) = last_cursor_up_end(&self.buf) else {
            return self.line_start;
        };
        let rows_up = cursor_rows_up(&self.buf[..end]);
        let drawn = clean_text(&self.buf[..end]);
        if !drawn.trim().is_empty() {
            out.push((
                self.line_start,
                Frame::Drawn {
                    text: drawn,
                    rows_up,
                },
            ));
        }
        self.buf.drain(..end);
        self.line_start + end as u64
    }

    fn append(&mut self, bytes: &[u8]) {
        self.consumed += bytes.len() as u64;
        let room = self.max_line_bytes.saturating_sub(self.buf.len());
        let keep = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..keep]);
        self.dropped += bytes.len() - keep;
    }

    fn emit_overwrite(&mut self, out: &mut Vec<Framed>) {
        let start = self.split_drawn(out);
        let text = self.take();
        self.line_start = self.consumed;
        if !text.is_empty() {
            out.push((start, Frame::Overwrite(text)));
        }
    }

    fn take(&mut self) -> String {
        let mut bytes = &self.buf[..];
        let dropped = self.dropped;
        if dropped > 0 {
            // Cut at a character boundary rather than leave half a character.
            if let Err(e) = std::str::from_utf8(bytes) {
                if e.error_len().is_none() {
                    bytes = &bytes[..e.valid_up_to()];
                }
            }
        }
        let cut = self.buf.len() - bytes.len() + dropped;
        let mut text = clean_text(bytes);
        if cut > 0 {
            text.push_str(&format!(" …[pmon: line truncated, {cut} bytes omitted]"));
        }
        self.buf.clear();
        self.dropped = 0;
        text
    }
}

/// Just past the last cursor-up sequence in `bytes`, if there is one.
fn last_cursor_up_end(bytes: &[u8]) -> Option<usize> {
    if !bytes.contains(&0x1b) {
        return None;
    }
    let mut end = None;
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(2).position(|w| w == b"\x1b[") {
        let params = at + found + 2;
        let digits = bytes[params..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if bytes.get(params + digits) == Some(&b'A') {
            end = Some(params + digits + 1);
        }
        at = params + digits;
    }
    end
}

/// The rows moved up by the cursor-up sequences (`ESC [ A`, `ESC [ 3 A`) in `bytes`.
fn cursor_rows_up(bytes: &[u8]) -> u16 {
    let mut rows: u16 = 0;
    let mut rest = bytes;
    while let Some(at) = rest.windows(2).position(|w| w == b"\x1b[") {
        let params = &rest[at + 2..];
        let digits = params.iter().take_while(|b| b.is_ascii_digit()).count();
        if params.get(digits) == Some(&b'A') {
            let n = std::str::from_utf8(&params[..digits])
                .ok()
                .and_then(|d| d.parse::<u16>().ok())
                .unwrap_or(1);
            rows = rows.saturating_add(n.max(1));
        }
        rest = &params[digits..];
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut f = LineFramer::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out.into_iter().map(|(_, f)| f).collect()
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.to_string())
    }

    #[test]
    fn lf_and_crlf_end_lines_even_when_split_across_chunks() {
        assert_eq!(
            frames(&[b"a\r", b"\nb\n", b"c\r\nd"]),
            vec![line("a"), line("b"), line("c"), line("d")]
        );
    }

    #[test]
    fn bare_carriage_returns_become_overwrites_not_lines() {
        assert_eq!(
            frames(&[b"\r 10%|#", b"  |\r 20%|##  |\r", b"100%|####|\n"]),
            vec![
                Frame::Overwrite(" 10%|#  |".into()),
                Frame::Overwrite(" 20%|##  |".into()),
                line("100%|####|"),
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_kept_lossily_and_split_characters_survive_chunking() {
        let e_acute = "é".as_bytes();
        assert_eq!(
            frames(&[&[b'x', e_acute[0]], &[e_acute[1], 0xff, b'\n']]),
            vec![line("xé\u{fffd}")]
        );
    }

    #[test]
    fn long_lines_are_capped_with_a_marker_and_bounded_memory() {
        let mut f = LineFramer::new(16);
        let mut out = Vec::new();
        for _ in 0..1000 {
            f.push(&[b'a'; 1000], &mut out);
            assert!(f.buf.len() <= 16);
        }
        f.push(b"\nnext\n", &mut out);
        let out: Vec<Frame> = out.into_iter().map(|(_, f)| f).collect();
        assert_eq!(
            out,
            vec![
                line(&format!(
                    "{} …[pmon: line truncated, 999984 bytes omitted]",
                    "a".repeat(16)
                )),
                line("next")
            ]
        );
    }

    #[test]
    fn cap_never_splits_a_character() {
        let mut f = LineFramer::new(16);
        let mut out = Vec::new();
        f.push("aaaaaaaaaaaaaaa€€\n".as_bytes(), &mut out);
        assert_eq!(
            out,
            vec![(
                0,
                line("aaaaaaaaaaaaaaa …[pmon: line truncated, 6 bytes omitted]")
            )]
        );
    }

    #[test]
    fn offsets_say_where_each_frame_starts_and_what_is_unframed() {
        let mut f = LineFramer::new(1 << 20).starting_at(100);
        let mut out = Vec::new();
        f.push(b"ab\r\ncd\rx", &mut out);
        let starts: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![100, 104]);
        assert_eq!(f.unframed_offset(), 107);
        f.push(b"y\n", &mut out);
        assert_eq!(out[2], (107, line("xy")));
        assert_eq!(f.unframed_offset(), 110);
    }

    /// tqdm's nested bar (`position=1`) as a pipe receives it: a newline to
    /// reach its row, the bar, a cursor-up, and the next bar's newline.
    #[test]
    fn rows_drawn_below_the_cursor_are_told_apart_by_how_far_it_goes_back() {
        assert_eq!(
            frames(&[b"\repoch:  0%| | 0/2\n\rbatch:  0%| | 0/3\x1b[A\n\rbatch2\x1b[2A\rtext\n"]),
            vec![
                line("epoch:  0%| | 0/2"),
                Frame::Drawn {
                    text: "batch:  0%| | 0/3".into(),
                    rows_up: 1
                },
                line(""),
                Frame::Drawn {
                    text: "batch2".into(),
                    rows_up: 2
                },
                line("text"),
            ]
        );
    }

    /// A log line written just after a nested bar closed: tqdm cleared the
    /// bar's row and moved the cursor up, then the line was printed there.
    /// It is output, with its offset just past the cursor-up.
    #[test]
    fn text_after_a_cursor_up_is_output_not_a_drawn_row() {
        let mut f = LineFramer::new(1 << 20);
        let mut out = Vec::new();
        f.push(
            b"\r      \x1b[A2026-11-30 18:17:05,710 INFO trainer: epoch 0 done\n",
            &mut out,
        );
        assert_eq!(
            out,
            vec![(
                10,
                line("2026-11-30 18:17:05,710 INFO trainer: epoch 0 done")
            )]
        );
    }

    #[test]
    fn nul_bytes_and_colour_codes_are_cleaned() {
        assert_eq!(
            frames(&[b"\x1b[31mERROR\x1b[0m: a\0b\n"]),
            vec![line("ERROR: a\u{2400}b")]
        );
    }
}
