//! The schedule of a `host_polls` line (DESIGN §5), without I/O: one
//! exchange at a time across all its devices (the line is half-duplex),
//! the line's silence kept before each transmission, devices served round
//! robin (one exchange per device per turn, also when one has a backlog),
//! answers routed by address.
//!
//! Each device says when it wants the line ([`BusStation::due`]): a dead
//! device only once per probe interval, so it does not slow the others.

use std::time::{Duration, Instant};

use crate::codec::Frame;

/// What the bus needs of a device on it.
pub trait BusStation {
    fn address(&self) -> Option<u16>;
    /// When it wants to transmit next; `None`: nothing to send.
    fn due(&self, now: Instant) -> Option<Instant>;
    /// Until when the answer to its request on the line may come.
    fn answer_by(&self) -> Option<Instant>;
    /// Its turn: puts its next request on the line. False if it had none.
    fn transmit(&mut self, now: Instant) -> bool;
    /// Its request went unanswered.
    fn no_answer(&mut self, now: Instant);
    /// A frame nobody waits for was heard (counted, then dropped).
    fn unexpected(&mut self);
}

#[derive(Debug)]
pub struct Bus {
    /// Kept between the end of one frame on the line and the next transmission.
    silence: Duration,
    /// One character on the line, to know when a written frame has left.
    char_time: Duration,
    /// The device served first at the next turn.
    turn: usize,
    /// The line is quiet long enough for a transmission from then on.
    quiet_at: Option<Instant>,
}

impl Bus {
    pub fn new(silence: Duration, char_time: Duration) -> Bus {
        Bus {
            silence,
            char_time,
            turn: 0,
            quiet_at: None,
        }
    }

    /// Something was heard on the line at `at`.
    pub fn line_active(&mut self, at: Instant) {
        self.later(at + self.silence);
    }

    /// `bytes` were handed to the port at `at`; they take their wire time.
    pub fn wrote(&mut self, at: Instant, bytes: usize) {
        let on_wire = self.char_time * u32::try_from(bytes).unwrap_or(u32::MAX);
        self.later(at + on_wire + self.silence);
    }

    fn later(&mut self, at: Instant) {
        self.quiet_at = Some(self.quiet_at.map_or(at, |q| q.max(at)));
    }

    /// When [`Bus::step`] has something to do.
    pub fn wake<S: BusStation>(&self, stations: &[S], now: Instant) -> Option<Instant> {
        if let Some(by) = stations.iter().filter_map(|s| s.answer_by()).min() {
            return Some(by);
        }
        let due = stations.iter().filter_map(|s| s.due(now)).min()?;
        Some(self.quiet_at.map_or(due, |q| q.max(due)))
    }

    /// Gives up on an answer that is late and starts the next exchange if
    /// the line is free. Returns the stations that acted.
    pub fn step<S: BusStation>(&mut self, stations: &mut [S], now: Instant) -> Vec<usize> {
        let mut touched = Vec::new();
        loop {
            let waiting = stations
                .iter()
                .enumerate()
                .find_map(|(i, s)| s.answer_by().map(|by| (i, by)));
            if let Some((i, by)) = waiting {
                if now < by {
                    return touched;
                }
                stations[i].no_answer(now);
                touched.push(i);
                continue;
            }
            if self.quiet_at.is_some_and(|q| now < q) {
                return touched;
            }
            let n = stations.len();
            let next = (0..n)
                .map(|k| (self.turn + k) % n)
                .find(|&i| stations[i].due(now).is_some_and(|due| due <= now));
            let Some(i) = next else {
                return touched;
            };
            self.turn = (i + 1) % n;
            let sent = stations[i].transmit(now);
            touched.push(i);
            if sent {
                return touched;
            }
        }
    }

    /// The station a frame is for: by its address, or the one waiting for
    /// an answer on a line without addresses. A frame for nobody is
    /// counted on the station waiting for an answer (or the first) and
    /// dropped.
    pub fn route<S: BusStation>(&mut self, stations: &mut [S], frame: &Frame) -> Option<usize> {
        let waiting = stations.iter().position(|s| s.answer_by().is_some());
        let target = match frame.address {
            Some(address) => stations.iter().position(|s| s.address() == Some(address)),
            None if stations.len() == 1 => Some(0),
            None => waiting,
        };
        if target.is_none() {
            if let Some(station) = stations.get_mut(waiting.unwrap_or(0)) {
                station.unexpected();
            }
        }
        target
    }
}

#[cfg(test)]
mod tests;
