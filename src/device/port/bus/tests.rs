//! The bus schedule with stand-in stations: fairness, the line's silence,
//! one exchange at a time, routing by address.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Bus, BusStation};
use crate::codec::{Frame, FrameCode};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A device that always has something to send (a backlog), answers after
/// being asked unless `dead`, and counts what happened to it.
#[derive(Default)]
struct Fake {
    address: u16,
    backlog: bool,
    due_at: Option<Instant>,
    on_wire: Option<Instant>,
    sent: u32,
    timeouts: u32,
    unexpected: u32,
}

impl BusStation for Fake {
    fn address(&self) -> Option<u16> {
        Some(self.address)
    }
    fn due(&self, now: Instant) -> Option<Instant> {
        if self.on_wire.is_some() {
            return None;
        }
        if self.backlog {
            return Some(now);
        }
        self.due_at
    }
    fn answer_by(&self) -> Option<Instant> {
        self.on_wire
    }
    fn transmit(&mut self, now: Instant) -> bool {
        self.sent += 1;
        self.on_wire = Some(now + MS(100));
        true
    }
    fn no_answer(&mut self, _now: Instant) {
        self.on_wire = None;
        self.timeouts += 1;
    }
    fn unexpected(&mut self) {
        self.unexpected += 1;
    }
}

fn fake(address: u16) -> Fake {
    Fake {
        address,
        backlog: true,
        ..Fake::default()
    }
}

fn frame(address: Option<u16>) -> Frame {
    Frame {
        address,
        code: FrameCode::Num(3),
        payload: Bytes::new(),
    }
}

/// Answers whoever waits (as a live device would) and lets the bus go on.
fn answer_all(stations: &mut [Fake]) {
    for s in stations.iter_mut() {
        s.on_wire = None;
    }
}

#[test]
fn one_exchange_at_a_time_and_round_robin_with_a_backlog() {
    let t0 = Instant::now();
    let mut bus = Bus::new(Duration::ZERO, Duration::ZERO);
    let mut stations = vec![fake(5), fake(6), fake(7)];
    let mut order = Vec::new();
    for k in 0..9 {
        let now = t0 + MS(k);
        let touched = bus.step(&mut stations, now);
        assert_eq!(touched.len(), 1, "exactly one transmission per step");
        // While one waits for its answer, nobody else gets the line.
        assert!(bus.step(&mut stations, now).is_empty());
        order.push(stations[touched[0]].address);
        answer_all(&mut stations);
    }
    assert_eq!(order, [5, 6, 7, 5, 6, 7, 5, 6, 7]);
}

#[test]
fn the_line_stays_silent_before_each_transmission() {
    let t0 = Instant::now();
    let mut bus = Bus::new(MS(2), Duration::from_micros(500));
    let mut stations = vec![fake(1)];
    assert_eq!(bus.step(&mut stations, t0), vec![0]);
    // 8 bytes written at t0: 4 ms on the wire, then 2 ms of silence.
    bus.wrote(t0, 8);
    answer_all(&mut stations);
    assert!(bus.step(&mut stations, t0 + MS(5)).is_empty());
    assert_eq!(bus.wake(&stations, t0 + MS(5)), Some(t0 + MS(6)));
    assert_eq!(bus.step(&mut stations, t0 + MS(6)), vec![0]);
    // A byte heard pushes the next transmission back by the silence.
    answer_all(&mut stations);
    bus.line_active(t0 + MS(10));
    assert!(bus.step(&mut stations, t0 + MS(11)).is_empty());
    assert_eq!(bus.step(&mut stations, t0 + MS(12)), vec![0]);
}

#[test]
fn an_unanswered_request_frees_the_line_at_its_deadline() {
    let t0 = Instant::now();
    let mut bus = Bus::new(Duration::ZERO, Duration::ZERO);
    let mut stations = vec![fake(5), fake(6)];
    assert_eq!(bus.step(&mut stations, t0), vec![0]);
    assert_eq!(bus.wake(&stations, t0), Some(t0 + MS(100)));
    assert!(bus.step(&mut stations, t0 + MS(99)).is_empty());
    // At the deadline: the first gives up, the second gets the line.
    assert_eq!(bus.step(&mut stations, t0 + MS(100)), vec![0, 1]);
    assert_eq!(stations[0].timeouts, 1);
    assert_eq!(stations[1].sent, 1);
}

#[test]
fn a_station_not_due_is_skipped_and_the_bus_sleeps_until_the_next_due() {
    let t0 = Instant::now();
    let mut bus = Bus::new(Duration::ZERO, Duration::ZERO);
    let mut idle = fake(5);
    idle.backlog = false;
    idle.due_at = Some(t0 + MS(500));
    let mut stations = vec![idle, fake(6)];
    assert_eq!(bus.step(&mut stations, t0), vec![1]);
    answer_all(&mut stations);
    stations[1].backlog = false;
    assert_eq!(bus.wake(&stations, t0), Some(t0 + MS(500)));
    assert!(bus.step(&mut stations, t0 + MS(10)).is_empty());
}

#[test]
fn frames_are_routed_by_address_and_frames_for_nobody_counted() {
    let t0 = Instant::now();
    let mut bus = Bus::new(Duration::ZERO, Duration::ZERO);
    let mut stations = vec![fake(5), fake(6)];
    bus.step(&mut stations, t0);
    assert_eq!(bus.route(&mut stations, &frame(Some(6))), Some(1));
    assert_eq!(bus.route(&mut stations, &frame(Some(5))), Some(0));
    assert_eq!(bus.route(&mut stations, &frame(Some(9))), None);
    assert_eq!(stations[0].unexpected, 1, "counted on the one waiting");
    // Without addresses, the frame is for the one waiting.
    assert_eq!(bus.route(&mut stations, &frame(None)), Some(0));
}
