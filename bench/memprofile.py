"""Where the agent's memory goes: runs `edge-agent` in this process with a sampler beside it.

bench/box.py starts the agent through this with `--profile DIR`. Every `--every` seconds it
appends one JSON line to DIR/samples.jsonl: RSS split into anonymous and file-backed pages
(smaps_rollup), glibc's heap figures (mallinfo2: in use, free but held, mmapped) and, with
`--tracemalloc`, the Python-level current and peak (the peak is reset at each sample, so a
line says what the last interval needed). Each evidence bundle built gets a line of its own
(RSS before and after, the Python peak inside it). At the end (SIGTERM) and whenever VmRSS
reaches a new high, DIR/smaps-{end,peak}.json holds RSS per mapping, grouped: each shared
library, the Python heap ([heap] and malloc arenas), large anonymous mmaps, thread stacks.

tracemalloc costs memory of its own (~+30 % of the Python heap) and CPU: use it in a
separate run from the one whose RSS figures you report.

Run: python bench/memprofile.py DIR [--every 0.5] [--tracemalloc 0|N] -- run --config FILE
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import sys
import threading
import time
import tracemalloc
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")
ARENA = 64 * 1024 * 1024  # glibc's HEAP_MAX_SIZE on 64-bit: a thread arena's reservation


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_mallinfo2 = getattr(_libc, "mallinfo2", None)
if _mallinfo2 is not None:
    _mallinfo2.restype = _MallInfo2


def mallinfo() -> dict[str, float]:
    """glibc heap in MB: in use, free but held by malloc, in mmapped chunks."""
    if _mallinfo2 is None:
        return {}
    m = _mallinfo2()
    mb = 1 / 1048576
    return {"malloc_used_mb": round(m.uordblks * mb, 1), "malloc_free_mb": round(m.fordblks * mb, 1),
            "malloc_mmap_mb": round(m.hblkhd * mb, 1)}


def rollup() -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in ("Rss", "Anonymous", "Shared_Clean", "Private_Clean", "Private_Dirty", "Shared_Dirty"):
            out[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": round(out.get("Rss", 0), 1), "anon_mb": round(out.get("Anonymous", 0), 1),
            "file_mb": round(out.get("Rss", 0) - out.get("Anonymous", 0), 1)}


def smaps_by_mapping() -> dict[str, dict[str, float]]:
    """RSS and anonymous MB per named mapping; unnamed anonymous ones grouped by what they look like."""
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"rss_mb": 0.0, "anon_mb": 0.0, "maps": 0})
    name = ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        m = HEADER.match(line)
        if m:
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            path = m.group(4).strip()
            size = hi - lo
            if path:
                name = path
            elif size == ARENA or (lo % ARENA == 0 and size < ARENA and "rw" in m.group(3)):
                name = "[anon: malloc arena (64 MB)]"
            elif size == 1024 * 1024:
                name = "[anon: 1 MB mmaps (obmalloc arenas)]"
            elif size > 1024 * 1024:
                # by size, so that frames are counted: BGR 1080p 6.2 MB, YUV 1080p 3.1 MB, stacks 8 MB
                name = f"[anon: {size / 1048576:.1f} MB mmaps]"
            else:
                name = "[anon: < 1 MB mmaps (obmalloc arenas, small mmaps)]"
            groups[name]["maps"] += 1
            continue
        key, _, rest = line.partition(":")
        if key == "Rss":
            groups[name]["rss_mb"] += int(rest.split()[0]) / 1024
        elif key == "Anonymous":
            groups[name]["anon_mb"] += int(rest.split()[0]) / 1024
    out = {k: {"rss_mb": round(v["rss_mb"], 2), "anon_mb": round(v["anon_mb"], 2), "maps": int(v["maps"])}
           for k, v in groups.items() if v["rss_mb"] >= 0.05}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["rss_mb"]))


def vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler:
    def __init__(self, out: Path, every: float, traced: bool) -> None:
        self.out = out
        self.every = every
        self.traced = traced
        self.trim_every = 0.0
        self.t0 = time.monotonic()
        self.high = 0.0
        self._lock = threading.Lock()
        self._fh = open(out / "samples.jsonl", "a", buffering=1)  # noqa: SIM115

    def line(self, **extra: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 2), **rollup(), **mallinfo(), **extra}
        if self.traced:
            cur, peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            row["py_mb"], row["py_peak_mb"] = round(cur / 1048576, 1), round(peak / 1048576, 1)
        row["threads"] = threading.active_count()
        with self._lock:
            self._fh.write(json.dumps(row) + "\n")
        return row

    def dump(self, tag: str) -> None:
        packages: dict[str, int] = defaultdict(int)
        for name in list(sys.modules):
            packages[name.split(".")[0]] += 1
        data = {"rss_mb": vm("VmRSS"), "hwm_mb": vm("VmHWM"), "groups": smaps_by_mapping(),
                "modules": dict(sorted(packages.items(), key=lambda kv: -kv[1])),
                "first_party": sorted(n for n in sys.modules if n.split(".")[0] in ("edge_agent", "detectors",
                                                                                    "drivers"))}
        if self.traced:
            snap = tracemalloc.take_snapshot().statistics("lineno")[:25]
            data["python_top"] = [f"{s.size / 1048576:.2f} MB {s.traceback}" for s in snap]
        (self.out / f"smaps-{tag}.json").write_text(json.dumps(data, indent=1))

    def run(self) -> None:
        last_trim = time.monotonic()
        while True:
            time.sleep(self.every)
            if self.trim_every and time.monotonic() - last_trim >= self.trim_every:
                last_trim = time.monotonic()
                before = rollup()["rss_mb"]
                t = time.perf_counter()
                _libc.malloc_trim(0)
                self.line(event="trim", ms=round((time.perf_counter() - t) * 1000, 2),
                          rss_delta_mb=round(rollup()["rss_mb"] - before, 1))
            row = self.line()
            if row["rss_mb"] > self.high + 1:
                self.high = row["rss_mb"]
                self.dump("peak")


def watch_spikes(out: Path, above_mb: float, every: float = 0.01, after_s: float = 40.0) -> None:
    """With tracemalloc: whenever Python-traced memory (numpy arrays included) rises `above_mb` over
    its low of the last 10 s, the allocations alive at that moment (top 15 by traceback) go to
    DIR/spikes.jsonl. The transients behind a peak last milliseconds: a 0.2 s sampler sees them, a
    snapshot after the fact does not. Start-up (`after_s`) is skipped; at most one record every 2 s."""
    start = time.monotonic()
    recent: deque[tuple[float, float]] = deque()
    last = 0.0
    with open(out / "spikes.jsonl", "a", buffering=1) as fh:
        while True:
            time.sleep(every)
            now = time.monotonic()
            cur = tracemalloc.get_traced_memory()[0] / 1048576
            recent.append((now, cur))
            while recent[0][0] < now - 10:
                recent.popleft()
            low = min(v for _, v in recent)
            if now - start < after_s or cur - low < above_mb or now - last < 2:
                continue
            last = now
            stats = tracemalloc.take_snapshot().statistics("traceback")[:15]
            fh.write(json.dumps({"t": round(now - start, 2), "traced_mb": round(cur, 1), "low_mb": round(low, 1),
                                 "top": [[round(st.size / 1048576, 2), [f"{f.filename.split('/')[-1]}:{f.lineno}"
                                                                       for f in st.traceback]] for st in stats]})
                     + "\n")


def hook_evidence(sampler: Sampler) -> None:
    """A line per bundle: what building one costs, and what stays after it."""
    from edge_agent.violations import EvidenceWorker

    original = EvidenceWorker._job

    def job(self: EvidenceWorker, violation: Any, tries: int) -> None:
        before = sampler.line(event="bundle_start", kind=violation.kind)
        t = time.monotonic()
        try:
            original(self, violation, tries)
        finally:
            sampler.line(event="bundle_end", kind=violation.kind, ms=round((time.monotonic() - t) * 1000),
                         rss_delta_mb=round(rollup()["rss_mb"] - before["rss_mb"], 1))

    EvidenceWorker._job = job  # type: ignore[method-assign]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--tracemalloc", type=int, default=0, help="frames per traceback; 0: off")
    parser.add_argument("--spike-mb", type=float, default=0.0,
                        help="with --tracemalloc: record what is alive when traced memory jumps this much (MB)")
    parser.add_argument("--trim-every", type=float, default=0.0, help="malloc_trim(0) this often (s); 0: never")
    parser.add_argument("agent_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    sampler = Sampler(args.out, args.every, bool(args.tracemalloc))
    sampler.trim_every = args.trim_every
    sampler.line(event="start")
    threading.Thread(target=sampler.run, name="memprofile", daemon=True).start()
    hook_evidence(sampler)
    if args.tracemalloc and args.spike_mb > 0:
        threading.Thread(target=watch_spikes, args=(args.out, args.spike_mb),
                         name="memprofile-spikes", daemon=True).start()
    from edge_agent.cli import main as agent_main

    agent_args = [a for a in args.agent_args if a != "--"]
    try:
        return int(agent_main(agent_args) or 0)
    finally:
        sampler.dump("end")
        sampler.line(event="end")


if __name__ == "__main__":
    raise SystemExit(main())
