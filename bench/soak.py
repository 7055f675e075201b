"""Soak: the whole box for 30 minutes under a fault every 30 s, with the bureau's recorder beside it.

Real parts, all on 127.0.0.1: `python -m edge_agent run` as its own process; two simulated
meters (a noise meter with night piling and loud/quiet phases, a PM sensor with dust
episodes), each on its own socat pty pair with a simulator process; a GStreamer RTSP server
serving a synthetic site video with black smoke (`detectors: [black_smoke]`); Mosquitto with
persistence; a bureau recorder with a persistent MQTT 5 session (clean_start false, QoS 1).
The agent's data dir is a real small tmpfs.

Faults, one every `--interval` s (seeded; every kind once first, then drawn at random):
  broker_restart   Mosquitto stopped for 5 s, then started again (persistence kept)
  meter_unplugged  one bus's socat and simulator killed (the port vanishes) for 20 s
  camera_killed    the RTSP server SIGKILLed, started again after 15 s
  agent_killed     the agent SIGKILLed and started again (as systemd would)
  disk_full        the data disk filled with a filler file, held 20 s, freed
  clock_step       the box's wall clock stepped +1 h / back / -1 h / back (monotonic untouched)

The clock is stepped with libfaketime (Debian package `faketime`, installed here when run as
root): LD_PRELOAD with FAKETIME_TIMESTAMP_FILE holding a relative offset and
FAKETIME_DONT_FAKE_MONOTONIC=1. libfaketime 0.9.10 breaks Python >= 3.11's time.sleep under
that option (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) gets EINVAL: libfaketime issue
#426), so a 10-line shim compiled here passes monotonic clock_nanosleep straight to the
kernel. Both are checked on a Python process before the run; without them the clock fault
is reported as unavailable, never faked.

At the end the faults stop, the backlog drains (outbox empty, owed bundles built, or a
timeout), the agent gets SIGTERM, and the bureau's record is checked against the box's own
archive, outbox, evidence dir and violation store: violations started/ended/open (each open
one must be open in the box's final status), bundles on disk / received complete / verified
with the device key, messages lost (must be 0), duplicates after de-dup by msg_id, the RSS
slope of the longest uninterrupted agent run (RSS sampled every 10 s, first minute left out),
tracebacks and errors in the agent's stderr.

The code under test is copied at the start, so the 14-odd restarts of a run all run the same
code while the working tree is being edited (`--live-tree` runs the tree as it is). `--keep`
keeps the work dir: agent.log, bureau.jsonl (what the bureau got), rss.csv, a copy of the data.

Run: .venv/bin/python bench/soak.py [--minutes 30] [--seed 1]   (root for the tmpfs and
faketime; needs mosquitto, socat, GStreamer's RTSP server; ends with one JSON line; try
--minutes 3 first: every fault kind still happens once)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
CACHE = Path.home() / ".cache" / "edge-agent-bench"
KINDS = ("broker_restart", "meter_unplugged", "camera_killed", "agent_killed", "disk_full", "clock_step")
SITE, DEVICE, TZ = "soak-site", "soak-box", "Asia/Shanghai"
BASE = f"edge/v1/{SITE}/{DEVICE}"
FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
VIDEO_S, SMOKE_FROM, SMOKE_TO = 240, 40, 160  # the camera's video loops: smoke from 40 s to 160 s
RSS_EVERY_S, RSS_WARMUP_S = 10.0, 60.0
SOURCES = ("edge_agent", "drivers", "detectors", "firmware_tools", "config")

SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
/* libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 turns an absolute CLOCK_MONOTONIC
   clock_nanosleep into a negative time (EINVAL): Python >= 3.11's time.sleep. The monotonic
   clock is not faked, so its sleeps go to the kernel as they are. */
typedef int (*cns_t)(clockid_t, int, const struct timespec *, struct timespec *);
int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *req, struct timespec *rem) {
    if (clock_id == CLOCK_MONOTONIC || clock_id == CLOCK_BOOTTIME || clock_id == CLOCK_MONOTONIC_RAW) {
        long r = syscall(SYS_clock_nanosleep, clock_id, flags, req, rem);
        return r == 0 ? 0 : errno;
    }
    static cns_t next;
    if (!next) next = (cns_t)dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(clock_id, flags, req, rem);
}
"""


def snapshot_sources(dest: Path) -> dict[str, Any]:
    """Copy the code under test, so every restart in the run runs the same code even while the
    working tree is being edited; returns where it came from."""
    dest.mkdir(parents=True)
    for name in SOURCES:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", *SOURCES], capture_output=True,
                           text=True).stdout.splitlines()
    return {"git_head": head, "uncommitted_files": len(dirty), "snapshot": str(dest)}


def log(t0: float, text: str) -> None:
    print(f"[{time.monotonic() - t0:7.1f} s] {text}", flush=True)


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, wait_s: float = 5.0) -> int | None:
    """Signal one child we started (by its pid) and reap it; SIGKILL if it lingers."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


# --------------------------------------------------------------------------- the site's parts

class Bus:
    """One RS-485 bus: a socat pty pair and a simulator process serving one meter on it."""

    def __init__(self, folder: Path, profile: str, scenario: str, seed: int, src: Path):
        self.folder, self.src = folder, src
        self.profile, self.scenario, self.seed = profile, scenario, seed
        self.meter_port, self.agent_port = str(folder / "ttyMETER"), str(folder / "ttyAGENT")
        self.control = folder / "control.json"
        self.socat: subprocess.Popen[bytes] | None = None
        self.sim: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.control.write_text("{}")

    def plug(self) -> None:
        self.socat = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.meter_port}", f"pty,raw,echo=0,link={self.agent_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(lambda: os.path.exists(self.meter_port) and os.path.exists(self.agent_port), 5):
            raise RuntimeError("socat did not create the pty pair")
        with open(self.folder / "simulator.log", "ab") as err:
            self.sim = subprocess.Popen(
                [sys.executable, "-m", "firmware_tools.simulator", "--port", self.meter_port, "--profile",
                 self.profile, "--address", "1", "--scenario", self.scenario, "--seed", str(self.seed),
                 "--control", str(self.control)],
                cwd=self.src, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)

    def unplug(self) -> None:
        stop_process(self.sim)
        stop_process(self.socat)
        wait_until(lambda: not os.path.exists(self.agent_port), 2)
        self.sim = self.socat = None

    def set_values(self, values: dict[str, float]) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps({"values": values}))
        tmp.replace(self.control)


class Camera:
    """The GStreamer RTSP server (system Python) serving one pre-encoded video on a fixed port."""

    def __init__(self, video: Path, port: int, folder: Path):
        self.video, self.port, self.folder = video, port, folder
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        from edge_agent.demo.scenes import SERVER, SYSTEM_PYTHON

        for _ in range(20):  # the port may linger a moment after a kill
            with open(self.folder / "rtsp.log", "ab") as err:
                self.proc = subprocess.Popen(
                    [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--file", str(self.video)],
                    stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return
            stop_process(self.proc, signal.SIGKILL)
            time.sleep(0.5)
        raise RuntimeError("the RTSP server did not start")

    def kill(self) -> None:
        stop_process(self.proc, signal.SIGKILL)
        self.proc = None


class WallClock:
    """The agent's wall-clock offset through libfaketime's timestamp file (monotonic untouched)."""

    def __init__(self, folder: Path):
        self.file = folder / "faketime-offset"
        self.offset_s = 0
        self.available = False
        self.why = ""
        self.env: dict[str, str] = {}
        self.shim = folder / "faketime-sleep-shim.so"
        self.latency_s = 0.0  # how long a step took to show in the probe
        self.file.write_text("+0s\n")

    def prepare(self, folder: Path) -> None:
        """Find (or install) libfaketime, build the sleep shim, and prove both on a Python process."""
        if not FAKETIME_LIB.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "faketime"],
                           capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if not FAKETIME_LIB.exists():
            self.why = f"{FAKETIME_LIB} missing (apt-get install faketime)"
            return
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            self.why = "no C compiler for the clock_nanosleep shim (libfaketime issue #426 breaks time.sleep)"
            return
        src = folder / "faketime-sleep-shim.c"
        src.write_text(SHIM_C)
        built = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(self.shim), str(src), "-ldl"],
                               capture_output=True, text=True)
        if built.returncode != 0:
            self.why = f"cannot build the clock_nanosleep shim: {built.stderr.strip()[:200]}"
            return
        self.env = {"LD_PRELOAD": f"{self.shim}:{FAKETIME_LIB}", "FAKETIME_TIMESTAMP_FILE": str(self.file),
                    "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "NO_FAKE_STAT": "1"}
        self.why = self._self_test(folder)
        self.available = not self.why
        if not self.available:
            self.env = {}

    def _self_test(self, folder: Path) -> str:
        """A Python process under the preload: its wall clock must jump by the file's offset, its
        monotonic clock and time.sleep must not notice (the offset is re-read within ~2 s)."""
        probe_file = folder / "faketime-probe"
        probe_file.write_text("+0s\n")
        code = ("import time,sys\n"
                "d0=time.time()-time.monotonic(); print('ready', flush=True); sys.stdin.readline()\n"
                "m0=time.monotonic(); step=0\n"
                "while time.monotonic()-m0 < 6 and abs(step-3600) > 5:\n"
                "    time.sleep(0.05); step=time.time()-time.monotonic()-d0\n"
                "print(round(step), round(time.monotonic()-m0, 2), flush=True)\n")
        env = {**os.environ, **self.env, "FAKETIME_TIMESTAMP_FILE": str(probe_file)}
        probe = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert probe.stdout is not None and probe.stdin is not None
            if probe.stdout.readline().strip() != "ready":
                return f"a Python process under libfaketime failed: {probe.stderr.read() if probe.stderr else ''}"[:300]
            probe_file.write_text("+3600s\n")
            t0 = time.monotonic()
            probe.stdin.write("go\n")
            probe.stdin.flush()
            out, err = probe.communicate(timeout=20)
            real = time.monotonic() - t0
        except subprocess.TimeoutExpired:
            probe.kill()
            return "a Python process under libfaketime hung"
        if probe.returncode != 0:
            return f"a Python process under libfaketime failed: {err.strip().splitlines()[-1:]}"
        step, mono = out.split()
        if int(step) != 3600 or abs(float(mono) - real) > 0.5:
            return (f"libfaketime did not step the wall clock alone (wall step {step} s; monotonic "
                    f"{mono} s in {real:.2f} s)")
        self.latency_s = float(mono)
        return ""

    def step(self, rng: random.Random, direction: list[int]) -> str:
        """Back to 0 when stepped; else +1 h and -1 h by turns."""
        if self.offset_s:
            before, self.offset_s = self.offset_s, 0
            what = f"wall clock {before:+d} s -> 0 (stepped {-before:+d} s)"
        else:
            self.offset_s = direction[0] * 3600
            direction[0] = -direction[0]
            what = f"wall clock 0 -> {self.offset_s:+d} s"
        self.file.write_text(f"{self.offset_s:+d}s\n")
        return what


class DataDisk:
    """A real small tmpfs for the agent's data dir; `fill` writes a filler file until it is full."""

    def __init__(self, path: Path, size_mb: int):
        self.path, self.size_mb = path, size_mb
        self.mounted = False
        self.filler = path / "soak-filler.bin"

    def mount(self) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root"
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "edge-soak-data",
                               str(self.path)], capture_output=True, text=True)
        if done.returncode != 0:
            return f"cannot mount a tmpfs: {done.stderr.strip()}"
        self.mounted = True
        return ""

    def fill(self) -> int:
        written = 0
        with open(self.filler, "ab", buffering=0) as fh:
            for size in (1 << 20, 1 << 12, 1):
                chunk = b"\xff" * size
                try:
                    while True:
                        fh.write(chunk)
                        written += size
                except OSError:
                    pass
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def unmount(self) -> None:
        if self.mounted and subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        self.mounted = False


@dataclass
class Segment:
    """One uninterrupted run of the agent process, with its RSS samples."""

    pid: int
    start: float
    samples: list[tuple[float, float]] = field(default_factory=list)
    hwm_mb: float = 0.0
    end: float | None = None
    ended_by: str = ""

    def slope_mb_per_h(self) -> float | None:
        pts = [(t, r) for t, r in self.samples if t - self.start >= RSS_WARMUP_S]
        if len(pts) < 3:
            pts = self.samples
        if len(pts) < 2:
            return None
        n = len(pts)
        mt, mr = sum(t for t, _ in pts) / n, sum(r for _, r in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        return None if var == 0 else 3600 * sum((t - mt) * (r - mr) for t, r in pts) / var


def proc_mb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Agent:
    """`python -m edge_agent run` as its own process; stderr appended to one log file."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str], src: Path):
        self.config, self.log_path, self.env, self.src = config, log_path, env, src
        self.proc: subprocess.Popen[bytes] | None = None
        self.segments: list[Segment] = []
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as err:
            err.write(f"===== soak: agent start {self.starts + 1} at {datetime.now().isoformat()}\n".encode())
            err.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(self.config)],
                                         cwd=self.src, env=self.env, stdout=subprocess.DEVNULL, stderr=err,
                                         start_new_session=True)
        self.starts += 1
        self.segments.append(Segment(self.proc.pid, time.monotonic()))

    def sample(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        seg = self.segments[-1]
        if time.monotonic() - seg.start < 5:
            return  # not yet the agent: the fork is still becoming Python
        rss, hwm = proc_mb(self.proc.pid, "VmRSS"), proc_mb(self.proc.pid, "VmHWM")
        if rss is not None:
            seg.samples.append((time.monotonic(), rss))
        if hwm is not None:
            seg.hwm_mb = max(seg.hwm_mb, hwm)

    def stop(self, sig: int, why: str, wait_s: float = 30.0) -> int | None:
        self.sample()
        rc = stop_process(self.proc, sig, wait_s)
        self._close(why)
        return rc

    def exited(self) -> int | None:
        """The return code if the process ended by itself (a crash), else None."""
        if self.proc is not None and self.proc.poll() is not None:
            rc = self.proc.returncode
            self._close(f"exited by itself (rc {rc})")
            return rc
        return None

    def _close(self, why: str) -> None:
        if self.proc is not None and self.segments and self.segments[-1].end is None:
            self.segments[-1].end = time.monotonic()
            self.segments[-1].ended_by = why
        self.proc = None


# --------------------------------------------------------------------------- the bureau

@dataclass
class Received:
    arrival: float  # wall time at the recorder
    topic: str  # relative to BASE
    payload: bytes
    retain: bool
    msg_id: str | None


class Bureau:
    """A bureau recorder: MQTT 5, persistent session (clean_start false, no expiry), QoS 1 on BASE/#."""

    def __init__(self, port: int):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.port = port
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.connects = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-bureau", protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.reconnect_delay_set(1, 2)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connects += 1
        if not getattr(flags, "session_present", False):
            client.subscribe(f"{BASE}/#", qos=1)
        else:
            self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        props = getattr(message, "properties", None)
        msg_id = dict(getattr(props, "UserProperty", None) or []).get("msg_id")
        rel = message.topic[len(BASE) + 1:] if message.topic.startswith(BASE + "/") else message.topic
        with self.lock:
            self.messages.append(Received(time.time(), rel, bytes(message.payload), bool(message.retain), msg_id))

    def start(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0xFFFFFFFF  # the session (and what is queued for it) never expires
        self.client.connect("127.0.0.1", self.port, keepalive=10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("the bureau recorder got no SUBACK")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def count(self, topic: str) -> int:
        with self.lock:
            return sum(1 for m in self.messages if m.topic == topic and not m.retain)


# --------------------------------------------------------------------------- set-up

def smoke_video() -> Path:
    """The camera's loop, encoded once and cached: clear, then black smoke, then clear again."""
    from detectors.training.synth import SmokeScene
    from edge_agent.demo.scenes import FPS, encode

    path = CACHE / f"soak-smoke-{VIDEO_S}s-v1.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    smoky = SmokeScene(opacity=0.8, kind="site", start=0, seed=3)
    clear = SmokeScene(opacity=0.8, kind="site", start=10 ** 9, seed=3)

    def frames() -> Iterator[Any]:
        for second in range(VIDEO_S):  # one picture a second, held for the second
            image = (smoky if SMOKE_FROM <= second < SMOKE_TO else clear).frame(second)
            for _ in range(FPS):
                yield image

    tmp = path.with_suffix(".part.mp4")
    encode(tmp, frames())
    tmp.replace(path)
    return path


def write_config(work: Path, data_dir: Path, broker_port: int, buses: dict[str, Bus], camera: Camera) -> Path:
    import yaml

    now = datetime.now(ZoneInfo(TZ))
    # Night from 3 h ago to 4 h on: it stays night while the box's clock wanders by +-1 h.
    night = {"start": (now - timedelta(hours=3)).strftime("%H:%M"), "end": (now + timedelta(hours=4)).strftime("%H:%M")}
    config: dict[str, Any] = {
        "site": {"id": SITE, "name": "浸泡测试工地", "timezone": TZ},
        "device": {"id": DEVICE},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "reconnect_min_s": 0.2, "reconnect_max_s": 2.0,
                 "keepalive_s": 10},
        "storage": {"data_dir": str(data_dir), "outbox_max_mb": 48, "disk_min_free_mb": 8},
        "telemetry": {"interval_s": 10, "status_interval_s": 30},
        "logging": {"level": "INFO", "format": "text"},
        "meters": [
            {"id": "noise-1", "port": buses["noise"].agent_port, "profile": "renke_rs_zs_n01", "address": 1,
             "poll_interval_s": 1},
            {"id": "dust-1", "port": buses["dust"].agent_port, "profile": "renke_rs_pm_n01", "address": 1,
             "poll_interval_s": 1},
        ],
        "schedule": {"night": [night], "quiet": []},
        "rules": {  # the demo's short windows, so violations start and end within minutes
            "noise": {"window_s": 60, "timing": {"min_duration_s": 0, "clear_s": 30, "cooldown_s": 60}},
            "early_warning": {"window_s": 60, "timing": {"min_duration_s": 5, "clear_s": 30, "cooldown_s": 120}},
            "night_lmax": {"timing": {"min_duration_s": 0, "clear_s": 15, "cooldown_s": 60}},
            "night_work": {"window_s": 60, "timing": {"min_duration_s": 20, "clear_s": 60, "cooldown_s": 120}},
            "dust": {"quantity": "pm10", "window_s": 60, "limit": 80, "unit": "ug/m3", "hysteresis": 5,
                     "timing": {"min_duration_s": 0, "clear_s": 60, "cooldown_s": 120}},
        },
        "speaker": {"enabled": False},
        "cameras": [{"id": "cam-1", "url": camera.url, "analysis_fps": 1, "clip_pre_s": 3, "clip_post_s": 3,
                     "detectors": ["black_smoke"],
                     # smoke filling a synthetic scene reads as a moved camera (as in the demo)
                     "tamper": {"moved_match": 0.0, "moved_shift": 0.5}}],
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def meter_values(elapsed: float, rng: random.Random) -> tuple[dict[str, float], dict[str, float]]:
    """Control-file overrides: noise quiet for the last 90 s of each 4 min (night piling otherwise);
    dust high for the first 150 s of each 5 min (a quiet day otherwise). Jittered: a live value."""
    noise: dict[str, float] = {}
    if elapsed % 240 >= 150:
        noise = {"noise_la": round(42 + rng.gauss(0, 1), 1)}
    dust: dict[str, float] = {}
    if (elapsed + 60) % 300 < 150:
        pm10 = 180 + rng.gauss(0, 10)
        dust = {"pm10": round(pm10, 1), "pm2_5": round(pm10 * 0.45, 1), "tsp": round(pm10 * 1.9, 1)}
    return noise, dust


# --------------------------------------------------------------------------- the box's own records

def read_db(path: Path, query: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(query).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()


def queued(data: Path) -> tuple[int, int, int]:
    """(all, events + evidence, owed bundles) still waiting on the box."""
    rows = read_db(data / "outbox.sqlite", "SELECT kind, COUNT(*) FROM messages GROUP BY kind")
    total = sum(n for _, n in rows)
    urgent = sum(n for k, n in rows if k in ("event", "evidence"))
    owed = read_db(data / "violations.sqlite", "SELECT COUNT(*) FROM evidence_jobs")
    return total, urgent, int(owed[0][0]) if owed else 0


def archived(data: Path, kind: str) -> list[dict[str, Any]]:
    rows = read_db(data / "archive.sqlite", f"SELECT body FROM archive WHERE kind = '{kind}' ORDER BY id")
    return [json.loads(zlib.decompress(body)) for (body,) in rows]


def json_or_none(payload: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- the report

def analyse(bureau: Bureau, data: Path, device_key: Any, work: Path) -> dict[str, Any]:
    """Everything the bureau got, checked against what the box archived, holds and still queues."""
    from edge_agent.evidence.publish import Reassembly, parse_file_leaf
    from edge_agent.evidence.verify import bundle_dirs, verify_bundle, verify_chain

    with bureau.lock:
        live = [m for m in bureau.messages if not m.retain]
    # What is still queued at exit is not lost: it goes at the next start.
    pending = [(k, t, bytes(p)) for k, t, p in read_db(data / "outbox.sqlite",
                                                       "SELECT kind, topic, payload FROM messages")]
    found: list[str | None] = [m.msg_id or (json_or_none(m.payload) or {}).get("msg_id") for m in live]
    no_id = sum(1 for i in found if not i)
    ids = [i or f"no-id:{m.topic}:{hashlib.sha256(m.payload).hexdigest()}" for m, i in zip(live, found, strict=True)]
    id_counts = Counter(ids)
    raw_dups = sum(n - 1 for n in id_counts.values() if n > 1)
    unique: dict[str, Received] = {}
    for m, i in zip(live, ids, strict=True):
        unique.setdefault(i, m)
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in unique.values():
        if m.topic in ("event", "telemetry", "status"):
            body = json_or_none(m.payload)
            if body is not None:
                by_topic[m.topic].append({**body, "_arrival": m.arrival})
    pend_json = [(k, t, json_or_none(p)) for k, t, p in pending]

    # ---- violations
    events = by_topic["event"]
    per_key: dict[str, Counter[str]] = defaultdict(Counter)
    kind_of: dict[str, str] = {}
    source_of: dict[str, str] = {}
    for e in events:
        per_key[e["key"]][e["state"]] += 1
        kind_of[e["key"]] = e.get("kind", "?")
        source_of[e["key"]] = e.get("source", "?")
    pend_events = [b for k, t, b in pend_json if t == "event" and b]
    pend_started = {b["key"] for b in pend_events if b.get("state") == "started"}
    started = {k for k, c in per_key.items() if c["started"]}
    ended = {k for k, c in per_key.items() if c["ended"]}
    open_bureau = {k for k, c in per_key.items() if not c["ended"]}
    offline = [s for s in by_topic["status"] if s.get("state") == "offline" and "components" in s]
    final = max(offline, key=lambda s: s["_arrival"]) if offline else None
    box_open = set(((final or {}).get("components", {}).get("violations", {}) or {}).get("open", []))
    store_open = {k for (k,) in read_db(data / "violations.sqlite", "SELECT key FROM open_violations")}
    owed = {k for (k,) in read_db(data / "violations.sqlite", "SELECT key FROM evidence_jobs")}
    dup_started = sorted(k for k, c in per_key.items() if c["started"] > 1)
    dup_ended = sorted(k for k, c in per_key.items() if c["ended"] > 1)
    no_start = sorted(k for k in per_key if k not in started and k not in pend_started)
    violations = {
        "keys": len(per_key), "started": len(started), "ended": len(ended), "open_at_bureau": len(open_bureau),
        "open_in_final_status": len(box_open), "open_in_store": len(store_open),
        "open_at_bureau_not_held_by_box": sorted(open_bureau - box_open),
        "held_open_by_box_not_open_at_bureau": sorted(box_open - open_bureau),
        "final_status_vs_store_differ": sorted(box_open ^ store_open),
        "keys_without_started": no_start,
        "started_twice": dup_started, "ended_twice": dup_ended,
        "by_kind": dict(Counter(kind_of[k] for k in per_key)),
        "open_by_kind": dict(Counter(kind_of[k] for k in open_bureau)),
        # several violations of one kind open at once on one device (e.g. black smoke on one camera)
        "open_same_kind_and_source": {f"{kind}/{src}": n for (kind, src), n in Counter(
            (kind_of[k], source_of[k]) for k in open_bureau).items() if n > 1},
        "final_offline_status_seen": final is not None,
    }

    # ---- bundles
    disk = {p.name for p in bundle_dirs(data / "evidence")} if (data / "evidence").exists() else set()
    manifests: dict[str, bytes] = {}
    manifest_ids: Counter[str] = Counter()
    files: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    joined = Reassembly()
    for m in unique.values():
        if m.topic == "evidence":
            body = json_or_none(m.payload)
            if body and isinstance(body.get("id"), str):
                manifests.setdefault(body["id"], m.payload)
                manifest_ids[body["id"]] += 1
        elif m.topic.startswith("evidence/"):
            joined.add(m.topic, m.payload)
    for key, joined_bytes in joined.files().items():  # a large file (a clip) comes in parts
        files[key].add(joined_bytes)
    pend_manifests = {b["id"] for k, t, b in pend_json if t == "evidence" and b and "id" in b}
    pend_files = {(piece.bundle, piece.name): True for k, t, p in pending
                  if (piece := parse_file_leaf(t)) is not None}
    complete: list[str] = []
    verified: list[str] = []
    incomplete_lost: list[str] = []
    bad: list[str] = []
    check_root = work / "received-bundles"
    check_root.mkdir(exist_ok=True)
    for bid, raw in sorted(manifests.items()):
        manifest = json.loads(raw)
        listed = manifest.get("files") or []
        got: dict[str, bytes] = {}
        missing = []
        for entry in listed:
            match = next((p for p in files.get((bid, entry["name"]), ()) if
                          hashlib.sha256(p).hexdigest() == entry.get("sha256")), None)
            if match is None:
                missing.append(entry["name"])
            else:
                got[entry["name"]] = match
        if missing:
            if any(pend_files.get((bid, n)) is None for n in missing):
                incomplete_lost.append(f"{bid}: {missing}")
            continue
        complete.append(bid)
        folder = check_root / bid
        folder.mkdir()
        (folder / "manifest.json").write_bytes(raw)
        for name, payload in got.items():
            (folder / name).write_bytes(payload)
        report = verify_bundle(folder, device_key)
        (verified if report.ok else bad).append(bid if report.ok else f"{bid}: {list(report.problems)[:3]}")
        shutil.rmtree(folder)
    chain = verify_chain(data / "evidence", device_key) if disk else None
    keys_wanting = {e["key"] for e in events if e.get("state") == "started" and e.get("evidence_expected")}
    bundled_keys = {json.loads(r).get("violation", {}).get("key") for r in manifests.values()}
    never_sent = sorted(disk - set(manifests) - pend_manifests)
    bundles: dict[str, Any] = {
        "on_disk": len(disk), "manifests_received": len(manifests), "received_complete": len(complete),
        "verified": len(verified), "verify_failed": bad, "pending_at_exit": len(pend_manifests - set(manifests)),
        "owed_at_exit": len(owed), "never_sent": never_sent,
        "incomplete_and_not_pending": incomplete_lost,
        "expected_but_missing": sorted(keys_wanting - bundled_keys - owed
                                       - {json.loads(p).get("violation", {}).get("key")
                                          for k, t, p in pending if t == "evidence"}),
        "chain_problems_on_disk": list(chain.problems)[:5] if chain else [],
        "bundles_failing_on_disk": [f"{r.id}: {list(r.problems)[:2]}" for r in chain.bundles if not r.ok][:5]
        if chain else [],
        "received_not_on_disk": len(set(manifests) - disk),
    }

    # ---- lost messages: the box's archive and evidence dir against the bureau and the outbox
    got_events = Counter((e["key"], e["state"]) for e in events) + Counter(
        (b["key"], b["state"]) for b in pend_events)
    box_events = Counter((e["key"], e["state"]) for e in archived(data, "event"))
    lost_events = sorted(f"{k} {s} x{n - got_events[(k, s)]}" for (k, s), n in box_events.items()
                         if n > got_events[(k, s)])
    not_archived = sorted(f"{k} {s}" for (k, s) in got_events if (k, s) not in box_events)
    tel = by_topic["telemetry"]
    got_tel = {t["end"] for t in tel} | {b["end"] for k, t, b in pend_json if t == "telemetry" and b}
    box_tel = [t["end"] for t in archived(data, "telemetry")]
    lost_tel = sorted(set(box_tel) - got_tel)
    # Minutes the box never made (agent down, disk full): gaps in the sequence of `end`s as they
    # arrived; a clock step (about an hour, or backwards) is not a gap.
    gaps: list[str] = []
    ordered = [(t["end"], parse_time(t["end"]), t.get("interval_s", 10))
               for t in sorted(tel, key=lambda t: t["_arrival"])]
    for (_, a, _), (end, b, step) in itertools.pairwise(ordered):
        if a is not None and b is not None and 1.5 * step < b - a < 900:
            gaps.append(f"{end} ({round((b - a) / step) - 1} missing)")
    lost = {"events": lost_events, "telemetry": lost_tel, "bundles": never_sent + incomplete_lost,
            "count": len(lost_events) + len(lost_tel) + len(never_sent) + len(incomplete_lost)}

    # ---- duplicates after de-dup by msg_id
    tel_ends = Counter(t["end"] for t in tel)
    dup_tel = sorted(e for e, n in tel_ends.items() if n > 1)
    dup_manifests = sorted(i for i, n in manifest_ids.items() if n > 1)
    ongoing_extra = sum(max(0, n - box_events[(k, s)]) for (k, s), n in
                        Counter((e["key"], e["state"]) for e in events).items() if s == "ongoing")
    duplicates = {"count": len(dup_started) + len(dup_ended) + len(dup_tel) + len(dup_manifests),
                  "event_started_twice": len(dup_started), "event_ended_twice": len(dup_ended),
                  "telemetry_end_twice": dup_tel, "bundle_manifest_twice": dup_manifests,
                  "ongoing_beyond_archive": ongoing_extra,
                  "raw_redeliveries_same_msg_id": raw_dups}

    # ---- the clock seen by the box: message `time` against the recorder's wall time
    stepped = [round((parse_time(b.get("time", "")) or b["_arrival"]) - b["_arrival"])
               for b in tel + events + by_topic["status"]]
    clock = {"messages_stamped_off_by_over_30_min": sum(1 for d in stepped if abs(d) > 1800),
             "max_stamp_offset_s": max(stepped, key=abs) if stepped else 0}
    counts = {"received": len(live), "unique": len(unique), "without_msg_id": no_id, "events": len(events),
              "telemetry": len(tel), "status": len(by_topic["status"]), "pending_at_exit": len(pending),
              "telemetry_archived": len(box_tel), "events_archived": sum(box_events.values()),
              "events_received_not_in_archive": not_archived[:10],
              "events_received_not_in_archive_n": len(not_archived),
              "telemetry_gaps": len(gaps), "telemetry_gap_list": gaps[:40]}
    return {"violations": violations, "bundles": bundles, "lost": lost, "duplicates": duplicates,
            "clock": clock, "messages": counts}


def agent_log_summary(path: Path) -> dict[str, Any]:
    """Tracebacks, errors and criticals in the agent's stderr, grouped by message."""
    if not path.exists():
        return {"tracebacks": 0, "errors": 0, "criticals": 0, "top": []}
    text = path.read_text(errors="replace").splitlines()
    stamp = re.compile(r"^\S+ \S+ (\w+)\s+(\S+): (.*)$")
    groups: Counter[str] = Counter()
    errors = criticals = 0
    for line in text:
        m = stamp.match(line)
        if m and m.group(1) in ("ERROR", "CRITICAL"):
            errors += m.group(1) == "ERROR"
            criticals += m.group(1) == "CRITICAL"
            msg = re.sub(r"[0-9a-f]{8,}|\d{8}-\d{8}T\d{6}Z-[0-9a-f]{4}|\d+(\.\d+)?", "#", m.group(3))
            groups[f"{m.group(1)} {m.group(2)}: {msg[:140]}"] += 1
    exc_lines = Counter(line.strip()[:160] for i, line in enumerate(text)
                        if i > 0 and text[i - 1].startswith("  ") and re.match(r"^\w[\w.]*(Error|Exception)\b", line))
    return {"tracebacks": sum(1 for line in text if line.startswith("Traceback")), "errors": errors,
            "criticals": criticals, "top": [f"{n}x {g}" for g, n in groups.most_common(15)],
            "exceptions": [f"{n}x {g}" for g, n in exc_lines.most_common(10)]}


def print_table(figures: dict[str, Any]) -> None:
    v, b, lost, d = figures["violations"], figures["bundles"], figures["lost"], figures["duplicates"]
    rows = [
        ("run wall time", f"{figures['wall_s']:.0f} s ({figures['minutes']} min of faults, seed {figures['seed']})"),
        ("faults", ", ".join(f"{k} {n}" for k, n in figures["faults"].items())),
        ("agent starts / crashes", f"{figures['agent_starts']} / {figures['agent_crashes']}"),
        ("violations started / ended / open", f"{v['started']} / {v['ended']} / {v['open_at_bureau']} "
                                             f"(box holds {v['open_in_final_status']} open)"),
        ("open at bureau, not held by box", f"{len(v['open_at_bureau_not_held_by_box'])} (must be 0)"),
        ("events without a started", f"{len(v['keys_without_started'])}"),
        ("bundles on disk / received / verified", f"{b['on_disk']} / {b['received_complete']} / {b['verified']}"),
        ("bundles pending / owed at exit", f"{b['pending_at_exit']} / {b['owed_at_exit']}"),
        ("messages lost", f"{lost['count']} (must be 0)"),
        ("duplicates after de-dup", f"{d['count']} (raw re-deliveries {d['raw_redeliveries_same_msg_id']})"),
        ("open at bureau by kind", ", ".join(f"{k} {n}" for k, n in v["open_by_kind"].items()) or "-"),
        ("RSS slope, longest segment", f"{figures['rss']['slope_mb_per_h']} MB/h over "
                                       f"{figures['rss']['longest_segment_s']} s; peak {figures['rss']['peak_mb']} MB"),
        ("RSS median by age", ", ".join(f"{k} {v} MB" for k, v in figures["rss"]["median_mb_by_age"].items())),
        ("clock-stepped messages seen", f"{figures['clock']['messages_stamped_off_by_over_30_min']}"),
        ("agent stderr", f"{figures['agent_log']['tracebacks']} tracebacks, {figures['agent_log']['errors']} errors, "
                         f"{figures['agent_log']['criticals']} criticals"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n" + "-" * (width + 60))
    for k, val in rows:
        print(f"{k:<{width}}  {val}")
    print("-" * (width + 60))
    for k in ("open_at_bureau_not_held_by_box", "keys_without_started", "started_twice", "ended_twice",
              "final_status_vs_store_differ", "open_same_kind_and_source"):
        if v[k]:
            print(f"violations.{k}: {v[k] if isinstance(v[k], dict) else v[k][:5]}")
    for k in ("never_sent", "incomplete_and_not_pending", "verify_failed", "expected_but_missing",
              "chain_problems_on_disk", "bundles_failing_on_disk"):
        if b[k]:
            print(f"bundles.{k}: {b[k][:5]}")
    for k in ("events", "telemetry"):
        if lost[k]:
            print(f"lost.{k}: {lost[k][:5]}")
    for line in figures["agent_log"]["top"][:10]:
        print(f"agent log: {line}")


# --------------------------------------------------------------------------- the run

class Soak:
    """Owns every child process, the mount and the work dir; `close()` undoes all of them."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.work = Path(tempfile.mkdtemp(prefix="edge-soak-"))
        self.src = ROOT
        self.source: dict[str, Any] = {"snapshot": None}
        if not args.live_tree:
            self.src = self.work / "src"
            self.source = snapshot_sources(self.src)
            sys.path.insert(0, str(self.src))  # the bench's own imports (verify, scenes) from it too
        self.data = self.work / "data"
        self.disk = DataDisk(self.data, args.disk_mb)
        self.clock = WallClock(self.work)
        self.broker: Any = None
        self.buses: dict[str, Bus] = {}
        self.camera: Camera | None = None
        self.agent: Agent | None = None
        self.bureau: Bureau | None = None
        self.faults: list[dict[str, Any]] = []
        self.crashes: list[str] = []
        self.unavailable: dict[str, str] = {}
        self._restores: list[tuple[float, str, Callable[[], None]]] = []
        self._clock_dir = [1]

    def setup(self) -> None:
        from broker import Broker

        from edge_agent.demo.scenes import rtsp_available
        from edge_agent.loopback import free_port

        for tool in ("mosquitto", "socat"):
            if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
                raise SystemExit(f"bench/soak.py needs {tool} (bash .ci/system-packages.sh)")
        why = rtsp_available()
        if why:
            raise SystemExit(f"bench/soak.py needs GStreamer's RTSP server: {why}")
        why = self.disk.mount()
        if why:
            self.unavailable["disk_full"] = why
        self.clock.prepare(self.work)
        if not self.clock.available:
            self.unavailable["clock_step"] = self.clock.why
        log(self.t0, f"work dir {self.work}; data dir on "
                     f"{'a ' + str(self.args.disk_mb) + ' MB tmpfs' if self.disk.mounted else 'the host disk'}; "
                     f"clock steps: {'libfaketime' if self.clock.available else 'unavailable: ' + self.clock.why}")
        video = smoke_video()
        (self.work / "broker").mkdir()
        self.broker = Broker(self.work / "broker").start()
        self.bureau = Bureau(self.broker.port)
        self.bureau.start()
        self.buses = {"noise": Bus(self.work / "bus-noise", "renke_rs_zs_n01", "night_piling", self.args.seed,
                                   self.src),
                      "dust": Bus(self.work / "bus-dust", "renke_rs_pm_n01", "quiet_day", self.args.seed + 1,
                                  self.src)}
        self._write_meter_values()
        for bus in self.buses.values():
            bus.plug()
        self.camera = Camera(video, free_port(), self.work)
        self.camera.start()
        config = write_config(self.work, self.data, self.broker.port, self.buses, self.camera)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GPIOZERO_PIN_FACTORY": "mock",
               # the allocator settings of systemd/edge-agent.service, so RSS is a box's
               "MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "1048576", **self.clock.env}
        self.agent = Agent(config, self.work / "agent.log", env, self.src)
        self.agent.start()
        log(self.t0, f"agent pid {self.agent.proc.pid if self.agent.proc else '?'} started; broker "
                     f"127.0.0.1:{self.broker.port}, camera {self.camera.url}")

    def _write_meter_values(self) -> None:
        noise, dust = meter_values(time.monotonic() - self.t0, self.rng)
        self.buses["noise"].set_values(noise)
        self.buses["dust"].set_values(dust)

    def plan(self) -> list[str]:
        """One fault per interval: every available kind once (shuffled), then drawn at random."""
        kinds = [k for k in self.args.kinds if k not in self.unavailable]
        if not kinds:
            raise SystemExit(f"no fault kind can run here: {self.unavailable}")
        n = max(1, int(self.args.minutes * 60 // self.args.interval))
        first = kinds[:]
        self.rng.shuffle(first)
        return first + [self.rng.choice(kinds) for _ in range(n - len(first))]

    def inject(self, kind: str) -> str:
        """Start one fault; anything to undo later goes on the restore list."""
        now = time.monotonic()
        assert self.agent is not None and self.camera is not None
        if kind == "broker_restart":
            self.broker.stop()
            self._restores.append((now + 5, "broker started", self.broker.start))
            return "Mosquitto stopped (SIGTERM) for 5 s"
        if kind == "meter_unplugged":
            name = self.rng.choice(sorted(self.buses))
            self.buses[name].unplug()
            self._restores.append((now + 20, f"{name} meter plugged in again", self.buses[name].plug))
            return f"{name} bus: socat and simulator killed for 20 s"
        if kind == "camera_killed":
            self.camera.kill()
            self._restores.append((now + 15, "camera server started", self.camera.start))
            return "RTSP server SIGKILLed for 15 s"
        if kind == "agent_killed":
            self.agent.stop(signal.SIGKILL, "SIGKILL (fault)")
            time.sleep(1.0)
            self.agent.start()
            return f"agent SIGKILLed and started again (pid {self.agent.proc.pid if self.agent.proc else '?'})"
        if kind == "disk_full":
            written = self.disk.fill()
            self._restores.append((now + 20, "data disk freed", self.disk.free))
            free = shutil.disk_usage(self.data).free
            return f"data disk filled ({written / 1e6:.1f} MB filler, {free} B free) for 20 s"
        if kind == "clock_step":
            return self.clock.step(self.rng, self._clock_dir)
        raise ValueError(kind)

    def tick_until(self, deadline: float) -> None:
        """Until `deadline`: undo due faults, sample RSS, restart a crashed agent, drive the meters."""
        assert self.agent is not None
        next_rss = time.monotonic()
        next_values = time.monotonic()
        while True:
            now = time.monotonic()
            for item in sorted(self._restores, key=lambda r: r[0]):
                if item[0] <= now:
                    self._restores.remove(item)
                    item[2]()
                    log(self.t0, f"  restored: {item[1]}")
            rc = self.agent.exited()
            if rc is not None:
                self.crashes.append(f"t={now - self.t0:.0f} s rc={rc}")
                log(self.t0, f"  !! the agent exited by itself (rc {rc}); starting it again")
                self.agent.start()
            if now >= next_rss:
                self.agent.sample()
                next_rss = now + RSS_EVERY_S
            if now >= next_values:
                self._write_meter_values()
                next_values = now + 5
            if now >= deadline:
                return
            time.sleep(min(0.5, max(0.0, deadline - now)))

    def run(self) -> dict[str, Any]:
        assert self.agent is not None and self.bureau is not None
        schedule = self.plan()
        log(self.t0, f"{len(schedule)} faults planned, one every {self.args.interval:.0f} s: {', '.join(schedule)}")
        device_key = self._device_key()
        t_faults = time.monotonic()
        for i, kind in enumerate(schedule):
            self.tick_until(t_faults + (i + 1) * self.args.interval)
            what = self.inject(kind)
            self.faults.append({"t_s": round(time.monotonic() - self.t0, 1), "kind": kind, "what": what,
                                "at": datetime.now(ZoneInfo(TZ)).isoformat(timespec="seconds")})
            log(self.t0, f"fault {i + 1}/{len(schedule)}: {kind}: {what}")
        self.tick_until(time.monotonic() + 1)
        while self._restores:
            self.tick_until(min(r[0] for r in self._restores))
        if self.clock.offset_s:  # a last step is held like the others, then undone
            self.tick_until(t_faults + (len(schedule) + 1) * self.args.interval)
            log(self.t0, f"end of faults: {self.clock.step(self.rng, self._clock_dir)}")
        log(self.t0, "faults over; waiting for the backlog to drain")
        drained = self._drain()
        rc = self.agent.stop(signal.SIGTERM, "SIGTERM (end of run)")
        log(self.t0, f"agent stopped with SIGTERM: rc {rc}")
        bureau = self.bureau
        wait_until(lambda: any(m.topic == "status" and b'"offline"' in m.payload and not m.retain
                               for m in bureau.messages[-50:]), 10)
        time.sleep(3)
        bureau.stop()
        figures = analyse(bureau, self.data, device_key, self.work)
        if self.args.keep:
            self._save_records(bureau)
        return self._figures(figures, drained, rc)

    def _save_records(self, bureau: Bureau) -> None:
        """What the bureau got (JSON payloads in full, files by hash) and the RSS samples, for later digging."""
        with open(self.work / "bureau.jsonl", "w") as out:
            for m in bureau.messages:
                body: Any = json_or_none(m.payload)
                if body is None:
                    body = {"sha256": hashlib.sha256(m.payload).hexdigest(), "size": len(m.payload)}
                out.write(json.dumps({"arrival": m.arrival, "topic": m.topic, "retain": m.retain,
                                      "msg_id": m.msg_id, "body": body}, ensure_ascii=False) + "\n")
        assert self.agent is not None
        with open(self.work / "rss.csv", "w") as out:
            out.write("segment,pid,age_s,rss_mb,ended_by\n")
            for i, seg in enumerate(self.agent.segments):
                for t, r in seg.samples:
                    out.write(f"{i},{seg.pid},{t - seg.start:.1f},{r:.1f},{seg.ended_by}\n")

    def _device_key(self) -> Any:
        from edge_agent.security.keys import load_private_key

        path = self.data / "keys" / "device.key"
        if not wait_until(path.exists, 60, 0.2):
            raise RuntimeError(f"the agent made no device key at {path}; see {self.work / 'agent.log'}")
        time.sleep(0.5)
        return load_private_key(path).public_key()

    def _drain(self) -> dict[str, Any]:
        start = time.monotonic()
        state = queued(self.data)
        while time.monotonic() - start < self.args.drain_timeout:
            self.tick_until(time.monotonic() + 2)
            state = queued(self.data)
            if state[1] == 0 and state[2] == 0 and state[0] <= 3:
                break
        waited = round(time.monotonic() - start, 1)
        log(self.t0, f"drain: {waited} s; outbox {state[0]} (events+evidence {state[1]}), owed bundles {state[2]}")
        return {"waited_s": waited, "outbox_left": state[0], "urgent_left": state[1], "owed_left": state[2]}

    def _figures(self, figures: dict[str, Any], drained: dict[str, Any], rc: int | None) -> dict[str, Any]:
        assert self.agent is not None
        segs = [s for s in self.agent.segments if s.samples]
        longest = max(segs, key=lambda s: (s.end or time.monotonic()) - s.start) if segs else None
        all_rss = [r for s in segs for _, r in s.samples]
        by_age: dict[str, float] = {}
        for lo, hi in ((1, 2), (2, 4), (4, 8), (8, 16), (16, 60)):  # minutes since each (re)start
            band = sorted(r for s in segs for t, r in s.samples if lo * 60 <= t - s.start < hi * 60)
            if band:
                by_age[f"{lo}-{hi} min"] = round(band[len(band) // 2], 1)
        kinds = Counter(f["kind"] for f in self.faults)
        return {
            "bench": "soak", "minutes": self.args.minutes, "seed": self.args.seed, "source": self.source,
            "wall_s": round(time.monotonic() - self.t0, 1),
            "faults": {k: kinds.get(k, 0) for k in KINDS}, "faults_unavailable": self.unavailable,
            "agent_starts": self.agent.starts, "agent_crashes": len(self.crashes), "crashes": self.crashes,
            "agent_exit_rc": rc, "drain": drained, **figures,
            "rss": {"slope_mb_per_h": round(longest.slope_mb_per_h() or 0.0, 1) if longest else None,
                    "longest_segment_s": round((longest.end or time.monotonic()) - longest.start) if longest else 0,
                    "segments": len(segs), "peak_mb": round(max(s.hwm_mb for s in segs), 1) if segs else None,
                    "median_mb": round(sorted(all_rss)[len(all_rss) // 2], 1) if all_rss else None,
                    "slopes_mb_per_h": [round(s.slope_mb_per_h() or 0.0, 1) for s in segs
                                        if (s.end or time.monotonic()) - s.start >= 2 * RSS_WARMUP_S],
                    "median_mb_by_age": by_age},
            "agent_log": agent_log_summary(self.work / "agent.log"),
            "fault_log": self.faults,
        }

    def close(self) -> None:
        """Stop everything we started, in order; unmount; remove the work dir unless --keep."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        if self.agent is not None:
            self.agent.stop(signal.SIGTERM, "closing", 15)
        if self.bureau is not None:
            with contextlib.suppress(Exception):
                self.bureau.stop()
        if self.camera is not None:
            self.camera.kill()
        for bus in self.buses.values():
            bus.unplug()
        if self.broker is not None:
            self.broker.stop()
        self.disk.free()
        if self.args.keep and self.disk.mounted and self.data.exists():
            shutil.copytree(self.data, self.work / "data-copy", dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("soak-filler.bin"))
        self.disk.unmount()
        if self.args.keep:
            print(f"work dir kept: {self.work} (agent stderr in agent.log)", flush=True)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30, help="minutes of faults (default 30)")
    parser.add_argument("--interval", type=float, default=30, help="seconds between faults (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", type=lambda text: [k.strip() for k in text.split(",") if k.strip()],
                        default=list(KINDS), help=f"fault kinds to draw from (default all: {','.join(KINDS)})")
    parser.add_argument("--disk-mb", type=int, default=128, help="size of the data tmpfs (default 128)")
    parser.add_argument("--drain-timeout", type=float, default=240, help="longest wait for the backlog (s)")
    parser.add_argument("--live-tree", action="store_true",
                        help="run the working tree as it is (default: a copy taken at the start)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs, a copy of the data dir)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON line to this file")
    parser.add_argument("--agent-log", type=Path, help="copy the agent's stderr log here at the end")
    args = parser.parse_args()
    if not args.kinds or set(args.kinds) - set(KINDS):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # set even where the shell ignores them
        signal.signal(sig, on_signal)
    soak = Soak(args)
    figures: dict[str, Any] | None = None
    try:
        soak.setup()
        figures = soak.run()
        line = json.dumps(figures, ensure_ascii=False)
        for path in [args.json_out] + ([soak.work / "figures.json"] if args.keep else []):
            if path is not None:
                path.write_text(line + "\n")
    finally:
        if args.agent_log is not None and (soak.work / "agent.log").exists():
            shutil.copy(soak.work / "agent.log", args.agent_log)
        soak.close()
    try:
        print_table(figures)
    except Exception as exc:  # the JSON line below still carries every figure
        print(f"(table not printed: {exc!r})")
    print(line)


if __name__ == "__main__":
    main()
