//! Byte-to-text cleaning shared by framing and the parsers.

/// Decodes bytes lossily, strips terminal escape sequences and replaces NUL
/// bytes with `␀`. The common case (valid UTF-8, no ESC, no NUL) copies once.
pub fn clean_text(bytes: &[u8]) -> String {
    let needs_work = bytes.iter().any(|&b| b == 0x1b || b == 0 || b >= 0x80);
    if !needs_work {
        // Pure ASCII without ESC or NUL.
        return unsafe_free_ascii(bytes);
    }
    let text = String::from_utf8_lossy(bytes);
    let text = strip_ansi(&text);
    if text.contains('\0') {
        text.replace('\0', "\u{2400}")
    } else {
        text
    }
}

fn unsafe_free_ascii(bytes: &[u8]) -> String {
    // All bytes are < 0x80, so this never fails.
    String::from_utf8(bytes.to_vec()).unwrap_or_default()
}

/// Removes ANSI/VT escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL`
/// or `ESC \`), DCS/SOS/PM/APC strings, two- and three-byte escapes, and the
/// 8-bit CSI (U+009B).
pub fn strip_ansi(text: &str) -> String {
    if !text.contains(['\x1b', '\u{9b}']) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']') | Some('P') | Some('X') | Some('^') | Some('_') => {
                    skip_string(&mut chars)
                }
                Some(c) if (' '..='/').contains(&c) => {
                    // ESC, intermediates, final byte (e.g. `ESC ( B`).
                    while let Some(&n) = chars.peek() {
                        chars.next();
                        if !(' '..='/').contains(&n) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            c => out.push(c),
        }
    }
    out
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            break;
        }
    }
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        if c == '\x07' {
            break;
        }
        if c == '\x1b' {
            if chars.peek() == Some(&'\\') {
                chars.next();
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colour_cursor_title_and_charset_sequences() {
        let s = "\x1b[1;31mred\x1b[0m \x1b[2K\x1b[1A up \x1b]0;title\x07t \x1b(Bok";
        assert_eq!(strip_ansi(s), "red  up t ok");
    }

    #[test]
    fn keeps_other_control_characters_for_the_output_layer_to_escape() {
        assert_eq!(strip_ansi("a\x07b\x08c"), "a\x07b\x08c");
    }

    #[test]
    fn clean_text_handles_garbage() {
        assert_eq!(
            clean_text(b"\xff\xfe\0\x1b[0m!"),
            "\u{fffd}\u{fffd}\u{2400}!"
        );
    }
}
