//! An incremental parser of server-sent events (`text/event-stream`, as the HTML standard
//! defines it), as far as [`crate::MessageStream`] needs it: `event` and `data` fields,
//! comments, the three line endings, and input cut into chunks at any byte.
//!
//! It is kept apart from the HTTP side so that every way a stream can be cut can be tested
//! without a network.

use std::collections::VecDeque;

/// The longest line accepted (a message's body is far smaller): beyond it the stream is
/// refused rather than buffered without end.
pub(crate) const MAX_LINE: usize = 64 << 20;

/// One event: its type (`message` when the stream did not name one) and its `data` lines,
/// joined by `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field.
    pub event: String,
    /// The `data:` fields.
    pub data: String,
}

/// The parser's state between two chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last chunk ended with `\r`: a `\n` first in the next one belongs to it.
    after_cr: bool,
    /// The first line was seen (a byte order mark may open the stream).
    started: bool,
    /// The event being read.
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Reads the next bytes of the stream, appending the events they complete to `out`. Fails
    /// when a line grows past [`MAX_LINE`].
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut VecDeque<SseEvent>) -> Result<(), String> {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        // A line ending never occurs inside a multi-byte UTF-8 character, so splitting the
        // bytes there never splits a character.
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push(&bytes[..end])?;
            if bytes[end] == b'\r' {
                match bytes.get(end + 1) {
                    Some(b'\n') => bytes = &bytes[end + 2..],
                    Some(_) => bytes = &bytes[end + 1..],
                    None => {
                        self.after_cr = true;
                        bytes = &[];
                    }
                }
            } else {
                bytes = &bytes[end + 1..];
            }
            let line = std::mem::take(&mut self.line);
            self.line_ended(&line, out);
        }
        self.push(bytes)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.line.len() + bytes.len() > MAX_LINE {
            return Err(format!(
                "a line of the event stream is longer than {} MiB",
                MAX_LINE >> 20
            ));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_ended(&mut self, line: &[u8], out: &mut VecDeque<SseEvent>) {
        let text = String::from_utf8_lossy(line);
        let mut text: &str = &text;
        if !self.started {
            self.started = true;
            text = text.strip_prefix('\u{feff}').unwrap_or(text);
        }
        if text.is_empty() {
            self.dispatch(out);
            return;
        }
        if text.starts_with(':') {
            return; // a comment: the coordinator's keep-alive
        }
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id`, `retry` and unknown fields: nothing here needs them.
            _ => {}
        }
    }

    /// A blank line ends the event. The standard drops an event without data; a named one
    /// (`event: gap` alone) is kept, since its name is what it says.
    fn dispatch(&mut self, out: &mut VecDeque<SseEvent>) {
        let event = self.event.take().filter(|e| !e.is_empty());
        let data = std::mem::take(&mut self.data);
        let had_data = std::mem::replace(&mut self.has_data, false);
        if had_data || event.is_some() {
            out.push_back(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    /// Parses `input` fed in pieces cut at `cuts` (byte offsets).
    fn parse_cut(input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = VecDeque::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            p.feed(&input[from..cut], &mut out).unwrap();
            from = cut;
        }
        out.into_iter().collect()
    }

    /// Parses `input` cut at every possible set of one and two places, and byte by byte: all
    /// must give the same events as the whole input at once.
    fn parse_every_way(input: &[u8]) -> Vec<SseEvent> {
        let whole = parse_cut(input, &[]);
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(parse_cut(input, &bytewise), whole, "fed byte by byte");
        for a in 0..=input.len() {
            assert_eq!(parse_cut(input, &[a]), whole, "cut at {a}");
            for b in a..=input.len() {
                assert_eq!(parse_cut(input, &[a, b]), whole, "cut at {a} and {b}");
            }
        }
        whole
    }

    #[test]
    fn reads_what_the_coordinator_sends() {
        let input = b": keep-alive\n\nevent: message\ndata: {\"id\":1}\n\n\
event: event\ndata: {\"seq\":7}\n\nevent: gap\ndata: messages may have been missed\n\n";
        assert_eq!(
            parse_every_way(input),
            [
                ev("message", "{\"id\":1}"),
                ev("event", "{\"seq\":7}"),
                ev("gap", "messages may have been missed"),
            ]
        );
    }

    #[test]
    fn any_line_ending_and_a_crlf_cut_in_two() {
        let input = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\rdata: 3\n\n";
        assert_eq!(
            parse_every_way(input),
            [ev("a", "1"), ev("b", "2"), ev("message", "3")]
        );
        // `\r` at the end of one chunk and `\n` at the start of the next are one line end,
        // not an empty line (which would end the event early).
        assert_eq!(
            parse_cut(b"data: x\r\ndata: y\r\n\r\n", &[8]),
            [ev("message", "x\ny")]
        );
    }

    #[test]
    fn characters_split_between_chunks_survive() {
        let input = "event: message\ndata: {\"body\":\"caf\u{e9} \u{1F980}\"}\n\n".as_bytes();
        assert_eq!(
            parse_every_way(input),
            [ev("message", "{\"body\":\"caf\u{e9} \u{1F980}\"}")]
        );
    }

    #[test]
    fn data_lines_join_and_fields_follow_the_standard() {
        let input =
            b"\xEF\xBB\xBFdata:no space\ndata:  two spaces\ndata\nid: 5\nretry: 10\nfoo: bar\n\n";
        assert_eq!(
            parse_every_way(input),
            [ev("message", "no space\n two spaces\n")]
        );
        // A blank line with nothing before it, and an event without data or name, are nothing.
        assert_eq!(parse_cut(b"\n\n: c\n\nid: 1\n\n", &[]), []);
        // An empty `event:` is the default type; a named event without data is kept.
        assert_eq!(
            parse_cut(b"event:\ndata: d\n\nevent: gap\n\n", &[]),
            [ev("message", "d"), ev("gap", "")]
        );
    }

    #[test]
    fn an_unfinished_event_waits_for_its_blank_line() {
        let mut p = SseParser::default();
        let mut out = VecDeque::new();
        p.feed(b"event: message\ndata: {\"a\":", &mut out).unwrap();
        assert!(out.is_empty());
        p.feed(b"1}\n", &mut out).unwrap();
        assert!(out.is_empty());
        p.feed(b"\n", &mut out).unwrap();
        assert_eq!(out.pop_front(), Some(ev("message", "{\"a\":1}")));
    }

    #[test]
    fn refuses_a_line_without_end() {
        let mut p = SseParser::default();
        let mut out = VecDeque::new();
        let chunk = vec![b'x'; 1 << 20];
        let mut failed = None;
        for _ in 0..=(MAX_LINE >> 20) {
            if let Err(e) = p.feed(&chunk, &mut out) {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("refused");
        assert!(e.contains("longer than 64 MiB"), "{e}");
    }
}
