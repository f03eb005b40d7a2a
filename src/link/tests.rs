//! Frame-by-frame checks of the VMC link rules (protocol §3).

use super::*;
use crate::profile::PollIntervalCommand;

const POLL: u32 = 0x41;
const ACK: u32 = 0x42;

fn rules() -> LinkRules {
    LinkRules {
        mode: LinkMode::DevicePolls,
        poll: Some(FrameCode::Num(POLL)),
        ack: Some(FrameCode::Num(ACK)),
        answer_within: Duration::from_millis(100),
        poll_interval: Duration::from_millis(200),
        down_after_polls: 3,
        retries: 5,
        retry_after: Duration::from_millis(100),
        sequence: Some(SequenceRule {
            min: 1,
            max: 255,
            dedupe: true,
        }),
        poll_requests: Vec::new(),
        down_probe_interval: None,
        address_range: (0, 255),
        poll_interval_command: Some(PollIntervalCommand {
            command: "set_poll_interval".into(),
            arg: "interval_ms".into(),
        }),
    }
}

fn frame(code: u32, payload: &[u8]) -> Frame {
    Frame {
        address: None,
        code: FrameCode::Num(code),
        payload: Bytes::copy_from_slice(payload),
    }
}

fn link() -> Link {
    Link::new(rules(), 0, None, None)
}

#[test]
fn poll_with_nothing_pending_is_acked() {
    let mut l = link();
    let (r, change) = l.receive(frame(POLL, &[]), Instant::now());
    assert_eq!(r, Received::Poll);
    assert_eq!(change, Some(Change::Up));
    assert_eq!(l.answer_poll(), Some(PollAnswer::Ack(frame(ACK, &[]))));
}

#[test]
fn staged_command_goes_out_on_poll_and_ack_completes_it() {
    let mut l = link();
    assert_eq!(l.stage(7, FrameCode::Num(0x03), &[0, 11]), Some(1));
    let now = Instant::now();
    l.receive(frame(POLL, &[]), now);
    assert_eq!(
        l.answer_poll(),
        Some(PollAnswer::Command {
            token: 7,
            frame: frame(0x03, &[1, 0, 11]),
            attempt: 1
        })
    );
    let (r, _) = l.receive(frame(ACK, &[]), now);
    assert_eq!(r, Received::Acked(Some(7)));
    assert!(!l.busy());
    assert_eq!(l.answer_poll(), Some(PollAnswer::Ack(frame(ACK, &[]))));
}

#[test]
fn unacked_command_is_retransmitted_five_times_with_the_same_packno_then_abandoned() {
    let mut l = link();
    l.stage(1, FrameCode::Num(0x03), &[0, 11]);
    for attempt in 1..=6 {
        match l.answer_poll() {
            Some(PollAnswer::Command {
                frame: f,
                attempt: a,
                ..
            }) => {
                assert_eq!(a, attempt);
                assert_eq!(f.payload[0], 1, "retransmission keeps PackNO");
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(l.answer_poll(), Some(PollAnswer::Ack(frame(ACK, &[]))));
    assert_eq!(l.take_gave_up(), vec![1]);
    // The next exchange uses the next PackNO.
    assert_eq!(l.stage(2, FrameCode::Num(0x03), &[0, 12]), Some(2));
}

#[test]
fn packno_wraps_from_255_to_1_and_survives_restart() {
    let mut l = Link::new(rules(), 255, None, None);
    assert_eq!(l.stage(1, FrameCode::Num(0x03), &[]), Some(1));
    let mut l = Link::new(rules(), 41, None, None);
    assert_eq!(l.stage(1, FrameCode::Num(0x03), &[]), Some(42));
}

#[test]
fn retransmitted_data_frame_is_acked_but_not_delivered_twice() {
    let mut l = link();
    let now = Instant::now();
    let money = frame(0x21, &[7, 2, 0, 0, 0, 100]);
    let (r, _) = l.receive(money.clone(), now);
    let Received::Data { code, seq, body } = r else {
        panic!("{r:?}")
    };
    assert_eq!(seq, Some(7));
    assert_eq!(&body[..], &[2, 0, 0, 0, 100]);
    assert_eq!(l.accept(code, seq), Some(frame(ACK, &[])));
    assert_eq!(l.receive(money, now).0, Received::Retransmission);
    // Same PackNO but another CMD is new data.
    assert!(matches!(
        l.receive(frame(0x23, &[7, 0, 0, 0, 5]), now).0,
        Received::Data { .. }
    ));
}

#[test]
fn dedupe_state_survives_restart() {
    let mut l = Link::new(rules(), 0, Some((FrameCode::Num(0x21), 7)), None);
    let r = l
        .receive(frame(0x21, &[7, 2, 0, 0, 0, 100]), Instant::now())
        .0;
    assert_eq!(r, Received::Retransmission);
}

#[test]
fn data_frame_not_accepted_is_delivered_again() {
    // Persisting failed, so `accept` was never called: the retransmission
    // must be processed, or the event would be lost.
    let mut l = link();
    let now = Instant::now();
    let money = frame(0x21, &[7, 2, 0, 0, 0, 100]);
    assert!(matches!(
        l.receive(money.clone(), now).0,
        Received::Data { .. }
    ));
    assert!(matches!(l.receive(money, now).0, Received::Data { .. }));
}

#[test]
fn link_goes_down_after_three_silent_intervals_and_up_on_next_frame() {
    let mut l = link();
    let t0 = Instant::now();
    l.receive(frame(POLL, &[]), t0);
    assert_eq!(l.tick(t0 + Duration::from_millis(599)), None);
    assert_eq!(l.tick(t0 + Duration::from_millis(600)), Some(Change::Down));
    assert_eq!(l.tick(t0 + Duration::from_millis(900)), None);
    let (_, change) = l.receive(frame(POLL, &[]), t0 + Duration::from_secs(1));
    assert_eq!(change, Some(Change::Up));
}

#[test]
fn down_time_follows_poll_interval_and_override() {
    let mut l = link();
    l.set_poll_interval(Duration::from_millis(1000));
    assert_eq!(l.down_after(), Duration::from_millis(3000));
    let l = Link::new(rules(), 0, None, Some(Duration::from_millis(250)));
    assert_eq!(l.down_after(), Duration::from_millis(250));
}

#[test]
fn data_frame_without_packno_is_invalid() {
    let mut l = link();
    assert!(matches!(
        l.receive(frame(0x17, &[]), Instant::now()).0,
        Received::Invalid(_)
    ));
}

#[test]
fn stray_ack_is_reported_without_token() {
    let mut l = link();
    l.stage(3, FrameCode::Num(0x03), &[]);
    // Not yet written: an ACK cannot refer to it.
    assert_eq!(
        l.receive(frame(ACK, &[]), Instant::now()).0,
        Received::Acked(None)
    );
    assert!(l.busy());
    assert_eq!(l.unstage(), Some(3));
}
