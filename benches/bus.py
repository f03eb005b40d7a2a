#!/usr/bin/env python3
"""The gateway as Modbus RTU bus master: poll rates, offline and online times.

    python3 benches/bus.py        (from the repository root or anywhere)

Wired exactly like tests/modbus_bus.rs: a socat pty pair, the pymodbus slaves
of tests/peers/modbus_slaves.py (addresses 5 and 6) on its `bus` end, and the
release binary (target/release/vendgate, build it first with
`cargo build --release`) on its `gw` end, as cooler-05 and cooler-06 with the
CoolMax CC-200 profile. The gateway talks to a Mosquitto of its own on a free
port; `mosquitto_sub` timestamps the status changes, and the rates come from
the gateway's Prometheus counters (`--metrics-listen`).

Two runs with the profile's poll_interval set to 1s (as shipped) and to
10ms (saturated: the bus then runs one exchange after the other as fast as
they go). Each run:
  1. both online, 3 s warm-up, requests/s and answers/s per device over 20 s;
  2. `mute 6`: time until cooler-06's status starts with "offline", and the
     rates of both devices over the 20 s after the mute;
  3. `unmute 6`: time until cooler-06 is online again.

Needs only the Python standard library, plus mosquitto, mosquitto_sub, socat
and python3 with pymodbus 3.16 and pyserial (for the slaves' script). Every
wait is bounded; every child process is killed on the way out.
"""

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATEWAY = os.path.join(REPO, "target", "release", "vendgate")
SLAVES_PY = os.path.join(REPO, "tests", "peers", "modbus_slaves.py")
PROFILE = os.path.join(REPO, "device-profiles", "coolmax-cc200.yaml")
DEVICES = {"cooler-05": 5, "cooler-06": 6}
RUNS = [("poll 1s", "1s"), ("poll 10ms", "10ms")]
WARM_UP_S = 3
MEASURE_S = 20
# The Prometheus names in src/health/prometheus.rs.
FRAMES_OUT = "vendgate_frames_sent_total"
FRAMES_IN = "vendgate_frames_received_total"


class BenchError(Exception):
    """A failure with a message that says what to do; no traceback needed."""


# --- child processes -------------------------------------------------------


class Children:
    """Every process the bench started, killed in reverse order at the end."""

    def __init__(self):
        self.procs = []  # (name, Popen)

    def start(self, name, args, **kwargs):
        try:
            proc = subprocess.Popen(args, **kwargs)
        except OSError as exc:
            raise BenchError(f"cannot start {name} ({args[0]}): {exc}") from None
        self.procs.append((name, proc))
        return proc

    def check_alive(self):
        """Fails at once when a child died, instead of timing out later."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with status {proc.returncode}")

    def kill_all(self):
        # Reverse order: the gateway goes while its broker and line still
        # exist (it publishes its offline statuses), the line goes last.
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdin:
                proc.stdin.close()
        self.procs.clear()


class LineLog:
    """A child's stdout lines, each with its arrival time (a reader thread).

    Times are time.monotonic(), so they compare with the bench's own marks.
    """

    def __init__(self, stream, parse=lambda line: line):
        self.lines = []  # (time, parsed line)
        self.lock = threading.Lock()
        self.parse = parse
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for raw in stream:
            parsed = self.parse(raw.rstrip("\n"))
            if parsed is not None:
                with self.lock:
                    self.lines.append((time.monotonic(), parsed))

    def first(self, pred, since=0.0):
        """(time, line) of the first line at or after `since` matching pred."""
        with self.lock:
            return next(((t, v) for t, v in self.lines if t >= since and pred(v)), None)

    def wait_for(self, pred, what, timeout, since=0.0, children=None):
        deadline = time.monotonic() + min(timeout, 60)
        while time.monotonic() < deadline:
            hit = self.first(pred, since)
            if hit:
                return hit
            if children:
                children.check_alive()
            time.sleep(0.01)
        raise BenchError(f"no {what} within {min(timeout, 60)} s")


def json_or_none(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


def wait_until(done, what, timeout):
    deadline = time.monotonic() + min(timeout, 60)
    while not done():
        if time.monotonic() >= deadline:
            raise BenchError(f"no {what} within {min(timeout, 60)} s")
        time.sleep(0.02)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


# --- the rig ---------------------------------------------------------------


def find_tools():
    """Paths of the tools, or a BenchError naming the one that is missing."""
    tools = {}
    # mosquitto is in /usr/sbin, often not on a normal user's PATH.
    path = os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin"
    for tool in ("mosquitto", "mosquitto_sub", "socat", "python3"):
        found = shutil.which(tool, path=path)
        if not found:
            raise BenchError(f"{tool} is not installed (needed by benches/bus.py)")
        tools[tool] = found
    check = "import serial; from pymodbus.simulator import SimDevice; SimDevice.action"
    probe = subprocess.run(
        [tools["python3"], "-c", check], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        raise BenchError(
            "python3 lacks pymodbus 3.16 or pyserial "
            f"(pip install pymodbus==3.16.1 pyserial): {probe.stderr.strip()[-300:]}"
        )
    if not os.access(GATEWAY, os.X_OK):
        raise BenchError(f"{GATEWAY} does not exist: build it with `cargo build --release`")
    return tools


def start_broker(children, tools, tmp):
    port = free_port()
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    log = open(os.path.join(tmp, "mosquitto.log"), "w")
    children.start("mosquitto", [tools["mosquitto"], "-c", conf], stdout=log, stderr=log)
    wait_until(lambda: port_open(port), f"mosquitto listening on {port}", 10)
    return port


def watch_statuses(children, tools, broker_port):
    """mosquitto_sub on every status topic: a LineLog of (topic, payload)."""
    proc = children.start(
        "mosquitto_sub",
        [tools["mosquitto_sub"], "-h", "127.0.0.1", "-p", str(broker_port),
         "-v", "-t", "vending/+/status"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )

    def parse(line):
        topic, _, payload = line.partition(" ")
        return (topic, payload)

    return LineLog(proc.stdout, parse)


def start_line(children, tools, tmp):
    """socat's pty pair, as in tests/modbus_bus.rs: (gw path, bus path)."""
    gw, bus = os.path.join(tmp, "gw"), os.path.join(tmp, "bus")
    log = open(os.path.join(tmp, "socat.log"), "w")
    children.start(
        "socat",
        [tools["socat"], "-d", "-d", f"pty,raw,echo=0,link={gw}", f"pty,raw,echo=0,link={bus}"],
        stdout=subprocess.DEVNULL, stderr=log,
    )
    wait_until(lambda: os.path.exists(gw) and os.path.exists(bus), "socat's pty links", 5)
    return gw, bus


class Slaves:
    """The pymodbus slaves 5 and 6 with their stdin control channel."""

    def __init__(self, children, tools, tmp, bus):
        self.children = children
        self.proc = children.start(
            "modbus_slaves.py",
            [tools["python3"], SLAVES_PY, "--port", bus, "--slaves", "5,6"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            stderr=open(os.path.join(tmp, "modbus_slaves.log"), "w"),
        )
        # Without this the slaves' JSON log of every request served would
        # sit in the pipe; the reader thread keeps the pipe drained.
        self.log = LineLog(self.proc.stdout, json_or_none)
        # Generous: importing pymodbus on a busy 2-core machine takes a while.
        _, ready = self.log.wait_for(
            lambda v: v.get("ready") is True, "ready line from modbus_slaves.py", 30,
            children=children,
        )
        self.pymodbus = ready.get("pymodbus", "?")

    def control(self, line):
        """Sends `mute 6` / `unmute 6`; returns once the script confirmed it."""
        sent = time.monotonic()
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        _, ack = self.log.wait_for(
            lambda v: v.get("control") == line, f"ack of {line!r}", 5, since=sent,
            children=self.children,
        )
        if ack.get("ok") is not True:
            raise BenchError(f"modbus_slaves.py refused {line!r}: {ack}")
        return sent


def write_config(tmp, broker_port, gw, poll_interval):
    """The gateway's config, with the CC-200 profile at `poll_interval`."""
    profiles = os.path.join(tmp, "profiles")
    os.makedirs(profiles)
    with open(PROFILE) as f:
        text = f.read()
    text, n = re.subn(r"(?m)^(\s*poll_interval:\s*)\S+", rf"\g<1>{poll_interval}", text)
    if n != 1:
        raise BenchError(f"expected one poll_interval in {PROFILE}, found {n}")
    with open(os.path.join(profiles, "coolmax-cc200.yaml"), "w") as f:
        f.write(text)
    devices = "".join(
        f"  - {{id: {machine}, profile: coolmax-cc200, port: {gw}, address: {address}}}\n"
        for machine, address in DEVICES.items()
    )
    config = os.path.join(tmp, "config.yaml")
    with open(config, "w") as f:
        f.write(
            f"gateway:\n  id: gw-bench\n"
            f"mqtt:\n  url: mqtt://127.0.0.1:{broker_port}\n"
            f"store:\n  path: {os.path.join(tmp, 'store')}\n"
            f"profiles_dir: {profiles}\n"
            f"devices:\n{devices}"
        )
    return config


def start_gateway(children, tmp, config):
    """`vendgate run`; returns the port of its metrics endpoint."""
    port = free_port()
    log = open(os.path.join(tmp, "vendgate.log"), "w")
    children.start(
        "vendgate",
        [GATEWAY, "run", "-c", config, "--metrics-listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=log,
    )
    wait_until(lambda: children.check_alive() or port_open(port), "metrics endpoint", 15)
    return port


# --- measuring -------------------------------------------------------------

METRIC_LINE = re.compile(r'^(\w+)\{machine="([^"]+)"\} (\d+)$')


def counters(metrics_port):
    """(time, {machine: {"out": frames sent, "in": frames received}})."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    at = time.monotonic()
    found = {machine: {} for machine in DEVICES}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m and m[2] in found and m[1] in (FRAMES_OUT, FRAMES_IN):
            found[m[2]]["out" if m[1] == FRAMES_OUT else "in"] = int(m[3])
    for machine, values in found.items():
        if len(values) != 2:
            raise BenchError(f"{url} lacks {FRAMES_OUT} or {FRAMES_IN} for {machine}")
    return at, found


def rates(before, after):
    """{machine: (frames out/s, frames in/s)} between two `counters` samples."""
    (t0, c0), (t1, c1) = before, after
    seconds = t1 - t0
    return {
        m: ((c1[m]["out"] - c0[m]["out"]) / seconds, (c1[m]["in"] - c0[m]["in"]) / seconds)
        for m in DEVICES
    }


def sleep_until(moment):
    time.sleep(max(0.0, moment - time.monotonic()))


def status_is(machine, prefix):
    topic = f"vending/{machine}/status"
    return lambda msg: msg[0] == topic and msg[1].startswith(prefix)


def steady_rates(figures, metrics_port, statuses, children):
    """Step 1: both online, warm up, the rates of both devices."""
    for machine in DEVICES:
        statuses.wait_for(status_is(machine, "online"), f"{machine} online", 30,
                          children=children)
    time.sleep(WARM_UP_S)
    before = counters(metrics_port)
    time.sleep(MEASURE_S)
    for machine, (out, inn) in rates(before, counters(metrics_port)).items():
        figures[f"{machine} requests/s, both answering"] = f"{out:.2f}"
        figures[f"{machine} answers/s, both answering"] = f"{inn:.2f}"


def mute_and_unmute(figures, metrics_port, statuses, slaves, children):
    """Steps 2 and 3: cooler-06 dead for MEASURE_S seconds, then back."""
    before = counters(metrics_port)
    muted = slaves.control("mute 6")
    window_end = muted + MEASURE_S
    # Offline is expected within the window (3 failed exchanges); a later
    # one is reported as missing rather than stretching the window.
    hit = statuses.first(status_is("cooler-06", "offline"), since=muted)
    while hit is None and time.monotonic() < window_end:
        children.check_alive()
        time.sleep(0.01)
        hit = statuses.first(status_is("cooler-06", "offline"), since=muted)
    offline_sample = counters(metrics_port) if hit else None
    sleep_until(window_end)
    after = counters(metrics_port)
    figures["cooler-06 offline after `mute 6` (s)"] = (
        f"{hit[0] - muted:.2f}" if hit else f"not within {MEASURE_S} s")
    window = rates(before, after)
    figures["cooler-05 requests/s, 20 s after the mute"] = f"{window['cooler-05'][0]:.2f}"
    figures["cooler-05 answers/s, 20 s after the mute"] = f"{window['cooler-05'][1]:.2f}"
    figures["cooler-06 requests/s, 20 s after the mute"] = f"{window['cooler-06'][0]:.2f}"
    if offline_sample:
        probes = rates(offline_sample, after)["cooler-06"][0]
        figures["cooler-06 requests/s while offline (probes)"] = f"{probes:.2f}"
    unmuted = slaves.control("unmute 6")
    # Probed every down_probe_interval (5 s): the next answer brings it up.
    at, _ = statuses.wait_for(status_is("cooler-06", "online"), "cooler-06 online again",
                              30, since=unmuted, children=children)
    figures["cooler-06 online after `unmute 6` (s)"] = f"{at - unmuted:.2f}"


def run(label, poll_interval, tools):
    """One run on a fresh rig (no retained status left from the other run)."""
    children = Children()
    tmp = tempfile.mkdtemp(prefix="vendgate-bus-bench-")
    figures = {}
    try:
        broker_port = start_broker(children, tools, tmp)
        statuses = watch_statuses(children, tools, broker_port)
        gw, bus = start_line(children, tools, tmp)
        slaves = Slaves(children, tools, tmp, bus)
        figures["pymodbus"] = slaves.pymodbus
        config = write_config(tmp, broker_port, gw, poll_interval)
        metrics_port = start_gateway(children, tmp, config)
        steady_rates(figures, metrics_port, statuses, children)
        mute_and_unmute(figures, metrics_port, statuses, slaves, children)
    except BenchError as exc:
        raise BenchError(f"{label}: {exc}\n{log_tails(tmp)}") from None
    finally:
        children.kill_all()
    shutil.rmtree(tmp, ignore_errors=True)
    print_table([label], [figures])
    return figures


def log_tails(tmp):
    """The last lines of every child's log, to see why a run failed."""
    out = []
    for name in ("vendgate.log", "modbus_slaves.log", "socat.log", "mosquitto.log"):
        path = os.path.join(tmp, name)
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                tail = f.readlines()[-15:]
            out.append(f"--- {path} (last lines)\n" + "".join(tail))
    return "\n".join(out)


# --- report ----------------------------------------------------------------


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def print_table(labels, columns):
    rows = [key for key in columns[0] if key != "pymodbus"]
    print(f"\n| figure | {' | '.join(labels)} |")
    print("|---" * (len(labels) + 1) + "|")
    for key in rows:
        print(f"| {key} | {' | '.join(c.get(key, '-') for c in columns)} |")
    sys.stdout.flush()


def main():
    # SIGTERM ends the bench like Ctrl-C, so the finally blocks kill the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        tools = find_tools()
        print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
        print(f"cpu: {cpu_model()} ({os.cpu_count()} cores)")
        print(f"gateway: {GATEWAY}")
        columns = []
        for label, poll_interval in RUNS:
            print(f"\n## {label} (poll_interval {poll_interval})", flush=True)
            columns.append(run(label, poll_interval, tools))
    except BenchError as exc:
        sys.exit(f"benches/bus.py: {exc}")
    print(f"\n## summary (pymodbus {columns[0]['pymodbus']}, "
          f"{MEASURE_S} s windows, {WARM_UP_S} s warm-up)")
    print_table([label for label, _ in RUNS], columns)


if __name__ == "__main__":
    main()
