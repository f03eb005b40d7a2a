#!/usr/bin/env python3
"""A Modbus RTU bus of CoolMax CC-200 cooler controllers, served by pymodbus.

This is the independent peer for tests/modbus_bus.rs: the gateway is the bus
master and this script plays every slave on the line with a third-party Modbus
stack, so the gateway's Modbus is checked against an implementation that is not
our own. Tested with pymodbus 3.16.1 (pip install pymodbus==3.16.1 pyserial;
.ci/run installs the same pin).

    python3 tests/peers/modbus_slaves.py --port PATH --slaves 5,6 [--baud 19200]

The line is 8N2 (Modbus over serial line §2.5.1: no parity, two stop bits).
Each slave id gets its own datastore with the CC-200 register map (see
device-profiles/coolmax-cc200.yaml, which documents the same map):

    0x0000 temperature   i16 x0.1 degC   read-only   (initial 4.5 degC)
    0x0001 setpoint      i16 x0.1 degC   read/write  (initial 3.0 degC)
                                                     raw -50..120, else exception 3
    0x0002 alarms        bit flags       read-only   bit0 door_open, bit1 compressor_fault,
                                                     bit2 sensor_fault, bit3 high_temperature
    0x0003 compressor    0 off, 1 running, 2 defrost   read-only
    0x0010 compressor_hours  u16  read-only
    0x0011 defrosts          u16  read-only
    0x0012 door_openings     u16  read-only
    0x0020 defrost request   write 1 to start a defrost (compressor -> 2,
                             defrosts + 1); any other value: exception 3

Any other address gives exception 2 (illegal data address), so does a write to
a read-only register; function codes other than 3 and 6 give exception 1.

Control lines on stdin (one per line):
    mute 6           slave 6 stops answering anything, as if unplugged
    unmute 6         it answers again
    set 5 0 215      holding register 0 of slave 5 := 215 (negative values are
                     stored as two's complement; no device-side rule applies)
Each control line is acknowledged on stdout as {"control": LINE, "ok": true}
(or "error": why). The script exits when stdin closes, so it never outlives the
test that started it.

Stdout, one JSON object per line, flushed:
    {"ready": true}                                     listening on the port
    {"slave": 5, "fc": 3, "address": 0, "count": 4}     a request it answered
    {"slave": 5, "fc": 6, "address": 1, "value": 40}
    ... plus "exception": N when the answer was exception N.
Requests for slaves not in --slaves, or muted ones, get no answer at all and
print nothing, as on a real bus.

How it is done in pymodbus 3.x (3.16): the datastore is the SimDevice/SimData
model (the ModbusDeviceContext/ModbusServerContext classes are deprecated and
are converted to it anyway); device-side rules live in the SimDevice `action`
hook, which may return an ExcCodes member. Staying silent is done in the
`trace_pdu` hook: returning None for a received request makes the server drop
it. `ignore_missing_devices=True` alone is not enough in 3.16.1: with SimDevice
datastores an unknown id raises KeyError (not NoSuchIdException) and the
server answers it with exception 4. The same hook logs each answer, paired
with the request it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading

try:
    from pymodbus import __version__ as PYMODBUS_VERSION
    from pymodbus.constants import ExcCodes
    from pymodbus.framer import FramerType
    from pymodbus.logging import pymodbus_apply_logging_config
    from pymodbus.pdu import ExceptionResponse, ModbusPDU
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator import DataType, SimData, SimDevice
except ImportError as exc:  # the Rust test checks for this before starting us
    sys.exit(f"modbus_slaves.py needs pymodbus 3.x and pyserial: {exc}")

# Register addresses (the CC-200 map above).
TEMPERATURE, SETPOINT, ALARMS, COMPRESSOR = 0x0000, 0x0001, 0x0002, 0x0003
COMPRESSOR_HOURS, DEFROSTS, DOOR_OPENINGS = 0x0010, 0x0011, 0x0012
DEFROST_REQUEST = 0x0020
SETPOINT_RAW_MIN, SETPOINT_RAW_MAX = -50, 120  # -5.0 .. 12.0 degC
COMPRESSOR_DEFROST = 2
WRITABLE = {SETPOINT, DEFROST_REQUEST}


def emit(obj: dict) -> None:
    """One JSON line on stdout, flushed at once (the test reads it live)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def signed16(raw: int) -> int:
    return raw - 0x10000 if raw & 0x8000 else raw


def cc200_registers() -> list[SimData]:
    """A fresh register set; addresses in the gaps are invalid (exception 2).

    All are writable for pymodbus: read-only is a device rule (`device_rules`)
    so that `set` control lines can still change any register.
    """

    def reg(address, value, datatype=DataType.REGISTERS):
        return SimData(address, values=value, datatype=datatype)

    return [
        reg(TEMPERATURE, 45, DataType.INT16),  # 4.5 degC
        reg(SETPOINT, 30, DataType.INT16),  # 3.0 degC
        reg(ALARMS, 0),
        reg(COMPRESSOR, 1),  # running
        reg(COMPRESSOR_HOURS, 1234),
        reg(DEFROSTS, 56),
        reg(DOOR_OPENINGS, 789),
        reg(DEFROST_REQUEST, 0),
    ]


class Bus:
    """The slaves on one line, their mute state, and the request log."""

    def __init__(self, slaves: list[int]):
        self.slaves = set(slaves)
        self.muted: set[int] = set()
        self.pending: ModbusPDU | None = None  # the request being answered
        self.control_write = False  # `set` lines bypass the device rules
        self.server: ModbusSerialServer | None = None

    def devices(self) -> list[SimDevice]:
        return [
            SimDevice(slave, simdata=cc200_registers(), action=self.device_rules)
            for slave in sorted(self.slaves)
        ]

    async def device_rules(
        self, fc, start, address, count, registers, values
    ) -> ExcCodes | None:
        """The CC-200's own checks, run by pymodbus after its address checks."""
        if fc not in (3, 6):
            return ExcCodes.ILLEGAL_FUNCTION
        if values is None or self.control_write:
            return None
        if any(a not in WRITABLE for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        value = values[0]
        if address == SETPOINT and not (
            SETPOINT_RAW_MIN <= signed16(value) <= SETPOINT_RAW_MAX
        ):
            return ExcCodes.ILLEGAL_VALUE
        if address == DEFROST_REQUEST:
            if value != 1:
                return ExcCodes.ILLEGAL_VALUE
            registers[COMPRESSOR - start] = COMPRESSOR_DEFROST
            registers[DEFROSTS - start] = (registers[DEFROSTS - start] + 1) & 0xFFFF
        return None

    def trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """pymodbus calls this for every request received and answer sent."""
        if not sending:
            if pdu.dev_id not in self.slaves or pdu.dev_id in self.muted:
                return None  # dropped: no answer, as from an absent device
            self.pending = pdu
            return pdu
        request, self.pending = self.pending, None
        if request is not None:
            self.log_served(request, pdu)
        return pdu

    @staticmethod
    def log_served(request: ModbusPDU, answer: ModbusPDU) -> None:
        line = {
            "slave": request.dev_id,
            "fc": request.function_code,
            "address": request.address,
        }
        if request.function_code == 6:
            line["value"] = request.registers[0]
        else:
            line["count"] = request.count
        if isinstance(answer, ExceptionResponse):
            line["exception"] = answer.exception_code
        emit(line)

    async def control(self, text: str) -> None:
        """One stdin line: mute N | unmute N | set N REGISTER VALUE."""
        words = text.split()
        try:
            if len(words) == 2 and words[0] in ("mute", "unmute"):
                slave = int(words[1], 0)
                if words[0] == "mute":
                    self.muted.add(slave)
                else:
                    self.muted.discard(slave)
            elif len(words) == 4 and words[0] == "set":
                slave, register, value = (int(w, 0) for w in words[1:])
                await self.set_register(slave, register, value)
            else:
                raise ValueError("expected: mute N | unmute N | set N REGISTER VALUE")
        except (ValueError, TypeError) as exc:
            emit({"control": text, "error": str(exc)})
            return
        emit({"control": text, "ok": True})

    async def set_register(self, slave: int, register: int, value: int) -> None:
        if slave not in self.slaves:
            raise ValueError(f"no slave {slave} on this bus")
        self.control_write = True
        try:
            # The server's public datastore API; it raises TypeError when the
            # datastore refuses (an address outside the register map).
            await self.server.async_setValues(slave, 6, register, [value & 0xFFFF])
        except TypeError:
            raise ValueError(f"register {register:#06x} is not in the CC-200 map") from None
        finally:
            self.control_write = False


def read_stdin(loop: asyncio.AbstractEventLoop, bus: Bus, done: asyncio.Event):
    """Blocking stdin reader (thread): hands each line to the event loop."""
    for line in sys.stdin:
        if line.strip():
            asyncio.run_coroutine_threadsafe(bus.control(line.strip()), loop)
    loop.call_soon_threadsafe(done.set)


async def serve(args: argparse.Namespace) -> None:
    bus = Bus(args.slaves)
    server = ModbusSerialServer(
        bus.devices(),
        framer=FramerType.RTU,
        port=args.port,
        baudrate=args.baud,
        bytesize=8,
        parity="N",
        stopbits=2,
        # Belt and braces: trace_pdu already drops unknown ids (see above).
        ignore_missing_devices=True,
        trace_pdu=bus.trace_pdu,
    )
    bus.server = server
    await server.serve_forever(background=True)
    emit({"ready": True, "pymodbus": PYMODBUS_VERSION, "slaves": sorted(bus.slaves)})
    done = asyncio.Event()
    threading.Thread(
        target=read_stdin, args=(asyncio.get_running_loop(), bus, done), daemon=True
    ).start()
    await done.wait()
    await server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", required=True, help="serial device (a pty)")
    parser.add_argument(
        "--slaves",
        required=True,
        type=lambda s: [int(x, 0) for x in s.split(",") if x],
        help="comma-separated slave ids, e.g. 5,6",
    )
    parser.add_argument("--baud", type=int, default=19200)
    parser.add_argument("--debug", action="store_true", help="pymodbus debug log on stderr")
    args = parser.parse_args()
    if args.debug:
        pymodbus_apply_logging_config("DEBUG")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
