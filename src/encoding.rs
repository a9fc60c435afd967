//! The text encoding of the connection tables written (the SQL packages' `CsvEncoding`).
//!
//! Rows are formatted as UTF-8; [`Transcoder`] turns that byte stream into the chosen encoding on
//! its way to the file, keeping a character split across two writes until it is whole. A
//! character the encoding cannot hold fails the table (nothing is replaced by `?` behind the
//! operator's back), and the message says which character and what to do.

use std::io::{self, Write};

/// An output encoding, named as .NET names them (COMPAT.md: `CsvEncoding`, default `UTF-8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputEncoding {
    /// UTF-8 without a byte order mark (the default).
    #[default]
    Utf8,
    /// UTF-8 with a byte order mark (`UTF-8-BOM`), for tools that need it to detect UTF-8.
    Utf8Bom,
    /// UTF-16 little-endian with a byte order mark (.NET `UTF-16` / `Unicode`).
    Utf16Le,
    /// UTF-16 big-endian with a byte order mark (.NET `UTF-16BE` / `BigEndianUnicode`).
    Utf16Be,
    /// 7-bit ASCII: any other character fails the table.
    Ascii,
    /// A single- or multi-byte legacy encoding known to the WHATWG Encoding Standard
    /// (`windows-1252`, `ISO-8859-1`, `Shift_JIS`, ...).
    Legacy(&'static encoding_rs::Encoding),
}

/// Names accepted, for messages.
pub const SUPPORTED: &str = "UTF-8, UTF-8-BOM, UTF-16 (little-endian), UTF-16BE, US-ASCII, or a legacy encoding such as windows-1252, ISO-8859-1, ISO-8859-15 or Shift_JIS";

impl OutputEncoding {
    /// Reads an encoding name; case and surrounding spaces do not matter.
    pub fn parse(label: &str) -> Result<OutputEncoding, String> {
        let l = label.trim().to_ascii_lowercase();
        Ok(match l.as_str() {
            "utf-8" | "utf8" => OutputEncoding::Utf8,
            "utf-8-bom" | "utf8-bom" | "utf-8 bom" | "utf-8-sig" => OutputEncoding::Utf8Bom,
            "utf-16" | "utf16" | "utf-16le" | "unicode" => OutputEncoding::Utf16Le,
            "utf-16be" | "unicodefffe" | "bigendianunicode" => OutputEncoding::Utf16Be,
            "us-ascii" | "ascii" => OutputEncoding::Ascii,
            _ => match encoding_rs::Encoding::for_label_no_replacement(l.as_bytes()) {
                // for_label maps UTF-16 and x-user-defined to encoders that write UTF-8: refused.
                Some(e)
                    if e != encoding_rs::UTF_8
                        && e != encoding_rs::UTF_16LE
                        && e != encoding_rs::UTF_16BE
                        && e != encoding_rs::X_USER_DEFINED =>
                {
                    OutputEncoding::Legacy(e)
                }
                Some(e) if e == encoding_rs::UTF_8 => OutputEncoding::Utf8,
                _ => {
                    return Err(format!(
                        "the encoding {:?} is not known; use {SUPPORTED}",
                        label.trim()
                    ));
                }
            },
        })
    }

    /// The name shown in messages.
    pub fn name(&self) -> &'static str {
        match self {
            OutputEncoding::Utf8 => "UTF-8",
            OutputEncoding::Utf8Bom => "UTF-8 with BOM",
            OutputEncoding::Utf16Le => "UTF-16LE",
            OutputEncoding::Utf16Be => "UTF-16BE",
            OutputEncoding::Ascii => "US-ASCII",
            OutputEncoding::Legacy(e) => e.name(),
        }
    }

    fn bom(&self) -> &'static [u8] {
        match self {
            OutputEncoding::Utf8Bom => b"\xEF\xBB\xBF",
            OutputEncoding::Utf16Le => b"\xFF\xFE",
            OutputEncoding::Utf16Be => b"\xFE\xFF",
            _ => b"",
        }
    }
}

/// A writer that takes UTF-8 and writes the chosen encoding to `inner`.
pub struct Transcoder<W: Write> {
    inner: W,
    encoding: OutputEncoding,
    /// The start of a UTF-8 sequence whose remaining bytes have not come yet (at most 3 bytes).
    pending: Vec<u8>,
    encoder: Option<encoding_rs::Encoder>,
    scratch: Vec<u8>,
}

impl<W: Write> Transcoder<W> {
    /// Writes the byte order mark, if the encoding has one.
    pub fn new(mut inner: W, encoding: OutputEncoding) -> io::Result<Self> {
        inner.write_all(encoding.bom())?;
        Ok(Transcoder {
            inner,
            encoding,
            pending: Vec::new(),
            encoder: match encoding {
                OutputEncoding::Legacy(e) => Some(e.new_encoder()),
                _ => None,
            },
            scratch: Vec::new(),
        })
    }

    /// Ends the stream (a legacy encoder may have a final shift sequence to write) and returns
    /// the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.pending.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the output ended in the middle of a UTF-8 character",
            ));
        }
        if let Some(enc) = self.encoder.as_mut() {
            self.scratch.clear();
            self.scratch.reserve(
                enc.max_buffer_length_from_utf8_without_replacement(0)
                    .unwrap_or(16),
            );
            let (_, _) =
                enc.encode_from_utf8_to_vec_without_replacement("", &mut self.scratch, true);
            self.inner.write_all(&self.scratch)?;
        }
        Ok(self.inner)
    }

    fn unmappable(&self, c: char) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the character {c:?} (U+{:04X}) cannot be written in {}; set CsvEncoding to UTF-8 (or an encoding that has it), or convert the column in the query",
                u32::from(c),
                self.encoding.name()
            ),
        )
    }

    fn encode(&mut self, text: &str) -> io::Result<()> {
        match self.encoding {
            OutputEncoding::Utf8 | OutputEncoding::Utf8Bom => self.inner.write_all(text.as_bytes()),
            OutputEncoding::Utf16Le | OutputEncoding::Utf16Be => {
                self.scratch.clear();
                let le = self.encoding == OutputEncoding::Utf16Le;
                for unit in text.encode_utf16() {
                    self.scratch.extend_from_slice(&if le {
                        unit.to_le_bytes()
                    } else {
                        unit.to_be_bytes()
                    });
                }
                self.inner.write_all(&self.scratch)
            }
            OutputEncoding::Ascii => match text.chars().find(|c| !c.is_ascii()) {
                Some(c) => Err(self.unmappable(c)),
                None => self.inner.write_all(text.as_bytes()),
            },
            OutputEncoding::Legacy(_) => {
                let mut rest = text;
                while !rest.is_empty() {
                    let Some(enc) = self.encoder.as_mut() else {
                        return Err(io::Error::other("no encoder"));
                    };
                    self.scratch.clear();
                    let want = enc
                        .max_buffer_length_from_utf8_without_replacement(rest.len())
                        .unwrap_or(rest.len() * 4 + 16);
                    self.scratch.reserve(want);
                    let (result, read) = enc.encode_from_utf8_to_vec_without_replacement(
                        rest,
                        &mut self.scratch,
                        false,
                    );
                    self.inner.write_all(&self.scratch)?;
                    rest = &rest[read..];
                    match result {
                        encoding_rs::EncoderResult::InputEmpty => break,
                        encoding_rs::EncoderResult::OutputFull => continue,
                        encoding_rs::EncoderResult::Unmappable(c) => {
                            return Err(self.unmappable(c));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl<W: Write> Write for Transcoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if matches!(
            self.encoding,
            OutputEncoding::Utf8 | OutputEncoding::Utf8Bom
        ) {
            return self.inner.write(buf);
        }
        let joined;
        let bytes: &[u8] = if self.pending.is_empty() {
            buf
        } else {
            self.pending.extend_from_slice(buf);
            joined = std::mem::take(&mut self.pending);
            &joined
        };
        let (text, tail) = match std::str::from_utf8(bytes) {
            Ok(s) => (s, &[][..]),
            Err(e) if e.error_len().is_none() => {
                let (head, tail) = bytes.split_at(e.valid_up_to());
                // Valid by construction: from_utf8 said so up to here.
                (std::str::from_utf8(head).unwrap_or_default(), tail)
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the output is not UTF-8 text",
                ));
            }
        };
        let tail = tail.to_vec();
        self.encode(text)?;
        self.pending = tail;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(enc: OutputEncoding, pieces: &[&[u8]]) -> io::Result<Vec<u8>> {
        let mut t = Transcoder::new(Vec::new(), enc)?;
        for p in pieces {
            t.write_all(p)?;
        }
        t.finish()
    }

    #[test]
    fn names() {
        assert_eq!(OutputEncoding::parse(" UTF-8 "), Ok(OutputEncoding::Utf8));
        assert_eq!(OutputEncoding::parse("utf-16"), Ok(OutputEncoding::Utf16Le));
        assert_eq!(
            OutputEncoding::parse("BigEndianUnicode"),
            Ok(OutputEncoding::Utf16Be)
        );
        assert_eq!(
            OutputEncoding::parse("ISO-8859-1"),
            Ok(OutputEncoding::Legacy(encoding_rs::WINDOWS_1252))
        );
        assert_eq!(
            OutputEncoding::parse("windows-1250"),
            Ok(OutputEncoding::Legacy(encoding_rs::WINDOWS_1250))
        );
        let e = OutputEncoding::parse("klingon").unwrap_err();
        assert!(
            e.contains("\"klingon\" is not known") && e.contains("windows-1252"),
            "{e}"
        );
        assert!(OutputEncoding::parse("x-user-defined").is_err());
        assert!(OutputEncoding::parse("replacement").is_err());
    }

    #[test]
    fn characters_split_across_writes_are_joined() {
        let text = "id,name\n1,Zoë 李\n";
        let bytes = text.as_bytes();
        // Cut inside ë (2 bytes) and inside 李 (3 bytes).
        let cut1 = text.find('ë').unwrap() + 1;
        let cut2 = text.find('李').unwrap() + 2;
        let pieces = [&bytes[..cut1], &bytes[cut1..cut2], &bytes[cut2..]];
        let le = through(OutputEncoding::Utf16Le, &pieces).unwrap();
        let mut want = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            want.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(le, want);
        let be = through(OutputEncoding::Utf16Be, &pieces).unwrap();
        assert_eq!(&be[..2], &[0xFE, 0xFF]);
        assert_eq!(&be[2..4], &[0, b'i']);
        let bom = through(OutputEncoding::Utf8Bom, &pieces).unwrap();
        assert_eq!(&bom[3..], bytes);
    }

    #[test]
    fn legacy_encodings_and_unmappable_characters() {
        let cp1252 = OutputEncoding::parse("windows-1252").unwrap();
        let text = "café,€\n".as_bytes();
        let out = through(cp1252, &[&text[..4], &text[4..]]).unwrap();
        assert_eq!(out, b"caf\xE9,\x80\n");
        let e = through(cp1252, &["Zoë 李".as_bytes()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("'李' (U+674E) cannot be written in windows-1252"),
            "{e}"
        );
        let e = through(OutputEncoding::Ascii, &["é".as_bytes()]).unwrap_err();
        assert!(e.to_string().contains("US-ASCII"), "{e}");
        let sjis = OutputEncoding::parse("Shift_JIS").unwrap();
        assert_eq!(through(sjis, &["李".as_bytes()]).unwrap(), b"\x97\x9B");
        // A stream cut in the middle of a character is an error, not a silent loss.
        let e = through(OutputEncoding::Utf16Le, &[&"é".as_bytes()[..1]]).unwrap_err();
        assert!(e.to_string().contains("middle of a UTF-8 character"), "{e}");
    }
}
