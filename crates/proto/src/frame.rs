//! Framing: a 5-byte header (the message kind, then the body length as a big-endian
//! `u32`), then the body. The header is checked against the kind's limit as soon as
//! it arrives, so an oversized frame is refused before its body is buffered.

use crate::error::ProtoError;
use crate::message::{MAX_BATCH_FRAME, MAX_DETAIL_BYTES, MAX_HELLO_BYTES};

/// Length of a frame header.
pub const HEADER_LEN: usize = 5;

/// The kinds of message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The initiator's opening.
    Hello = 1,
    /// The responder's acceptance.
    Welcome = 2,
    /// A refusal, from either side; the session ends.
    Refuse = 3,
    /// Commits.
    Batch = 4,
    /// A batch was imported.
    Ack = 5,
    /// The sender has sent everything the peer lacked.
    Done = 6,
}

impl Kind {
    /// The kind a header byte names.
    pub fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Welcome,
            3 => Kind::Refuse,
            4 => Kind::Batch,
            5 => Kind::Ack,
            6 => Kind::Done,
            _ => return None,
        })
    }

    /// The largest body a frame of this kind may have.
    pub fn limit(self) -> usize {
        match self {
            Kind::Hello | Kind::Welcome => MAX_HELLO_BYTES,
            Kind::Refuse => MAX_DETAIL_BYTES + 64,
            Kind::Batch => MAX_BATCH_FRAME,
            Kind::Ack | Kind::Done => 16,
        }
    }

    /// The kind's name, for errors.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Welcome => "welcome",
            Kind::Refuse => "refusal",
            Kind::Batch => "batch",
            Kind::Ack => "ack",
            Kind::Done => "done",
        }
    }
}

/// Encodes one frame.
pub fn encode_frame(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(kind as u8);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a byte stream into frames.
#[derive(Default, Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
}

impl Decoder {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > (1 << 20) && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one is buffered. A bad header is an error at once.
    pub fn next_frame(&mut self) -> Result<Option<(Kind, Vec<u8>)>, ProtoError> {
        let avail = &self.buf[self.start..];
        if avail.is_empty() {
            return Ok(None);
        }
        let kind = Kind::from_byte(avail[0]).ok_or(ProtoError::UnknownMessage(avail[0]))?;
        if avail.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[1], avail[2], avail[3], avail[4]]) as usize;
        if len > kind.limit() {
            return Err(ProtoError::OversizedFrame {
                kind: kind.name(),
                size: len,
                limit: kind.limit(),
            });
        }
        if avail.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let body = avail[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some((kind, body)))
    }

    /// Checks that the stream did not end inside a frame.
    pub fn finish(&self) -> Result<(), ProtoError> {
        let have = self.buf.len() - self.start;
        if have == 0 {
            return Ok(());
        }
        let need = if have >= HEADER_LEN {
            let b = &self.buf[self.start..];
            HEADER_LEN + u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize
        } else {
            HEADER_LEN
        };
        Err(ProtoError::Truncated { have, need })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut bytes = encode_frame(Kind::Ack, &[1, 2, 3]);
        bytes.extend(encode_frame(Kind::Done, &[9]));
        for cut in 0..bytes.len() {
            let mut d = Decoder::default();
            d.push(&bytes[..cut]);
            let mut got = Vec::new();
            while let Some(f) = d.next_frame().expect("valid") {
                got.push(f);
            }
            d.push(&bytes[cut..]);
            while let Some(f) = d.next_frame().expect("valid") {
                got.push(f);
            }
            assert_eq!(got, vec![(Kind::Ack, vec![1, 2, 3]), (Kind::Done, vec![9])]);
            d.finish().expect("nothing left over");
        }
    }

    #[test]
    fn an_oversized_header_is_refused_before_the_body() {
        let mut d = Decoder::default();
        d.push(&[Kind::Ack as u8, 0, 0, 1, 0]);
        assert!(matches!(
            d.next_frame(),
            Err(ProtoError::OversizedFrame {
                kind: "ack",
                size: 256,
                ..
            })
        ));
    }

    #[test]
    fn an_unknown_kind_is_refused_from_its_first_byte() {
        let mut d = Decoder::default();
        d.push(&[77]);
        assert_eq!(d.next_frame(), Err(ProtoError::UnknownMessage(77)));
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        let mut d = Decoder::default();
        let f = encode_frame(Kind::Ack, &[1, 2, 3]);
        d.push(&f[..6]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(ProtoError::Truncated { have: 6, need: 8 }));
    }
}
