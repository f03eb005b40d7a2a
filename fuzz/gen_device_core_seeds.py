#!/usr/bin/env python3
"""Writes the seeds of the `device_core` fuzz target to seeds/device_core/.

The target decodes its input with `arbitrary` 1.x (derive): an enum variant is
a little-endian u32 `x` with index `(x * variants) >> 32`, integers are
little-endian, a bool is a byte (bit 0), a `Vec` is `1, element` per element
and a `0` at the end. The enums below must list their variants in the order
of fuzz_targets/device_core.rs. Run from fuzz/: `python3 gen_device_core_seeds.py`.
"""

import os
import struct


def variant(index, count):
    # smallest x with (x * count) >> 32 == index
    return struct.pack("<I", -(-(index << 32) // count))


def u8(v):
    return bytes([v & 0xFF])


def u16(v):
    return struct.pack("<H", v)


def boolean(v):
    return u8(1 if v else 0)


def vec(items):
    out = b""
    for item in items:
        out += b"\x01" + item
    return out + b"\x00"


def vec_u8(data):
    return vec([u8(b) for b in data])


# enum Line
def line(name):
    return variant(["bus", "vmc"].index(name), 2)


# enum To
def to_station(i):
    return variant(0, 3) + u8(i)


def to_any(address):
    return variant(1, 3) + u8(address)


def to_waiting():
    return variant(2, 3)


# enum Body
BODY = 6


def raw(code, payload):
    return variant(0, BODY) + u8(code) + vec_u8(payload)


def message(index, data):
    return variant(1, BODY) + u8(index) + vec_u8(data)


def answer(data, error=False):
    return variant(2, BODY) + boolean(error) + vec_u8(data)


def poll():
    return variant(3, BODY)


def ack():
    return variant(4, BODY)


def again():
    return variant(5, BODY)


# enum Arg
ARG = 11


def arg_null():
    return variant(0, ARG)


def arg_bool(v):
    return variant(1, ARG) + boolean(v)


def arg_int(v):
    return variant(2, ARG) + struct.pack("<q", v)


def arg_float(v):
    return variant(3, ARG) + struct.pack("<d", v)


def arg_in_range(x):
    return variant(4, ARG) + u16(x)


def arg_name(i):
    return variant(5, ARG) + u8(i)


def arg_names(items):
    return variant(6, ARG) + vec_u8(items)


def arg_hex(data):
    return variant(8, ARG) + vec_u8(data)


def arg_time(secs):
    return variant(9, ARG) + struct.pack("<i", secs)


def args(values, extra=()):
    return vec(values) + vec([u8(k) + a for k, a in extra])


# enum Expiry
def expiry(name="none"):
    return variant(["none", "past", "future"].index(name), 3)


# enum Event
EVENT = 11


def bus_frame(to, body):
    return variant(0, EVENT) + to + body


def vmc_frame(body):
    return variant(1, EVENT) + body


def advance(ms):
    return variant(2, EVENT) + u16(ms)


def wake():
    return variant(3, EVENT)


def command(on, station, index, a, exp="none"):
    return variant(4, EVENT) + line(on) + u8(station) + u8(index) + a + expiry(exp)


def batch(on, station, steps, keep_going=False, exp="none"):
    return (
        variant(5, EVENT)
        + line(on)
        + u8(station)
        + vec([u8(i) + a for i, a in steps])
        + boolean(keep_going)
        + expiry(exp)
    )


def cancel(on, station, target):
    return variant(6, EVENT) + line(on) + u8(station) + u8(target)


def committed(on, station, ok=True):
    return variant(7, EVENT) + line(on) + u8(station) + boolean(ok)


def port_lost(on):
    return variant(8, EVENT) + line(on)


def port_opened(on):
    return variant(9, EVENT) + line(on)


def port_missing(on):
    return variant(10, EVENT) + line(on)


def setup(stations, bus_closed=False, vmc_closed=False):
    return u8((stations - 1) | (4 if bus_closed else 0) | (8 if vmc_closed else 0))


# coolmax-cc200: messages status 0, counters 1, setpoint_written 2,
# register_written 3, read_exception 4, write_exception 5;
# commands read_status 0, read_counters 1, set_setpoint 2, start_defrost 3.
STATUS = [0, 45, 0, 40, 0, 0, 0, 1]  # 4.5 °C, setpoint 4.0, no alarms, running
STATUS_WARM = [0, 90, 0, 40, 0, 9, 0, 2]  # 9.0 °C, door open + high temp, defrost
COUNTERS = [0x04, 0xD2, 0, 56, 0x03, 0x15]
SET_SETPOINT, START_DEFROST = 2, 3


def serve(n, data=STATUS, error=False):
    """n exchanges: the station whose request is on the line gets its answer
    (laid out as the message its request names), then the clock goes to
    the bus's next wake-up, when the next request goes out."""
    return (bus_frame(to_waiting(), answer(data, error)) + wake()) * n


def reply(data=STATUS, error=False):
    """The answer to the request on the line, the clock stays."""
    return bus_frame(to_waiting(), answer(data, error))


def silent(n):
    """n requests go unanswered: the clock goes to each answer deadline."""
    return wake() * n


SEEDS = {}

# Three coolers answer every poll (status and counters each) for four
# seconds; the values change once.
SEEDS["bus_three_coolers_polled"] = (
    setup(3) + serve(6) + serve(6) + serve(2, STATUS_WARM) + serve(4) + serve(6)
)

# set_setpoint on cooler-06: recorded, committed, written in its turn (before
# its polls), answered with the echo; the result is committed.
SEEDS["bus_set_setpoint_ok"] = (
    setup(2)
    + serve(4)
    + command("bus", 1, SET_SETPOINT, args([arg_float(4.5)]))
    + committed("bus", 1)
    + serve(1, [0, 45])
    + committed("bus", 1)
    + serve(4)
)

# start_defrost refused with exception 3 (illegal_data_value); set_setpoint
# 14 °C refused (busy, 6); a set_setpoint that is never answered: retried
# once, then `timeout`, while the polls go on.
SEEDS["bus_exceptions_and_timeout"] = (
    setup(1)
    + serve(1)
    + reply(COUNTERS)
    + command("bus", 0, START_DEFROST, args([]))
    + committed("bus", 0)
    + wake()
    + reply([3], error=True)
    + committed("bus", 0)
    + command("bus", 0, SET_SETPOINT, args([arg_int(14)]))
    + committed("bus", 0)
    + wake()
    + reply([6], error=True)
    + committed("bus", 0)
    + command("bus", 0, SET_SETPOINT, args([arg_in_range(30000)]))
    + committed("bus", 0)
    + wake()
    + silent(1)
    + serve(2)
    + silent(1)
    + committed("bus", 0)
    + serve(2)
)

# A cooler that never answers: each poll retried once, down after 3 failed
# exchanges, then probed only every 5 s; then it answers a probe.
SEEDS["bus_dead_cooler_probed"] = (
    setup(1) + serve(2) + silent(10) + serve(2) + silent(4) + serve(4)
)

# cooler-07 of three stops answering: its polls time out between the
# others' exchanges.
SEEDS["bus_one_of_three_silent"] = (
    setup(3) + (serve(2) + silent(1) + serve(2) + silent(1)) * 6 + serve(6)
)

# Frames for unknown slaves, broadcast 0, 247 and 255, a code the request
# does not name, garbage, an answer for a station that waits for nothing.
SEEDS["bus_foreign_addresses"] = (
    setup(3)
    + bus_frame(to_any(9), answer(STATUS))
    + bus_frame(to_any(0), raw(0x03, [8] + STATUS))
    + bus_frame(to_any(247), message(0, STATUS))
    + bus_frame(to_any(255), raw(0x83, [2]))
    + bus_frame(to_waiting(), raw(0x06, [0, 1, 0, 40]))
    + bus_frame(to_station(1), message(1, COUNTERS))
    + bus_frame(to_waiting(), message(4, [4]))
    + bus_frame(to_waiting(), raw(0x03, [8, 1]))
    + serve(6)
)

# A batch of three steps on cooler-05 (one refused, keep going), then a
# second batch cancelled while it runs.
SEEDS["bus_batch_and_cancel"] = (
    setup(1)
    + serve(2)
    + batch(
        "bus",
        0,
        [
            (SET_SETPOINT, args([arg_float(3.0)])),
            (START_DEFROST, args([])),
            (SET_SETPOINT, args([arg_float(5.0)])),
        ],
        keep_going=True,
    )
    + (committed("bus", 0) + serve(1, [0, 30]) + committed("bus", 0)) * 2
    + committed("bus", 0)
    + serve(1, [6], error=True)
    + (committed("bus", 0) + serve(1, [0, 50]) + committed("bus", 0)) * 3
    + batch("bus", 0, [(START_DEFROST, args([])), (START_DEFROST, args([]))])
    + committed("bus", 0)
    + serve(1)
    + cancel("bus", 0, 3)
    + (committed("bus", 0) + serve(1)) * 4
)

# The port goes away while a command waits for its answer and comes back;
# a failed open in between; a durable write that fails; an expired command.
SEEDS["bus_port_lost_mid_exchange"] = (
    setup(2)
    + serve(4)
    + command("bus", 0, SET_SETPOINT, args([arg_float(6.0)]))
    + committed("bus", 0)
    + wake()
    + port_lost("bus")
    + port_missing("bus")
    + advance(2000)
    + port_opened("bus")
    + serve(3)
    + committed("bus", 0)
    + command("bus", 1, START_DEFROST, args([]), exp="future")
    + committed("bus", 1, ok=False)
    + command("bus", 1, START_DEFROST, args([]), exp="past")
    + committed("bus", 1)
    + serve(4)
    + advance(2000) * 6
    + serve(4)
)

# vmc-upper-computer: messages money_collected 0 (0x21); commands buy 1,
# set_poll_interval 7, money_received 9, card_balance 13.
BUY, SET_POLL_INTERVAL, MONEY_RECEIVED, CARD_BALANCE = 1, 7, 9, 13

SEEDS["vmc_poll_money_buy"] = (
    setup(1)
    + vmc_frame(poll())
    + advance(200)
    + vmc_frame(poll())
    + vmc_frame(message(0, [2, 0, 0, 0, 100]))
    + vmc_frame(again())
    + committed("vmc", 0)
    + vmc_frame(again())
    + command("vmc", 0, BUY, args([arg_int(11)]))
    + committed("vmc", 0)
    + advance(200)
    + vmc_frame(poll())
    + vmc_frame(ack())
    + committed("vmc", 0)
    + command("vmc", 0, SET_POLL_INTERVAL, args([arg_int(500)]))
    + committed("vmc", 0)
    + vmc_frame(poll())
    + vmc_frame(ack())
    + committed("vmc", 0)
    + command("vmc", 0, CARD_BALANCE, args([arg_bool(False)]))
    + committed("vmc", 0)
    + vmc_frame(poll())
    + vmc_frame(ack())
    + vmc_frame(answer([1, 0, 0, 0x27, 0x10]))
    + committed("vmc", 0)
    + advance(2000)
    + advance(2000)
)

# The VMC stops polling: link down, a queued command ends `offline`.
SEEDS["vmc_silent_offline"] = (
    setup(1)
    + vmc_frame(poll())
    + command("vmc", 0, MONEY_RECEIVED, args([arg_name(1), arg_in_range(100)]))
    + committed("vmc", 0)
    + b"".join(advance(2000) for _ in range(7))
    + committed("vmc", 0)
    + port_lost("vmc")
    + port_opened("vmc")
    + vmc_frame(poll())
)


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "device_core")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
