"""The field tools against the simulator over a socat pty pair: scan, read, set-address,
set-baud, simulate (as a subprocess, as technicians and the demo run it), and the clear
one-line errors for a busy, missing or unknown port/profile."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from serial_helpers import SocatPair, socat_pair, wait_for

from drivers.modbus import load_profile
from firmware_tools.cli import main
from firmware_tools.simulator import ConstantSource, SimMeter, Simulator

NOISE = load_profile("renke_rs_zs_n01")
PM = load_profile("renke_rs_pm_n01")



@pytest.fixture
def pty(tmp_path: Path) -> Iterator[SocatPair]:
    """A socat pty pair: `pty.meter` for the simulator, `pty.agent` for the code under test."""
    with socat_pair(tmp_path) as pair:
        yield pair

def edge_fw_cmd() -> list[str]:
    script = Path(sys.executable).parent / "edge-fw"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from firmware_tools.cli import main; sys.exit(main())"]


def test_scan_finds_every_meter_on_the_bus(pty: SocatPair, capsys: pytest.CaptureFixture[str]) -> None:
    sim = Simulator(pty.meter, [SimMeter(NOISE, 1, ConstantSource(60.0)), SimMeter(PM, 7)])
    with sim:
        rc = main(["scan", pty.agent, "--addresses", "1-10", "--baud", "4800", "--timeout", "0.05"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "address 1 (0x01) at 4800 baud" in out
    assert "address 7 (0x07) at 4800 baud" in out  # PM sensor: register 0 is outside its map ...
    assert "illegal data address" in out  # ... and its exception reply still proves it is there
    assert out.count("address ") == 2
    assert "[" in err and "10/10" in err  # the progress bar


def test_scan_of_a_silent_bus_says_so(pty: SocatPair, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["scan", pty.agent, "--addresses", "1-3", "--baud", "9600", "--timeout", "0.02"])
    assert rc == 1
    assert "no meter answered" in capsys.readouterr().err


def test_read_shows_live_values(pty: SocatPair, capsys: pytest.CaptureFixture[str]) -> None:
    with Simulator(pty.meter, [SimMeter(PM, 3, ConstantSource({"pm10": 123.0, "pm2_5": 45.0}))]):
        rc = main(["read", pty.agent, "--profile", "renke_rs_pm_n01", "--address", "3",
                   "--count", "2", "--interval", "0.05", "--json"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    assert all(x["values"] == {"pm2_5": 45.0, "pm10": 123.0} and x["problems"] == [] for x in lines)


def test_read_reports_a_dead_meter_without_crashing(pty: SocatPair, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["read", pty.agent, "--profile", "renke_rs_zs_n01", "--count", "1", "--timeout", "0.05"])
    assert rc == 0
    assert "timeout: no reply" in capsys.readouterr().out


def test_set_address_and_set_baud(pty: SocatPair, capsys: pytest.CaptureFixture[str]) -> None:
    meter = SimMeter(NOISE, 1, ConstantSource(60.0))
    with Simulator(pty.meter, [meter]):
        assert main(["set-address", pty.agent, "--profile", "renke_rs_zs_n01", "--new", "12"]) == 0
        assert meter.address == 12
        assert "now answers at address 12" in capsys.readouterr().out
        assert main(["set-baud", pty.agent, "--profile", "renke_rs_zs_n01", "--address", "12",
                     "--new", "9600"]) == 0
        assert meter.baud_code == 2  # the profile's code for 9600
        assert "9600" in capsys.readouterr().out


def test_setting_registers_missing_from_the_profile(pty: SocatPair, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["set-address", pty.agent, "--profile", "generic_dust_monitor", "--new", "3"])
    assert rc == 2
    assert "defines no address_register" in capsys.readouterr().err
    rc = main(["set-baud", pty.agent, "--profile", "renke_rs_zs_n01", "--new", "19200"])
    assert rc == 2
    assert "no code for 19200" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["scan", "read", "set-address", "set-baud"])
def test_busy_port_gives_a_clear_message(pty: SocatPair, command: str) -> None:
    extra = {"scan": ["--addresses", "1"], "read": ["--profile", "renke_rs_zs_n01", "--count", "1"],
             "set-address": ["--profile", "renke_rs_zs_n01", "--new", "2"],
             "set-baud": ["--profile", "renke_rs_zs_n01", "--new", "9600"]}[command]
    holder = serial.Serial(pty.agent, exclusive=True)  # e.g. the agent running
    try:
        proc = subprocess.run([*edge_fw_cmd(), command, pty.agent, *extra],
                              capture_output=True, text=True, timeout=30)
    finally:
        holder.close()
    assert proc.returncode == 2
    assert "port is busy" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_missing_port_and_unknown_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "ttyUSB9")
    assert main(["read", missing, "--profile", "renke_rs_zs_n01"]) == 2
    assert "no such port" in capsys.readouterr().err
    assert main(["scan", missing, "--addresses", "1"]) == 2
    assert "no such port" in capsys.readouterr().err
    assert main(["read", missing, "--profile", "no_such_profile"]) == 2
    assert "unknown meter profile" in capsys.readouterr().err


def test_simulate_subprocess_with_control_file(pty: SocatPair, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    control = tmp_path / "control.json"
    control.write_text(json.dumps({"values": {"noise_la": 71.4}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_tools.simulator", "--profile", "renke_rs_zs_n01",
         "--port", pty.meter, "--scenario", "quiet_day", "--control", str(control)],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        assert "serving renke_rs_zs_n01@1" in proc.stderr.readline()
        args = ["read", pty.agent, "--profile", "renke_rs_zs_n01", "--count", "1", "--json"]
        assert main(args) == 0
        assert json.loads(capsys.readouterr().out)["values"] == {"noise_la": 71.4}
        control.write_text(json.dumps({"values": {"noise_la": 88.8}}))
        os.utime(control, (time.time() + 5, time.time() + 5))  # a new mtime even on coarse clocks

        def shows_new_value() -> bool:
            main(args)
            return json.loads(capsys.readouterr().out)["values"] == {"noise_la": 88.8}

        assert wait_for(shows_new_value, 5.0, step=0.05)
        control.write_text(json.dumps({"fault": "exception"}))
        os.utime(control, (time.time() + 10, time.time() + 10))

        def shows_fault() -> bool:
            main(args)
            return any("exception" in p for p in json.loads(capsys.readouterr().out)["problems"])

        assert wait_for(shows_fault, 5.0, step=0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "requests" in err


def test_edge_fw_simulate_scenario_and_errors(pty: SocatPair, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("edge-fw") is None and not (Path(sys.executable).parent / "edge-fw").exists():
        pytest.skip("edge-fw entry point not installed")
    proc = subprocess.Popen([*edge_fw_cmd(), "simulate", "--profile", "renke_rs_pm_n01", "--port", pty.meter,
                             "--scenario", "dust_episode", "--duration", "20"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        proc.stderr.readline()
        assert main(["read", pty.agent, "--profile", "renke_rs_pm_n01", "--count", "1", "--json"]) == 0
        values = json.loads(capsys.readouterr().out)["values"]
        assert 0 < values["pm10"] < 1000 and 0 < values["pm2_5"] < values["pm10"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    bad = subprocess.run([*edge_fw_cmd(), "simulate", "--profile", "renke_rs_zs_n01", "--port", "/nonexistent/tty"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "no such port" in bad.stderr and "Traceback" not in bad.stderr


def test_both_programs_share_one_command_line_frame() -> None:
    """`--version` on both; output into a closed pipe (`| head`) ends quietly, not with a traceback."""
    from edge_agent import __version__

    for program in ("edge_agent", "firmware_tools.cli"):
        args = [sys.executable, "-m", program] if program == "edge_agent" else \
            [sys.executable, "-c", "from firmware_tools.cli import main; raise SystemExit(main())"]
        done = subprocess.run([*args, "--version"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and done.stdout.split()[-1] == __version__, done.stdout + done.stderr
    # The JSON Schema is long: reading one line and closing the pipe must not print a BrokenPipeError.
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "schema"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.read(10)
    proc.stdout.close()
    assert proc.wait(30) == 0
    assert b"BrokenPipeError" not in (proc.stderr.read() if proc.stderr else b"")
