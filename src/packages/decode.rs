//! Strict streaming decoding of text files to UTF-8. Malformed input is an error that says where,
//! never a silent U+FFFD: a file read with the wrong encoding must not export damaged data.

use encoding_rs::{DecoderResult, Encoding};
use std::io::{self, Read};

/// An input encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEncoding {
    /// Any encoding of the WHATWG Encoding Standard (UTF-8, UTF-16LE/BE, Windows-1252, ...).
    Whatwg(&'static Encoding),
    /// ISO-8859-1 proper: each byte is the code point of the same number. (WHATWG maps the
    /// label to Windows-1252, which differs for 0x80-0x9F.)
    Latin1,
}

impl InputEncoding {
    pub fn name(&self) -> &'static str {
        match self {
            InputEncoding::Whatwg(e) => e.name(),
            InputEncoding::Latin1 => "ISO-8859-1",
        }
    }
}

/// Resolves an encoding name: .NET names, then WHATWG labels.
pub fn encoding_for(name: &str) -> Option<InputEncoding> {
    let n = name.trim().to_ascii_lowercase();
    let special = match n.as_str() {
        "unicode" | "utf-16" | "utf16" => Some(InputEncoding::Whatwg(encoding_rs::UTF_16LE)),
        "bigendianunicode" | "utf16be" => Some(InputEncoding::Whatwg(encoding_rs::UTF_16BE)),
        "utf8" => Some(InputEncoding::Whatwg(encoding_rs::UTF_8)),
        "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin1" | "latin-1" | "l1" => {
            Some(InputEncoding::Latin1)
        }
        _ => None,
    };
    special.or_else(|| Encoding::for_label(n.as_bytes()).map(InputEncoding::Whatwg))
}

enum State {
    /// Not started: the byte-order mark has not been looked for.
    Start(InputEncoding),
    Whatwg(encoding_rs::Decoder),
    Latin1,
}

/// A reader that yields UTF-8. A byte-order mark at the start wins over the configured encoding.
pub struct StrictDecoder<R> {
    inner: R,
    state: State,
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    eof: bool,
    done: bool,
    out: Vec<u8>,
    out_pos: usize,
    /// Input bytes consumed before `input[in_start]`, and line breaks produced so far.
    consumed: u64,
    lines: u64,
    encoding_name: &'static str,
}

impl<R: Read> StrictDecoder<R> {
    pub fn new(inner: R, encoding: InputEncoding) -> Self {
        StrictDecoder {
            inner,
            state: State::Start(encoding),
            input: vec![0; 64 * 1024],
            in_start: 0,
            in_end: 0,
            eof: false,
            done: false,
            out: Vec::with_capacity(96 * 1024),
            out_pos: 0,
            consumed: 0,
            lines: 0,
            encoding_name: encoding.name(),
        }
    }

    /// The encoding in use (after a byte-order mark, if any).
    pub fn encoding_name(&self) -> &'static str {
        self.encoding_name
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.in_start > 0 {
            self.input.copy_within(self.in_start..self.in_end, 0);
            self.consumed += self.in_start as u64;
            self.in_end -= self.in_start;
            self.in_start = 0;
        }
        while !self.eof && self.in_end < self.input.len() {
            let n = self.inner.read(&mut self.input[self.in_end..])?;
            if n == 0 {
                self.eof = true;
            }
            self.in_end += n;
            if self.in_end >= 4 {
                break;
            }
        }
        Ok(())
    }

    fn start(&mut self, configured: InputEncoding) {
        let bytes = &self.input[self.in_start..self.in_end];
        self.state = match Encoding::for_bom(bytes) {
            Some((enc, bom_len)) => {
                self.in_start += bom_len;
                self.encoding_name = enc.name();
                State::Whatwg(enc.new_decoder_without_bom_handling())
            }
            None => match configured {
                InputEncoding::Whatwg(enc) => State::Whatwg(enc.new_decoder_without_bom_handling()),
                InputEncoding::Latin1 => State::Latin1,
            },
        };
    }

    /// Decodes what is buffered into `out`.
    fn decode(&mut self) -> io::Result<()> {
        self.out.clear();
        self.out_pos = 0;
        let input = &self.input[self.in_start..self.in_end];
        match &mut self.state {
            State::Start(_) => {}
            State::Latin1 => {
                for &b in input {
                    let mut tmp = [0u8; 4];
                    self.out
                        .extend_from_slice(char::from(b).encode_utf8(&mut tmp).as_bytes());
                }
                self.in_start = self.in_end;
                if self.eof {
                    self.done = true;
                }
            }
            State::Whatwg(decoder) => {
                let cap = decoder
                    .max_utf8_buffer_length_without_replacement(input.len())
                    .unwrap_or(input.len() * 3 + 16);
                self.out.resize(cap, 0);
                let (result, read, written) =
                    decoder.decode_to_utf8_without_replacement(input, &mut self.out, self.eof);
                self.out.truncate(written);
                let bad_at = self.consumed + (self.in_start + read) as u64;
                self.in_start += read;
                match result {
                    DecoderResult::InputEmpty => {
                        if self.eof {
                            self.done = true;
                        }
                    }
                    DecoderResult::OutputFull => {}
                    DecoderResult::Malformed(bad, extra) => {
                        let line = self.lines
                            + 1
                            + self.out.iter().filter(|b| **b == b'\n').count() as u64;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "the bytes at offset {} (line {line}) are not valid {}; check the Encoding setting",
                                bad_at.saturating_sub(u64::from(bad) + u64::from(extra)),
                                self.encoding_name
                            ),
                        ));
                    }
                }
            }
        }
        self.lines += self.out.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(())
    }
}

impl<R: Read> Read for StrictDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            if self.in_start >= self.in_end || !self.eof {
                self.fill()?;
            }
            if let State::Start(configured) = self.state {
                self.start(configured);
            }
            self.decode()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], enc: &str) -> io::Result<String> {
        let mut d = StrictDecoder::new(bytes, encoding_for(enc).unwrap());
        let mut s = String::new();
        d.read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn decodes_and_sniffs_boms() {
        assert_eq!(decode_all(b"a\xc3\xa9", "UTF-8").unwrap(), "aé");
        assert_eq!(decode_all(b"\xef\xbb\xbfa", "windows-1252").unwrap(), "a");
        assert_eq!(decode_all(b"\xff\xfea\x00", "UTF-8").unwrap(), "a");
        assert_eq!(decode_all(b"\x00a\x00b", "UTF-16BE").unwrap(), "ab");
        assert_eq!(decode_all(b"\x80\xe9", "ISO-8859-1").unwrap(), "\u{80}é");
        assert_eq!(decode_all(b"\x80\xe9", "Windows-1252").unwrap(), "€é");
        assert_eq!(decode_all(b"", "UTF-16LE").unwrap(), "");
    }

    #[test]
    fn malformed_input_is_an_error_with_its_place() {
        let e = decode_all(b"ok\nline two \xe9 here\n", "UTF-8").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("offset 12 (line 2)"), "{e}");
        // Across buffer boundaries too.
        let mut big = "x\n".repeat(50_000).into_bytes();
        big.extend_from_slice(b"\xff\n");
        let e = decode_all(&big, "UTF-8").unwrap_err();
        assert!(e.to_string().contains("offset 100000 (line 50001)"), "{e}");
        // An odd number of bytes in UTF-16 is malformed at the end.
        assert!(decode_all(b"a\x00b", "UTF-16LE").is_err());
    }
}
