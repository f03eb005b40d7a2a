//! Fuzzes the device cores (`vendgate::device::core::Core`) of one
//! `host_polls` bus and one `device_polls` line, event by event, the way the
//! port task (`src/device/port/task.rs`) drives them, with a simulated clock.
//!
//! The bus: 1..=3 cores for `device-profiles/coolmax-cc200.yaml` (Modbus
//! RTU slaves at addresses 5, 6, 7) on one `vendgate::device::port::Bus`,
//! each wrapped in a `BusStation` that delegates to the core. The other line:
//! one core for `device-profiles/vmc-upper-computer.yaml` (the VMC polls, the
//! gateway answers), driven directly.
//!
//! Input (decoded with `arbitrary`): a setup byte (bits 0-1 mod 3: bus
//! cores - 1; bit 2 / bit 3: the bus / VMC port starts closed), then up to
//! `MAX_EVENTS` events:
//!   * a frame for the bus (to one of the stations' addresses, the one
//!     waiting for an answer, or any address byte, routed with `Bus::route`) or for the VMC: a random code and payload, a
//!     frame laid out as one of the profile's messages with random field
//!     bytes, or the answer / error message to the request the station last
//!     wrote; the VMC also gets POLLs, ACKs and PackNO retransmissions;
//!   * the clock: 0..=2000 ms later, or (on the bus) when `Bus::wake` asks;
//!     then `tick` on every core and `Bus::step`;
//!   * a profile command by index with JSON-ish arguments (queued only when
//!     `def.encode(&args)` succeeds, like the router; a queue slot per
//!     machine), a batch of such steps, a `cancel` of an earlier id;
//!   * `committed(ok)` for a core with an outstanding `Persist`;
//!   * port lost / port opened / port missing for one of the two lines.
//!
//! After every call into a core its `take_actions()` are drained and
//! checked; every `Write` is encoded with the line's `FrameCodec` and, on the
//! bus, reported to `Bus::wrote`.
//!
//! Invariants:
//!   * nothing panics;
//!   * never two exchanges on the bus at once: at most one station has
//!     `answer_by().is_some()`, after every event;
//!   * a bus core writes only from `transmit` (host_polls: the coolmax
//!     profile has no POLL/ACK, so frames from the device are never answered):
//!     exactly one `Write` per `transmit` that returned true, none otherwise,
//!     addressed to the core's own address, and the station then waits for
//!     its answer;
//!   * the VMC core writes at most one frame per frame from the VMC or per
//!     commit, and never on a clock tick or command (`device_polls`);
//!   * no `Write` while the line's port is closed, and every `Write` encodes;
//!   * a core asks for at most one `Persist` until `committed` is called;
//!   * availability is published only when it changes, never `starting`;
//!   * no command id gets two final (`Done`) records;
//!   * telemetry and appended outbox items are JSON.

#![no_main]

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use tokio_util::codec::Encoder;
use vendgate::codec::{put_uint, Frame, FrameCode, FrameCodec};
use vendgate::config::Config;
use vendgate::device::core::{Action, Core, CoreContext, Restored};
use vendgate::device::port::{Bus, BusStation};
use vendgate::health::MachineHealth;
use vendgate::mqtt::{Availability, OfflineReason};
use vendgate::profile::{Command, Completion, FieldKind, Layout, Profile};
use vendgate::queue::{gateway_command, BatchJob, Job, QueueSlots, QueuedCommand};
use vendgate::store::{BatchProgress, CommandPhase, Op, OutItem};

const MAX_EVENTS: usize = 300;
const BUS_ADDRESSES: [u16; 3] = [5, 6, 7];
/// Commands a machine's queue holds (the router's `busy` beyond that).
const QUEUE_LIMIT: usize = 4;

const CONFIG: &str = "\
gateway: {id: gw}
mqtt: {url: \"mqtt://127.0.0.1:1883\"}
store: {path: /tmp/fuzz-unused}
devices:
  - {id: cooler-05, profile: coolmax-cc200, port: /dev/ttyFUZZ0, address: 5}
  - {id: cooler-06, profile: coolmax-cc200, port: /dev/ttyFUZZ0, address: 6}
  - {id: cooler-07, profile: coolmax-cc200, port: /dev/ttyFUZZ0, address: 7}
  - {id: vmc, profile: vmc-upper-computer, port: /dev/ttyFUZZ1}
";

struct Fixture {
    config: Arc<Config>,
    coolmax: Arc<Profile>,
    vmc: Arc<Profile>,
    /// Every argument name of both profiles, for arguments that do not fit.
    arg_names: Vec<String>,
    /// Bus timing as the port task computes it (`line_silence`, `char_time`).
    silence: Duration,
    char_time: Duration,
}

fn load(text: &str, path: &str) -> Profile {
    Profile::from_str(text, Path::new(path))
        .unwrap_or_else(|e| panic!("profile {path} does not load: {e}"))
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut config = Config::from_str(CONFIG, Path::new("/tmp/fuzz.yaml"))
            .unwrap_or_else(|e| panic!("the fuzz config does not load: {e}"));
        // Whatever the config parser makes of `address:`, the cores get theirs.
        for (device, address) in config.devices.iter_mut().zip(BUS_ADDRESSES) {
            device.address = Some(address);
        }
        let coolmax = load(
            include_str!("../../device-profiles/coolmax-cc200.yaml"),
            "device-profiles/coolmax-cc200.yaml",
        );
        let vmc = load(
            include_str!("../../device-profiles/vmc-upper-computer.yaml"),
            "device-profiles/vmc-upper-computer.yaml",
        );
        let mut arg_names: Vec<String> = [&coolmax, &vmc]
            .iter()
            .flat_map(|p| p.commands().iter())
            .flat_map(|c| c.layout.fields.iter())
            .filter_map(|f| f.name.clone())
            .collect();
        arg_names.sort();
        arg_names.dedup();
        arg_names.push("no_such_argument".into());
        let serial = &coolmax.serial;
        let parity = u32::from(serial.parity != vendgate::profile::Parity::None);
        let bits = 1 + u32::from(serial.data_bits) + parity + u32::from(serial.stop_bits);
        let char_time = Duration::from_secs_f64(f64::from(bits) / f64::from(serial.baud.max(1)));
        let silence = FrameCodec::new(&coolmax.framing)
            .needs_silence()
            .unwrap_or_else(|| char_time.mul_f64(3.5));
        Fixture {
            config: Arc::new(config),
            coolmax: Arc::new(coolmax),
            vmc: Arc::new(vmc),
            arg_names,
            silence,
            char_time,
        }
    })
}

// ---------------------------------------------------------------- input

#[derive(Arbitrary, Debug)]
enum Line {
    Bus,
    Vmc,
}

#[derive(Arbitrary, Debug)]
enum To {
    /// One of the bus stations' addresses.
    Station(u8),
    /// Any address byte: unknown slaves, broadcast 0, 248..=255.
    Any(u8),
    /// The station waiting for an answer (else the first).
    Waiting,
}

#[derive(Arbitrary, Debug)]
enum Body {
    /// Code and payload as they come.
    Raw { code: u8, payload: Vec<u8> },
    /// Message `index` of the profile, its fields filled from `bytes`.
    Message { index: u8, bytes: Vec<u8> },
    /// The answer (or the error message) to the request the station wrote
    /// last, fields filled from `bytes`.
    Answer { error: bool, bytes: Vec<u8> },
    /// VMC only: POLL.
    Poll,
    /// VMC only: ACK.
    Ack,
    /// VMC only: the last data frame again (same code and PackNO).
    Again,
}

/// A JSON value for an argument, read against the field it is for.
#[derive(Arbitrary, Debug)]
enum Arg {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A point in the field's (first) allowed range, on its scale.
    InRange(u16),
    /// One of the field's enum / flag names (a flag field gets a list).
    Name(u8),
    Names(Vec<u8>),
    Str(String),
    Hex(Vec<u8>),
    /// RFC 3339, this many seconds from now.
    Time(i32),
    Array(Vec<Arg>),
}

#[derive(Arbitrary, Debug)]
struct Args {
    /// Values for the command's named fields, in order.
    values: Vec<Arg>,
    /// Arguments under any name of either profile.
    extra: Vec<(u8, Arg)>,
}

#[derive(Arbitrary, Debug)]
enum Expiry {
    None,
    /// An hour ago: expired already.
    Past,
    /// In a day.
    Future,
}

#[derive(Arbitrary, Debug)]
enum Event {
    BusFrame {
        to: To,
        body: Body,
    },
    VmcFrame {
        body: Body,
    },
    /// `ms % 2001` later.
    Advance(u16),
    /// When the bus wants to act next (at least 1 ms later).
    Wake,
    Command {
        line: Line,
        station: u8,
        index: u8,
        args: Args,
        expiry: Expiry,
    },
    Batch {
        line: Line,
        station: u8,
        steps: Vec<(u8, Args)>,
        keep_going: bool,
        expiry: Expiry,
    },
    /// Cancels an earlier command / batch id (or one nobody knows).
    Cancel {
        line: Line,
        station: u8,
        target: u8,
    },
    Committed {
        line: Line,
        station: u8,
        ok: bool,
    },
    PortLost(Line),
    PortOpened(Line),
    PortMissing(Line),
}

// ---------------------------------------------------------------- harness

/// `DEVICE_CORE_TRACE=1`: print every event and action (to read a crash or
/// see what an input does: `device_core <input>`).
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("DEVICE_CORE_TRACE").is_some())
}

/// What the harness knows of one core besides the core itself.
struct Watch {
    name: String,
    slots: QueueSlots,
    /// A `Persist` was asked for and `committed` not called yet.
    persisting: bool,
    /// The availability last published.
    published: Option<Availability>,
    /// Ids with a final record.
    done: HashSet<String>,
    /// The frame it wrote last, and the command it carried.
    last_write: Option<(Frame, Option<String>)>,
    /// The command it wrote last.
    last_command: Option<String>,
}

/// What a station wrote: its last frame and the last command it carried.
#[derive(Clone)]
struct Written {
    frame: Option<(Frame, Option<String>)>,
    command: Option<String>,
}

impl Watch {
    fn written(&self) -> Written {
        Written {
            frame: self.last_write.clone(),
            command: self.last_command.clone(),
        }
    }

    fn new(name: &str) -> Watch {
        Watch {
            name: name.to_owned(),
            slots: QueueSlots::new(QUEUE_LIMIT),
            persisting: false,
            published: None,
            done: HashSet::new(),
            last_write: None,
            last_command: None,
        }
    }
}

/// A bus device: its core, seen by the bus through `BusStation`.
struct Station {
    core: Core,
    watch: Watch,
    /// `transmit` calls that returned true since the last drain.
    transmitted: u32,
    unexpected: u64,
}

impl BusStation for Station {
    fn address(&self) -> Option<u16> {
        self.core.address()
    }

    fn due(&self, now: Instant) -> Option<Instant> {
        self.core.due(now)
    }

    fn answer_by(&self) -> Option<Instant> {
        self.core.answer_by()
    }

    fn transmit(&mut self, now: Instant) -> bool {
        let sent = self.core.transmit(now);
        if sent {
            self.transmitted += 1;
        }
        sent
    }

    fn no_answer(&mut self, now: Instant) {
        self.core.no_answer(now)
    }

    fn unexpected(&mut self) {
        self.unexpected += 1;
    }
}

/// Why the VMC core may write during the call just made.
#[derive(Clone, Copy, PartialEq)]
enum Cause {
    /// A frame from the VMC or a commit: at most one frame.
    MayAnswer,
    /// Anything else: nothing (`device_polls` never writes unprompted).
    Silent,
}

struct World {
    /// The start; `now` is this plus the simulated time.
    t0: Instant,
    now: Instant,
    bus: Bus,
    stations: Vec<Station>,
    bus_open: bool,
    vmc: Core,
    vmc_watch: Watch,
    vmc_open: bool,
    codec_bus: FrameCodec,
    codec_vmc: FrameCodec,
    /// Ids given out so far (cancel targets).
    ids: Vec<String>,
    /// The VMC's last data frame (for retransmissions).
    vmc_last_data: Option<Frame>,
}

fn new_core(index: usize, profile: &Arc<Profile>, now: Instant) -> Core {
    let f = fixture();
    let health = MachineHealth::new(Default::default(), Default::default());
    let ctx = CoreContext {
        config: f.config.clone(),
        device: f.config.devices[index].clone(),
        profile: profile.clone(),
        health: Arc::new(health),
    };
    Core::new(ctx, Restored::default(), now)
}

/// Checks one core's actions; returns the frames it wrote.
fn check_actions(
    watch: &mut Watch,
    actions: Vec<Action>,
    open: bool,
    codec: &mut FrameCodec,
) -> Vec<(Frame, usize)> {
    let mut written = Vec::new();
    for action in actions {
        if tracing() {
            eprintln!("  {}: {}", watch.name, describe(&action));
        }
        match action {
            Action::Write(t) => {
                assert!(
                    open,
                    "{}: Write while the port is closed: {t:?}",
                    watch.name
                );
                let mut out = BytesMut::new();
                if let Err(e) = codec.encode(&t.frame, &mut out) {
                    panic!(
                        "{}: written frame {:?} does not encode: {e}",
                        watch.name, t.frame
                    );
                }
                watch.last_write = Some((t.frame.clone(), t.command.clone()));
                if t.command.is_some() {
                    watch.last_command = t.command.clone();
                }
                written.push((t.frame, out.len()));
            }
            Action::Persist(ops) => {
                assert!(
                    !watch.persisting,
                    "{}: a second Persist before `committed`: {ops:?}",
                    watch.name
                );
                watch.persisting = true;
                for op in &ops {
                    match op {
                        Op::Append { item, .. } => check_item(&watch.name, item),
                        Op::PutCommand { record, .. } => {
                            if let CommandPhase::Done { result } = &record.phase {
                                assert!(
                                    watch.done.insert(record.id.clone()),
                                    "{}: command {} gets a second result: {result}",
                                    watch.name,
                                    record.id
                                );
                            }
                        }
                        _ => {}
                    }
                }
            }
            Action::Availability(a) => {
                if let Availability::Offline { reason, .. } = &a {
                    assert_ne!(
                        *reason,
                        OfflineReason::Starting,
                        "{}: published `starting`",
                        watch.name
                    );
                }
                if let Some(last) = &watch.published {
                    assert!(
                        !same_availability(last, &a),
                        "{}: published {a:?} again",
                        watch.name
                    );
                }
                watch.published = Some(a);
            }
            Action::Telemetry(item) => check_item(&watch.name, &item),
        }
    }
    written
}

fn describe(action: &Action) -> String {
    let item =
        |item: &OutItem| format!("{} {}", item.topic, String::from_utf8_lossy(&item.payload));
    match action {
        Action::Write(t) => format!(
            "Write {:?} {:?} {:02X?} command={:?}",
            t.frame.address,
            t.frame.code,
            &t.frame.payload[..],
            t.command
        ),
        Action::Persist(ops) => {
            let ops: Vec<String> = ops
                .iter()
                .map(|op| match op {
                    Op::Append { item: i, .. } => format!("Append {}", item(i)),
                    Op::PutCommand { record, .. } => {
                        format!(
                            "PutCommand {} {} {:?}",
                            record.id, record.command, record.phase
                        )
                    }
                    Op::SetMachine { state, .. } => format!("SetMachine {state:?}"),
                    other => format!("{other:?}"),
                })
                .collect();
            format!("Persist [{}]", ops.join("; "))
        }
        Action::Availability(a) => format!("Availability {a:?}"),
        Action::Telemetry(i) => format!("Telemetry {}", item(i)),
    }
}

fn same_availability(a: &Availability, b: &Availability) -> bool {
    match (a, b) {
        (Availability::Online, Availability::Online) => true,
        (Availability::Offline { reason: x, .. }, Availability::Offline { reason: y, .. }) => {
            x == y
        }
        _ => false,
    }
}

fn check_item(name: &str, item: &OutItem) {
    if let Err(e) = serde_json::from_slice::<Value>(&item.payload) {
        panic!(
            "{name}: {} payload is not JSON ({e}): {:?}",
            item.topic,
            String::from_utf8_lossy(&item.payload)
        );
    }
}

impl World {
    fn new(setup: u8) -> World {
        let f = fixture();
        let t0 = Instant::now();
        let n = usize::from(setup & 0b11) % 3 + 1;
        let stations = (0..n)
            .map(|i| Station {
                core: new_core(i, &f.coolmax, t0),
                watch: Watch::new(&f.config.devices[i].id),
                transmitted: 0,
                unexpected: 0,
            })
            .collect();
        let mut world = World {
            t0,
            now: t0,
            bus: Bus::new(f.silence, f.char_time),
            stations,
            bus_open: false,
            vmc: new_core(3, &f.vmc, t0),
            vmc_watch: Watch::new(&f.config.devices[3].id),
            vmc_open: false,
            codec_bus: FrameCodec::new(&f.coolmax.framing),
            codec_vmc: FrameCodec::new(&f.vmc.framing),
            ids: Vec::new(),
            vmc_last_data: None,
        };
        world.drain_all();
        if setup & 0b100 == 0 {
            world.port_opened(true);
        }
        if setup & 0b1000 == 0 {
            world.port_opened(false);
        }
        world
    }

    // ---- draining

    /// Drains bus station `i`: its writes must match its `transmit`s.
    fn drain_station(&mut self, i: usize) {
        let s = &mut self.stations[i];
        let actions = s.core.take_actions();
        let written = check_actions(&mut s.watch, actions, self.bus_open, &mut self.codec_bus);
        let transmitted = std::mem::take(&mut s.transmitted);
        assert_eq!(
            written.len(),
            transmitted as usize,
            "{}: {} frames written for {} transmits (a bus device writes only in its turn)",
            s.watch.name,
            written.len(),
            transmitted
        );
        if transmitted > 0 {
            assert!(
                s.core.answer_by().is_some(),
                "{}: transmitted but waits for no answer",
                s.watch.name
            );
        }
        for (frame, len) in written {
            assert_eq!(
                frame.address,
                s.core.address(),
                "{}: frame written with another address",
                s.watch.name
            );
            self.bus.wrote(self.now, len);
        }
    }

    fn drain_bus(&mut self) {
        for i in 0..self.stations.len() {
            self.drain_station(i);
        }
    }

    fn drain_vmc(&mut self, cause: Cause) {
        let actions = self.vmc.take_actions();
        let written = check_actions(
            &mut self.vmc_watch,
            actions,
            self.vmc_open,
            &mut self.codec_vmc,
        );
        let allowed = match cause {
            Cause::MayAnswer => 1,
            Cause::Silent => 0,
        };
        assert!(
            written.len() <= allowed,
            "vmc: {} frames written (at most {allowed} here): {written:?}",
            written.len()
        );
    }

    fn drain_all(&mut self) {
        self.drain_bus();
        self.drain_vmc(Cause::Silent);
    }

    fn check_bus(&self) {
        let waiting: Vec<&str> = self
            .stations
            .iter()
            .filter(|s| s.core.answer_by().is_some())
            .map(|s| s.watch.name.as_str())
            .collect();
        assert!(
            waiting.len() <= 1,
            "two exchanges on the bus at once: {waiting:?} wait for answers"
        );
        if !self.bus_open {
            assert!(
                waiting.is_empty(),
                "{waiting:?} wait for answers on a closed port"
            );
        }
    }

    fn step_bus(&mut self) {
        if !self.bus_open {
            return;
        }
        let touched = self.bus.step(&mut self.stations, self.now);
        self.check_bus();
        for i in touched {
            self.drain_station(i);
        }
        // `step` leaves nobody else with actions, but make sure.
        self.drain_bus();
    }

    // ---- events

    fn port_opened(&mut self, bus: bool) {
        let now = self.now;
        if bus {
            if self.bus_open {
                return;
            }
            self.bus_open = true;
            for i in 0..self.stations.len() {
                self.stations[i].core.port_opened(now);
                self.drain_station(i);
            }
            self.step_bus();
        } else {
            if self.vmc_open {
                return;
            }
            self.vmc_open = true;
            self.vmc.port_opened(now);
            self.drain_vmc(Cause::Silent);
        }
    }

    fn port_lost(&mut self, bus: bool) {
        let now = self.now;
        if bus {
            if !self.bus_open {
                return;
            }
            self.bus_open = false;
            for i in 0..self.stations.len() {
                self.stations[i].core.port_lost(now);
                self.drain_station(i);
            }
        } else {
            if !self.vmc_open {
                return;
            }
            self.vmc_open = false;
            self.vmc.port_lost(now);
            self.drain_vmc(Cause::Silent);
        }
    }

    /// Between two opens the port task retries; a failed open says so.
    fn port_missing(&mut self, bus: bool) {
        let now = self.now;
        if bus {
            if self.bus_open {
                return;
            }
            for i in 0..self.stations.len() {
                self.stations[i].core.port_missing(now);
                self.drain_station(i);
            }
        } else {
            if self.vmc_open {
                return;
            }
            self.vmc.port_missing(now);
            self.drain_vmc(Cause::Silent);
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        for i in 0..self.stations.len() {
            self.stations[i].core.tick(now);
            self.drain_station(i);
        }
        self.vmc.tick(now);
        self.drain_vmc(Cause::Silent);
        self.step_bus();
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.tick();
    }

    fn wake(&mut self) {
        let next = self
            .bus
            .wake(&self.stations, self.now)
            .unwrap_or(self.now)
            .max(self.now + Duration::from_millis(1));
        // Bounded like `Advance`, so the clock cannot run away.
        self.now = next.min(self.now + Duration::from_secs(10));
        self.tick();
    }

    fn bus_frame(&mut self, to: &To, body: &Body) {
        if !self.bus_open {
            return;
        }
        let address = match to {
            To::Station(i) => BUS_ADDRESSES[usize::from(*i) % self.stations.len()],
            To::Any(a) => u16::from(*a),
            To::Waiting => {
                let waiting = self
                    .stations
                    .iter()
                    .position(|s| s.core.answer_by().is_some());
                BUS_ADDRESSES[waiting.unwrap_or(0)]
            }
        };
        let station = self
            .stations
            .iter()
            .position(|s| s.core.address() == Some(address));
        let profile = fixture().coolmax.clone();
        let last = station.map(|i| self.stations[i].watch.written());
        let Some((code, payload)) = frame_body(&profile, body, last.as_ref(), None) else {
            return;
        };
        let frame = Frame {
            address: Some(address),
            code,
            payload,
        };
        // What the port task does with a frame read from the line.
        self.bus.line_active(self.now);
        let Some(i) = self.bus.route(&mut self.stations, &frame) else {
            return;
        };
        assert_eq!(
            self.stations[i].core.address(),
            Some(address),
            "a frame for {address} was routed to another station"
        );
        self.stations[i].core.frame(frame, self.now);
        self.drain_station(i);
        self.step_bus();
    }

    fn vmc_frame(&mut self, body: &Body) {
        if !self.vmc_open {
            return;
        }
        let profile = fixture().vmc.clone();
        let (code, payload) = match body {
            Body::Poll => match &profile.link.poll {
                Some(code) => (code.clone(), Bytes::new()),
                None => return,
            },
            Body::Ack => match &profile.link.ack {
                Some(code) => (code.clone(), Bytes::new()),
                None => return,
            },
            Body::Again => match &self.vmc_last_data {
                Some(frame) => (frame.code.clone(), frame.payload.clone()),
                None => return,
            },
            other => {
                let seq = self.vmc_seq();
                let last = self.vmc_watch.written();
                match frame_body(&profile, other, Some(&last), Some(seq)) {
                    Some(cb) => cb,
                    None => return,
                }
            }
        };
        let frame = Frame {
            address: None,
            code,
            payload,
        };
        if !matches!(body, Body::Poll | Body::Ack) {
            self.vmc_last_data = Some(frame.clone());
        }
        self.vmc.frame(frame, self.now);
        self.drain_vmc(Cause::MayAnswer);
    }

    /// The next PackNO the simulated VMC uses (1..=255, wrapping).
    fn vmc_seq(&self) -> u8 {
        match self.vmc_last_data.as_ref().and_then(|f| f.payload.first()) {
            Some(&255) | None => 1,
            Some(&s) => s + 1,
        }
    }

    fn core_mut(&mut self, line: &Line, station: u8) -> (&mut Core, &mut Watch) {
        match line {
            Line::Bus => {
                let n = self.stations.len();
                let s = &mut self.stations[usize::from(station) % n];
                (&mut s.core, &mut s.watch)
            }
            Line::Vmc => (&mut self.vmc, &mut self.vmc_watch),
        }
    }

    fn after_call(&mut self, line: &Line, station: u8, cause: Cause) {
        match line {
            Line::Bus => {
                let i = usize::from(station) % self.stations.len();
                self.drain_station(i);
                self.step_bus();
            }
            Line::Vmc => self.drain_vmc(cause),
        }
    }

    fn next_id(&mut self) -> String {
        let id = format!("cmd-{}", self.ids.len());
        self.ids.push(id.clone());
        id
    }

    /// Hands `cmd` to the core, as the router does when it accepted it.
    fn deliver(&mut self, line: &Line, station: u8, mut make: impl FnMut(String) -> QueuedCommand) {
        let now = self.now;
        let id = self.next_id();
        let mut cmd = make(id);
        cmd.accepted = now;
        let (core, watch) = self.core_mut(line, station);
        if !matches!(cmd.job, Job::Cancel(_)) {
            let Some(slot) = watch.slots.take() else {
                return; // `busy`: nothing queued
            };
            cmd.slot = slot;
        }
        core.command(cmd, now);
        self.after_call(line, station, Cause::Silent);
    }

    fn command(&mut self, line: &Line, station: u8, index: u8, args: &Args, expiry: &Expiry) {
        let profile = profile_of(line);
        let commands = profile.commands();
        let def = &commands[usize::from(index) % commands.len()];
        let args = build_args(def, args);
        let Ok(body) = def.encode(&args) else {
            return; // the router answers `rejected`
        };
        let expires_at = expires_at(expiry);
        self.deliver(line, station, |id| QueuedCommand {
            id,
            def: def.clone(),
            body: body.clone(),
            args: args.clone(),
            expires_at,
            accepted: Instant::now(),
            accepted_ms: chrono::Utc::now().timestamp_millis(),
            job: Job::Single,
            reply: None,
            slot: Default::default(),
        });
    }

    fn batch(
        &mut self,
        line: &Line,
        station: u8,
        steps: &[(u8, Args)],
        keep_going: bool,
        expiry: &Expiry,
    ) {
        let profile = profile_of(line);
        let commands = profile.commands();
        let raw: Vec<Value> = steps
            .iter()
            .take(8)
            .map(|(index, args)| {
                let def = &commands[usize::from(*index) % commands.len()];
                let mut object = build_args(def, args);
                object.insert("cmd".into(), Value::from(def.name.clone()));
                Value::Object(object)
            })
            .collect();
        if raw.is_empty() {
            return;
        }
        // The router's `batch_job`, after `command::batch::parse_batch`.
        let Ok(steps) = vendgate::command::batch::steps(profile, &raw) else {
            return;
        };
        let expires_at = expires_at(expiry);
        let progress = BatchProgress {
            continue_on_error: keep_going,
            expires_at_ms: expires_at.map(|at| at.timestamp_millis()),
            ..BatchProgress::default()
        };
        let job = BatchJob {
            steps,
            progress,
            steps_json: Value::Array(raw).to_string(),
        };
        self.deliver(line, station, |id| QueuedCommand {
            id,
            def: gateway_command("batch"),
            body: Vec::new(),
            args: Map::new(),
            expires_at,
            accepted: Instant::now(),
            accepted_ms: chrono::Utc::now().timestamp_millis(),
            job: Job::Batch(Box::new(job.clone())),
            reply: None,
            slot: Default::default(),
        });
    }

    fn cancel(&mut self, line: &Line, station: u8, target: u8) {
        let target = match self.ids.get(usize::from(target)) {
            Some(id) => id.clone(),
            None => format!("unknown-{target}"),
        };
        self.deliver(line, station, |id| QueuedCommand {
            id,
            def: gateway_command("cancel"),
            body: Vec::new(),
            args: Map::new(),
            expires_at: None,
            accepted: Instant::now(),
            accepted_ms: chrono::Utc::now().timestamp_millis(),
            job: Job::Cancel(target.clone()),
            reply: None,
            slot: Default::default(),
        });
    }

    fn committed(&mut self, line: &Line, station: u8, ok: bool) {
        let now = self.now;
        let (core, watch) = self.core_mut(line, station);
        if !watch.persisting {
            return; // the port task only reports writes it was given
        }
        watch.persisting = false;
        core.committed(ok, now);
        self.after_call(line, station, Cause::MayAnswer);
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::BusFrame { to, body } => self.bus_frame(to, body),
            Event::VmcFrame { body } => self.vmc_frame(body),
            Event::Advance(ms) => self.advance(u64::from(*ms % 2001)),
            Event::Wake => self.wake(),
            Event::Command {
                line,
                station,
                index,
                args,
                expiry,
            } => self.command(line, *station, *index, args, expiry),
            Event::Batch {
                line,
                station,
                steps,
                keep_going,
                expiry,
            } => self.batch(line, *station, steps, *keep_going, expiry),
            Event::Cancel {
                line,
                station,
                target,
            } => self.cancel(line, *station, *target),
            Event::Committed { line, station, ok } => self.committed(line, *station, *ok),
            Event::PortLost(line) => self.port_lost(matches!(line, Line::Bus)),
            Event::PortOpened(line) => self.port_opened(matches!(line, Line::Bus)),
            Event::PortMissing(line) => self.port_missing(matches!(line, Line::Bus)),
        }
        self.check_bus();
    }
}

fn profile_of(line: &Line) -> &'static Profile {
    match line {
        Line::Bus => &fixture().coolmax,
        Line::Vmc => &fixture().vmc,
    }
}

// ---------------------------------------------------------------- frames

/// The code and payload of a frame from the device; `seq`: the PackNO
/// that goes before the body of a data frame (VMC).
fn frame_body(
    profile: &Profile,
    body: &Body,
    written: Option<&Written>,
    seq: Option<u8>,
) -> Option<(FrameCode, Bytes)> {
    let with_seq = |layout_bytes: Vec<u8>| -> Bytes {
        let mut payload = Vec::with_capacity(layout_bytes.len() + 1);
        payload.extend(seq);
        payload.extend(layout_bytes);
        Bytes::from(payload)
    };
    match body {
        Body::Raw { code, payload } => Some((
            FrameCode::Num(u32::from(*code)),
            Bytes::copy_from_slice(&payload[..payload.len().min(250)]),
        )),
        Body::Message { index, bytes } => {
            let messages = profile.messages();
            let message = messages.get(usize::from(*index) % messages.len().max(1))?;
            Some((message.code.clone(), with_seq(fill(&message.layout, bytes))))
        }
        Body::Answer { error, bytes } => {
            let def = requested(profile, written?)?;
            let name = if *error {
                def.error.clone()?
            } else {
                match &def.completion {
                    Completion::Answer { message, .. } => message.clone(),
                    // Completes on its ACK: answer with its own code.
                    Completion::Ack => {
                        let payload = fill(&def.layout, bytes);
                        return Some((def.code.clone(), with_seq(payload)));
                    }
                }
            };
            let message = profile.message(&name)?;
            Some((message.code.clone(), with_seq(fill(&message.layout, bytes))))
        }
        Body::Poll | Body::Ack | Body::Again => None,
    }
}

/// The request a station's answer is for: the command its last frame
/// carried, or the poll request with that frame's code and body, or the
/// last command it wrote.
fn requested<'p>(profile: &'p Profile, written: &Written) -> Option<&'p Command> {
    if let Some((frame, command)) = &written.frame {
        if let Some(name) = command {
            return profile.command(name);
        }
        let poll = profile.link.poll_requests.iter().find_map(|request| {
            let def = profile.command(&request.command)?;
            let body = def.encode(&request.args).ok()?;
            (def.code == frame.code && body[..] == frame.payload[..]).then_some(def)
        });
        if poll.is_some() {
            return poll;
        }
    }
    profile.command(written.command.as_deref()?)
}

/// A body laid out as `layout`: constants as they must be, every other
/// field from `bytes` (zeros when they run out; a rest-of-frame field
/// takes what is left).
fn fill(layout: &Layout, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut src = bytes.iter().copied();
    for field in &layout.fields {
        match &field.kind {
            FieldKind::Const { size, order, value } => put_uint(&mut out, *value, *size, *order),
            kind => match kind.wire_size() {
                Some(n) => out.extend((0..n).map(|_| src.next().unwrap_or(0))),
                None => out.extend(src.by_ref().take(200)),
            },
        }
    }
    out
}

// ---------------------------------------------------------------- arguments

fn expires_at(expiry: &Expiry) -> Option<chrono::DateTime<chrono::Utc>> {
    let now = chrono::Utc::now();
    match expiry {
        Expiry::None => None,
        Expiry::Past => Some(now - chrono::Duration::hours(1)),
        Expiry::Future => Some(now + chrono::Duration::days(1)),
    }
}

fn build_args(def: &Command, args: &Args) -> Map<String, Value> {
    let mut map = Map::new();
    let named = def.layout.fields.iter().filter(|f| f.name.is_some());
    for (field, arg) in named.zip(&args.values) {
        let name = field.name.clone().unwrap_or_default();
        if let Some(value) = arg_value(Some(&field.kind), &field.ranges, arg, 0) {
            map.insert(name, value);
        }
    }
    let names = &fixture().arg_names;
    for (key, arg) in args.extra.iter().take(4) {
        let name = names[usize::from(*key) % names.len()].clone();
        if let Some(value) = arg_value(None, &[], arg, 0) {
            map.insert(name, value);
        }
    }
    map
}

/// `None`: leave the argument out.
fn arg_value(
    kind: Option<&FieldKind>,
    ranges: &[(f64, f64)],
    arg: &Arg,
    depth: u8,
) -> Option<Value> {
    Some(match arg {
        Arg::Null => return None,
        Arg::Bool(b) => Value::Bool(*b),
        Arg::Int(i) => Value::from(*i),
        Arg::Float(f) => Value::from(*f),
        Arg::InRange(x) => in_range(kind, ranges, *x),
        Arg::Name(i) => {
            let names = names_of(kind);
            let name = names
                .get(usize::from(*i) % names.len().max(1))
                .cloned()
                .unwrap_or_else(|| format!("code_0x{i:02x}"));
            match kind {
                Some(FieldKind::Flags { .. }) => Value::Array(vec![Value::from(name)]),
                Some(FieldKind::Bool { .. }) => Value::Bool(i & 1 == 1),
                _ => Value::from(name),
            }
        }
        Arg::Names(list) => {
            let names = names_of(kind);
            Value::Array(
                list.iter()
                    .take(8)
                    .map(|i| match names.get(usize::from(*i) % names.len().max(1)) {
                        Some(n) => Value::from(n.clone()),
                        None => Value::from(format!("bit_{}", i % 40)),
                    })
                    .collect(),
            )
        }
        Arg::Str(s) => Value::from(s.chars().take(40).collect::<String>()),
        Arg::Hex(bytes) => Value::from(
            bytes
                .iter()
                .take(40)
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        ),
        Arg::Time(secs) => {
            let t = chrono::Utc::now() + chrono::Duration::seconds(i64::from(*secs));
            Value::from(t.to_rfc3339())
        }
        Arg::Array(items) if depth < 2 => Value::Array(
            items
                .iter()
                .take(4)
                .filter_map(|a| arg_value(None, &[], a, depth + 1))
                .collect(),
        ),
        Arg::Array(_) => Value::Array(Vec::new()),
    })
}

fn names_of(kind: Option<&FieldKind>) -> Vec<String> {
    match kind {
        Some(FieldKind::Enum { values, .. }) => values.values().cloned().collect(),
        Some(FieldKind::Flags { bits, .. }) => bits.values().cloned().collect(),
        _ => Vec::new(),
    }
}

/// A number in the field's first allowed range (or its wire range), on the
/// field's scale, so that most of them encode.
fn in_range(kind: Option<&FieldKind>, ranges: &[(f64, f64)], x: u16) -> Value {
    let t = f64::from(x) / f64::from(u16::MAX);
    let (scale, offset, scaled) = match kind {
        Some(FieldKind::Int {
            scale,
            offset,
            scaled,
            ..
        }) => (*scale, *offset, *scaled),
        _ => (1.0, 0.0, false),
    };
    let (lo, hi) = match (ranges.get(usize::from(x) % ranges.len().max(1)), kind) {
        (Some(&(lo, hi)), _) => (lo, hi),
        (None, Some(FieldKind::Int { size, signed, .. })) => {
            let bits = (8 * *size).min(52) as i32;
            let (lo, hi) = if *signed {
                (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1) - 1.0)
            } else {
                (0.0, 2f64.powi(bits) - 1.0)
            };
            if scaled {
                (lo * scale + offset, hi * scale + offset)
            } else {
                (lo, hi)
            }
        }
        (None, _) => (0.0, 1000.0),
    };
    let v = lo + (hi - lo) * t;
    let v = if scaled && scale != 0.0 {
        ((v - offset) / scale).round() * scale + offset
    } else {
        v.round()
    };
    // Integers as integers, like a JSON payload would carry them.
    let v = (v * 1e6).round() / 1e6;
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

// ---------------------------------------------------------------- target

fuzz_target!(|data: &[u8]| {
    let Some((&setup, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let mut world = World::new(setup);
    world.check_bus();
    for _ in 0..MAX_EVENTS {
        if u.is_empty() {
            break;
        }
        let Ok(event) = Event::arbitrary(&mut u) else {
            break;
        };
        if tracing() {
            eprintln!("+{:?} {event:?}", world.now - world.t0);
        }
        world.event(&event);
    }
});
