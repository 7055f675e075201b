"""The unit's confinement: `systemd-analyze security` exposure <= 2.0, and the agent still works inside it.

No systemd runs here as PID 1, so the unit itself cannot be started. Its system call filter is the
part most likely to break the agent (a library making a call outside `@system-service`), so the
demo site and `doctor` run under the same filter, installed with libseccomp, and the unit's umask.
"""

from __future__ import annotations

import ctypes.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd/edge-agent.service"

needs_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@needs_analyze
def test_security_exposure_is_at_most_2():
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    assert float(found.group(1)) <= 2.0, result.stdout


@needs_analyze
def test_unit_verifies(tmp_path: Path):
    exe = Path(sys.executable).with_name("edge-agent")
    if not exe.exists():
        pytest.skip("edge-agent console script not installed in this environment")
    unit = tmp_path / "edge-agent.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-agent/venv/bin/edge-agent", str(exe)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_devices_the_agent_drives_stay_reachable():
    """A lower score bought with PrivateDevices=yes would cut the meters, speaker and relays off."""
    s = unit_settings()
    assert s["DevicePolicy"] == ["closed"] and "PrivateDevices" not in s
    allowed = {v.split()[0] for v in s["DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyS", "char-ttyAMA", "char-alsa", "char-gpiochip"} <= allowed
    assert s["UMask"] == ["0077"] and s["ProtectProc"] == ["invisible"]
    assert s["SystemCallErrorNumber"] == ["EPERM"]


# --- the agent under the unit's system call filter ------------------------------------------------

_LAUNCH = r'''
import ctypes, os, subprocess, sys

def expand(group, seen):
    out = set()
    text = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True,
                          check=True).stdout
    for line in text.splitlines()[1:]:
        item = line.strip()
        if item.startswith("@") and item not in seen:
            seen.add(item)
            out |= expand(item, seen)
        elif item and not item.startswith(("#", "@")):
            out.add(item)
    return out

allow, deny = sys.argv[1].split(","), sys.argv[2].split(",")
names = set().union(*(expand(g, set()) for g in allow)) - set().union(*(expand(g, set()) for g in deny if g))
lib = ctypes.CDLL(sys.argv[3])
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x00050000 | 1)  # SCMP_ACT_ERRNO(EPERM), as SystemCallErrorNumber=EPERM
for name in names:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0:
        lib.seccomp_rule_add(ctx, 0x7FFF0000, nr, 0)  # SCMP_ACT_ALLOW
assert lib.seccomp_load(ctx) == 0, "seccomp_load failed"
os.umask(int(sys.argv[4], 8))
os.execv(sys.argv[5], sys.argv[5:])
'''


def confined(args: list[str]) -> list[str]:
    """`args` run under the unit's SystemCallFilter= lines and UMask=, as systemd would apply them."""
    s = unit_settings()
    allow = [v for v in s["SystemCallFilter"] if not v.startswith("~")]
    deny = [g for v in s["SystemCallFilter"] if v.startswith("~") for g in v[1:].split()]
    lib = ctypes.util.find_library("seccomp")
    if lib is None or not shutil.which("systemd-analyze"):
        pytest.skip("libseccomp or systemd-analyze is missing")
    return [sys.executable, "-c", _LAUNCH, ",".join(" ".join(allow).split()), ",".join(deny), lib,
            s["UMask"][0], sys.executable, *args]


@pytest.mark.slow
def test_demo_and_doctor_work_under_the_units_syscall_filter(tmp_path: Path):
    from rtsp_helpers import require_rtsp

    require_rtsp()
    if not shutil.which("socat"):
        pytest.skip("socat is not installed")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "hw"
    hardware = subprocess.Popen(confined(["-m", "edge_agent", "demo", "--hardware-only", "--out", str(out)]),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert hardware.stdout is not None
        for text in hardware.stdout:
            if "simulated hardware only" in text:
                break
        doctor = subprocess.run(confined(["-m", "edge_agent", "doctor", "--config", str(out / "config.yaml"),
                                          "--actuate"]), capture_output=True, text=True, timeout=120,
                                env={**env, "GPIOZERO_PIN_FACTORY": "mock",
                                     "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{out.resolve()}/asound.conf"})
    finally:
        hardware.terminate()
        hardware.wait(20)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr

    site = tmp_path / "site"
    demo = subprocess.run(confined(["-m", "edge_agent", "demo", "--quiet", "--duration", "12", "--out", str(site)]),
                          capture_output=True, text=True, timeout=180, env=env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "running" in demo.stdout and (site / "data/outbox.sqlite").exists()
    key = site / "data/keys/device.key"
    assert (key.stat().st_mode & 0o777) == 0o600 and (site / "data/outbox.sqlite").stat().st_mode & 0o077 == 0
