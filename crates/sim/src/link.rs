//! An in-memory network: packets that are lost, duplicated, delayed and reordered,
//! and, over them, the retransmission and reassembly that turn them back into an
//! ordered byte stream, as QUIC does for a real session.

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::StdRng;

/// The largest piece of stream carried by one packet.
const SEGMENT: usize = 16 << 10;
/// How long a sender waits for an acknowledgement before sending a segment again.
const RETRANSMIT_MS: u64 = 250;

/// What the network does to packets.
#[derive(Clone, Copy, Debug)]
pub struct Faults {
    /// Chance that a packet is lost.
    pub loss: f64,
    /// Chance that a packet arrives twice.
    pub duplicate: f64,
    /// Fewest milliseconds a packet takes.
    pub min_delay_ms: u64,
    /// Most milliseconds a packet takes; packets overtake each other within this.
    pub max_delay_ms: u64,
}

impl Faults {
    /// A network that loses and duplicates nothing.
    pub fn clean() -> Faults {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 5,
        }
    }
}

#[derive(Clone, Debug)]
enum Packet {
    Data { offset: u64, bytes: Vec<u8> },
    Ack { upto: u64 },
}

/// One direction of one connection: the sender's unacknowledged segments, the
/// packets in flight, and the receiver's reassembly.
#[derive(Debug, Default)]
pub struct Pipe {
    written: u64,
    /// Segments not yet acknowledged, by offset, with when each was last sent.
    unacked: BTreeMap<u64, (Vec<u8>, u64)>,
    /// Packets in flight: (arrival time, order sent) → packet.
    flight: BTreeMap<(u64, u64), Packet>,
    sent: u64,
    delivered: u64,
    early: BTreeMap<u64, Vec<u8>>,
    /// Packets handed to the network, and of those, lost.
    pub packets: u64,
    /// Packets the network lost.
    pub lost: u64,
}

impl Pipe {
    /// Queues bytes written by the sending side.
    pub fn write(&mut self, bytes: &[u8], now: u64, rng: &mut StdRng, faults: &Faults, cut: bool) {
        for piece in bytes.chunks(SEGMENT) {
            let offset = self.written;
            self.written += piece.len() as u64;
            self.unacked.insert(offset, (piece.to_vec(), now));
            let packet = Packet::Data {
                offset,
                bytes: piece.to_vec(),
            };
            self.transmit(packet, now, rng, faults, cut);
        }
    }

    fn transmit(&mut self, p: Packet, now: u64, rng: &mut StdRng, faults: &Faults, cut: bool) {
        self.packets += 1;
        if cut || rng.random_bool(faults.loss) {
            self.lost += 1;
            return;
        }
        let copies = if rng.random_bool(faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = now + rng.random_range(faults.min_delay_ms..=faults.max_delay_ms);
            self.sent += 1;
            self.flight.insert((at, self.sent), p.clone());
        }
    }

    /// Moves time to `now`: delivers what has arrived, acknowledges it, sends again
    /// what went unacknowledged too long. Returns the bytes the receiving side can
    /// read, in order.
    pub fn tick(&mut self, now: u64, rng: &mut StdRng, faults: &Faults, cut: bool) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(entry) = self.flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Packet::Data { offset, bytes } => {
                    if offset >= self.delivered {
                        self.early.insert(offset, bytes);
                    }
                    while let Some(bytes) = self.early.remove(&self.delivered) {
                        self.delivered += bytes.len() as u64;
                        out.extend_from_slice(&bytes);
                    }
                    let ack = Packet::Ack {
                        upto: self.delivered,
                    };
                    self.transmit(ack, now, rng, faults, cut);
                }
                Packet::Ack { upto } => {
                    self.unacked.retain(|offset, _| *offset >= upto);
                }
            }
        }
        let due: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, (_, at))| now >= at + RETRANSMIT_MS)
            .map(|(offset, _)| *offset)
            .collect();
        for offset in due {
            let Some((bytes, at)) = self.unacked.get_mut(&offset) else {
                continue;
            };
            *at = now;
            let packet = Packet::Data {
                offset,
                bytes: bytes.clone(),
            };
            self.transmit(packet, now, rng, faults, cut);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_stream_arrives_whole_and_in_order_over_a_bad_network() {
        let faults = Faults {
            loss: 0.3,
            duplicate: 0.3,
            min_delay_ms: 1,
            max_delay_ms: 200,
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut pipe = Pipe::default();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for (i, part) in sent.chunks(30_000).enumerate() {
            pipe.write(part, i as u64 * 10, &mut rng, &faults, false);
        }
        let mut got = Vec::new();
        for now in 0..20_000 {
            got.extend(pipe.tick(now, &mut rng, &faults, false));
        }
        assert!(pipe.lost > 0);
        assert_eq!(got, sent);
    }
}
