//! Splits a byte stream into top-level JSON values, line by line, so one bad value costs only
//! itself.
//!
//! A plain streaming JSON parser stops at the first syntax error. Replay input comes from
//! `kubectl -w -o json` (multi-line, pretty-printed values), from watch streams (one value per
//! line) and from hand-edited files, so the splitter tracks bracket depth outside strings and
//! treats a line that starts with `{` or `[` in column 0 while a value is still open as the start
//! of a new value: the open one was truncated. kubectl indents everything inside a value, so a
//! column-0 bracket never occurs within one.

/// A candidate value: the bytes of one or more whole lines, and where they started.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    /// 1-based line number of the chunk's first line.
    pub line: u64,
    pub bytes: Vec<u8>,
    /// Set when the chunk is known to be bad before parsing (too long); the parser reports it.
    pub oversized: bool,
}

/// Values larger than this are reported as malformed instead of buffered: a missing newline in
/// a huge input must not take the process's memory with it.
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// The bytes that open a value (and, in column 0, start a new one).
const OPENERS: [u8; 2] = [b'{', b'['];

#[derive(Default)]
pub struct Splitter {
    buf: Vec<u8>,
    start_line: u64,
    next_line: u64,
    depth: i64,
    in_string: bool,
    escaped: bool,
    /// Dropping the rest of an oversized value, until a new value starts in column 0.
    discarding: bool,
}

impl Splitter {
    pub fn new() -> Self {
        Splitter {
            next_line: 1,
            ..Default::default()
        }
    }

    /// Feeds one line (with or without its newline); returns the chunks it completed, in order.
    pub fn push_line(&mut self, line: &[u8], out: &mut Vec<Chunk>) {
        let line_no = self.next_line;
        self.next_line += 1;
        let starts_value = line.first().is_some_and(|b| OPENERS.contains(b));
        if self.discarding {
            if !starts_value {
                return;
            }
            self.discarding = false;
        }
        if !self.buf.is_empty() && starts_value && self.depth > 0 {
            out.push(self.take(false));
        }
        if self.buf.is_empty() {
            if line.iter().all(u8::is_ascii_whitespace) {
                return;
            }
            self.start_line = line_no;
        }
        if self.buf.len() + line.len() > MAX_VALUE_BYTES {
            self.buf.clear();
            out.push(self.take(true));
            self.discarding = true;
            return;
        }
        self.scan(line);
        self.buf.extend_from_slice(line);
        // A string cannot span lines in JSON, and a stray closer can never be repaired by what
        // follows: both end the chunk now, to be reported by the parser.
        if self.depth <= 0 || self.in_string {
            out.push(self.take(false));
        }
    }

    /// Ends the input: whatever is still open is a (truncated) chunk of its own.
    pub fn finish(&mut self) -> Option<Chunk> {
        if self.buf.is_empty() {
            None
        } else {
            Some(self.take(false))
        }
    }

    fn scan(&mut self, line: &[u8]) {
        let mut i = 0;
        while i < line.len() {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                // Most of an event's bytes are inside strings: jump to the next quote or escape.
                match memchr::memchr2(b'"', b'\\', &line[i..]) {
                    Some(at) => {
                        i += at;
                        if line[i] == b'\\' {
                            self.escaped = true;
                        } else {
                            self.in_string = false;
                        }
                        i += 1;
                    }
                    None => return,
                }
                continue;
            }
            match line[i] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth -= 1,
                _ => {}
            }
            i += 1;
        }
    }

    fn take(&mut self, oversized: bool) -> Chunk {
        let chunk = Chunk {
            line: self.start_line,
            bytes: std::mem::take(&mut self.buf),
            oversized,
        };
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<(u64, String)> {
        let mut s = Splitter::new();
        let mut out = Vec::new();
        for line in text.split_inclusive('\n') {
            s.push_line(line.as_bytes(), &mut out);
        }
        out.extend(s.finish());
        out.into_iter()
            .map(|c| (c.line, String::from_utf8(c.bytes).unwrap()))
            .collect()
    }

    #[test]
    fn one_value_per_line_gives_one_chunk_per_line() {
        let chunks = split("{\"a\":1}\n\n{\"b\":\"}{\"}\n");
        assert_eq!(
            chunks,
            vec![(1, "{\"a\":1}\n".into()), (3, "{\"b\":\"}{\"}\n".into())]
        );
    }

    #[test]
    fn pretty_printed_values_span_lines() {
        let text = "{\n    \"type\": \"ADDED\",\n    \"object\": {\n        \"x\": [1, 2]\n    }\n}\n{\"b\":2}\n";
        let chunks = split(text);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].0, 1);
        assert!(chunks[0].1.ends_with("}\n"));
        assert_eq!(chunks[1], (7, "{\"b\":2}\n".into()));
    }

    #[test]
    fn a_truncated_value_ends_where_the_next_begins() {
        let chunks = split("{\"type\":\"ADDED\",\"object\":{\"a\":1\n{\"b\":2}\n");
        assert_eq!(
            chunks,
            vec![
                (1, "{\"type\":\"ADDED\",\"object\":{\"a\":1\n".into()),
                (2, "{\"b\":2}\n".into())
            ]
        );
    }

    #[test]
    fn an_unterminated_string_or_stray_closer_ends_its_chunk() {
        let chunks = split("{\"a\":\"oops\n{\"b\":2}\n}\n{\"c\":3}\n");
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[2], (3, "}\n".into()));
        assert_eq!(chunks[3], (4, "{\"c\":3}\n".into()));
    }

    #[test]
    fn garbage_lines_are_their_own_chunks() {
        let chunks = split("not json\n{\"a\":1}\n");
        assert_eq!(
            chunks,
            vec![(1, "not json\n".into()), (2, "{\"a\":1}\n".into())]
        );
    }

    #[test]
    fn a_value_without_a_final_newline_is_still_delivered() {
        assert_eq!(split("{\"a\":1}"), vec![(1, "{\"a\":1}".into())]);
    }
}
