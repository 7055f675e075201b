"""check-config judges what a config means, not only its types: warnings at the line of the key.

A config that is valid key by key can still not do what it seems to: a rule judging a
quantity no meter gives, an action naming a relay that is not there, a detector without the
zones it needs. Each warning is `FILE:LINE:COL: warning: dotted.path: reason`; `--strict`
makes them fail (exit 2); the demo and the example pass `--strict`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_agent.config import ConfigError, Problem, load_checked

ROOT = Path(__file__).resolve().parents[1]

# A small box with nothing to warn about; every test below changes one thing. Line numbers matter.
BASE = """\
site:
  id: sz-001
  location:
    latitude: 22.5333
    longitude: 113.9304
device:
  id: box-1
storage:
  data_dir: /tmp/edge-test
meters:
  - id: noise-1
    port: /dev/ttyUSB0
    profile: renke_rs_zs_n01
    baud: 4800
  - id: dust-1
    port: /dev/ttyUSB0
    profile: renke_rs_pm_n01
    address: 2
    baud: 4800
rules:
  dust:
    quantity: pm10
    limit: 80
    unit: ug/m3
    hysteresis: 5
bureau:
  trusted_keys:
    - {name: szeb, file: /etc/edge-agent/bureau.pub}
relays:
  - {id: spray, pin: 17}
  - {id: strobe, pin: 27}
cameras:
  - id: cam-exit
    pose: "east hoarding, facing the exit, 12 m up"
    url: rtsp://192.168.1.64/Streaming/Channels/101
    keyframe_interval_s: 1
    zones:
      wash_bay: [[0.3, 0.5], [0.7, 0.5], [0.7, 0.9], [0.3, 0.9]]
    detectors: [washing, uncovered_load]
detectors:
  washing:
    exit_line: [[0.2, 0.4], [0.8, 0.4]]
  uncovered_load:
    exit_line: [[0.2, 0.4], [0.8, 0.4]]
"""


def warnings_of(tmp_path: Path, text: str) -> list[Problem]:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_checked(path).warnings


def where(problems: list[Problem]) -> list[tuple[int, int, str]]:
    return [(p.line, p.col, p.path) for p in problems]


def line_of(text: str, fragment: str, nth: int = 1) -> int:
    """1-based line of the nth line containing `fragment` (the tests name lines by what they hold)."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if fragment in line]
    return hits[nth - 1]


def check(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "edge_agent", "check-config", *args, str(path)],
                          capture_output=True, text=True, cwd=tmp_path)


def test_base_config_has_nothing_to_warn_about(tmp_path: Path):
    assert warnings_of(tmp_path, BASE) == []


# --- rules ----------------------------------------------------------------------------------------


def test_dust_rule_on_a_quantity_no_meter_gives(tmp_path: Path):
    text = BASE.replace("    quantity: pm10\n", "    quantity: tsp\n")
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "quantity: tsp"), 5, "rules.dust.quantity")]
    reason = got[0].reason
    assert "'tsp'" in reason and "pm10, pm2_5" in reason and "rules.dust_early_warning" in reason
    assert got[0].severity == "warning"


def test_noise_rules_without_a_noise_meter_point_at_the_meters(tmp_path: Path):
    text = BASE.replace("""  - id: noise-1
    port: /dev/ttyUSB0
    profile: renke_rs_zs_n01
    baud: 4800
""", "")
    got = warnings_of(tmp_path, text)
    # `rules.noise` is not in the file: the warning is at `meters`, where a noise meter would go.
    assert where(got) == [(line_of(text, "meters:"), 1, "rules.noise.quantity")]
    assert "rules.noise, rules.early_warning, rules.night_lmax, rules.night_work" in got[0].reason


def test_a_disabled_meter_gives_nothing(tmp_path: Path):
    text = BASE.replace("    address: 2\n", "    address: 2\n    enabled: false\n")
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "quantity: pm10"), 5, "rules.dust.quantity")]
    assert "disabled: dust-1" in got[0].reason


def test_a_window_the_measures_do_not_compute(tmp_path: Path):
    text = BASE.replace("    hysteresis: 5\n", "    hysteresis: 5\n    window_s: 1800\n")
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "window_s: 1800"), 5, "rules.dust.window_s")]
    assert "60, 300, 900, 3600" in got[0].reason


def test_an_early_warning_on_a_longer_window_than_its_limit(tmp_path: Path):
    text = BASE.replace("    hysteresis: 5\n", "    hysteresis: 5\n    window_s: 300\n")
    got = warnings_of(tmp_path, text)  # the dust early warning's default window is 900 s
    assert where(got) == [(line_of(text, "window_s: 300"), 5, "rules.dust_early_warning.window_s")]
    assert "comes after the limit" in got[0].reason


# --- actions ------------------------------------------------------------------------------------


def test_action_naming_a_relay_that_does_not_exist(tmp_path: Path):
    text = BASE + "actions:\n  dust_over_limit:\n    clip: dust\n    relays: [spray, pump]\n"
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "relays: [spray, pump]"), 21, "actions.dust_over_limit.relays[1]")]
    assert "'pump'" in got[0].reason and "spray, strobe" in got[0].reason


def test_action_naming_a_clip_that_does_not_exist(tmp_path: Path):
    text = BASE + "actions:\n  bare_soil:\n    clip: soil_warning\n"
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "clip: soil_warning"), 5, "actions.bare_soil.clip")]
    assert "'soil_warning'" in got[0].reason


def test_action_for_a_kind_nothing_raises(tmp_path: Path):
    text = BASE + "actions:\n  dust_over_limt: {clip: dust}\n"
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "dust_over_limt"), 3, "actions.dust_over_limt")]
    assert "did you mean 'dust_over_limit'?" in got[0].reason


def test_default_actions_on_a_box_without_relays_are_quiet(tmp_path: Path):
    """The built-in actions name spray and strobe; a box without them skips them (documented)."""
    text = BASE.replace("relays:\n  - {id: spray, pin: 17}\n  - {id: strobe, pin: 27}\n", "")
    assert warnings_of(tmp_path, text) == []


# --- detectors ------------------------------------------------------------------------------------


def test_detector_without_the_zone_it_needs(tmp_path: Path):
    text = BASE.replace("    zones:\n      wash_bay: [[0.3, 0.5], [0.7, 0.5], [0.7, 0.9], [0.3, 0.9]]\n", "")
    got = warnings_of(tmp_path, text)
    line = line_of(text, "detectors: [washing, uncovered_load]")
    assert where(got) == [(line, 17, "cameras[0].detectors[0]"), (line, 26, "cameras[0].detectors[1]")]
    assert "needs a zone 'wash_bay'" in got[0].reason and "needs a zone 'wash_bay'" in got[1].reason


def test_bare_soil_on_a_camera_with_no_zones(tmp_path: Path):
    base_cams, rest = BASE.split("detectors:\n  washing:")  # a second camera, before `detectors:`
    text = base_cams + """\
  - id: cam-yard
    url: rtsp://192.168.1.65/Streaming/Channels/101
    detectors: [black_smoke, bare_soil]
detectors:
  washing:""" + rest
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "detectors: [black_smoke, bare_soil]"), 30, "cameras[1].detectors[1]")]
    assert "has none" in got[0].reason


def test_washing_without_exit_line_points_at_its_entry(tmp_path: Path):
    text = BASE.replace("  washing:\n    exit_line: [[0.2, 0.4], [0.8, 0.4]]\n", "  washing:\n    min_dwell_s: 10\n")
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "  washing:"), 3, "detectors.washing.exit_line")]
    assert "exit_line" in got[0].reason and "cam-exit" in got[0].reason


def test_uncovered_load_without_exit_line_or_entry_points_at_the_camera(tmp_path: Path):
    text = BASE.replace("  uncovered_load:\n    exit_line: [[0.2, 0.4], [0.8, 0.4]]\n", "")
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "detectors: [washing, uncovered_load]"), 26,
                           "detectors.uncovered_load.exit_line")]


def test_unknown_detector_is_still_an_error(tmp_path: Path):
    text = BASE.replace("detectors: [washing, uncovered_load]", "detectors: [washing, blak_smoke]")
    with pytest.raises(ConfigError) as info:
        warnings_of(tmp_path, text)
    assert [(p.path, p.severity) for p in info.value.problems] == [("cameras[0].detectors[1]", "error")]
    assert "did you mean 'black_smoke'?" in info.value.problems[0].reason
    result = check(tmp_path, text)
    assert result.returncode == 2 and "warning" not in result.stderr


# --- bureau, cameras, site ---------------------------------------------------------------------------


def test_bureau_commands_with_no_trusted_key(tmp_path: Path):
    text = BASE.replace("  trusted_keys:\n    - {name: szeb, file: /etc/edge-agent/bureau.pub}\n",
                        "  commands: [shout, snapshot]\n")
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "commands: [shout, snapshot]"), 3, "bureau.trusted_keys")]
    assert "every bureau command (shout, snapshot) will be refused" in got[0].reason
    # A box that takes no commands says so, and is not warned.
    assert warnings_of(tmp_path, text.replace("[shout, snapshot]", "[]")) == []


def test_analysis_faster_than_the_keyframes(tmp_path: Path):
    text = BASE.replace("    keyframe_interval_s: 1\n", "    keyframe_interval_s: 2\n")
    got = warnings_of(tmp_path, text)
    # analysis_fps is the default (1): the warning shows at the keyframe interval, which is written.
    assert where(got) == [(line_of(text, "keyframe_interval_s: 2"), 5, "cameras[0].analysis_fps")]
    assert "0.5 a second" in got[0].reason and "decod" in got[0].reason and "5x" in got[0].reason
    text = BASE.replace("    keyframe_interval_s: 1\n", "    keyframe_interval_s: 1\n    analysis_fps: 2\n")
    assert where(warnings_of(tmp_path, text)) == [(line_of(text, "analysis_fps: 2"), 5, "cameras[0].analysis_fps")]


def test_two_cameras_on_one_url(tmp_path: Path):
    base_cams, rest = BASE.split("detectors:\n  washing:")
    text = base_cams + """\
  - id: cam-exit-2
    url: RTSP://192.168.1.64:554/Streaming/Channels/101
detectors:
  washing:""" + rest
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "url: RTSP://"), 5, "cameras[1].url")]
    assert "cameras[0].url ('cam-exit')" in got[0].reason


def test_half_a_location(tmp_path: Path):
    text = BASE.replace("    longitude: 113.9304\n", "")
    got = warnings_of(tmp_path, text)
    assert where(got) == [(line_of(text, "location:"), 3, "site.location")]


# --- the command line -----------------------------------------------------------------------------------


def test_check_config_prints_warnings_and_exits_0_or_2_with_strict(tmp_path: Path):
    text = BASE.replace("    quantity: pm10\n", "    quantity: tsp\n")
    line = line_of(text, "quantity: tsp")
    result = check(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0].startswith(
        f"{tmp_path / 'config.yaml'}:{line}:5: warning: rules.dust.quantity: no enabled meter gives 'tsp'")
    assert "OK, 1 warning(s)" in result.stdout

    strict = check(tmp_path, text, "--strict")
    assert strict.returncode == 2
    assert f"config.yaml:{line}:5: warning: rules.dust.quantity" in strict.stderr
    assert "--strict" in strict.stderr and "OK" not in strict.stdout

    clean = check(tmp_path, BASE, "--strict")
    assert clean.returncode == 0 and clean.stderr == "" and "OK" in clean.stdout


def test_example_config_passes_strict_and_shows_every_section():
    import yaml

    from edge_agent.config import AgentConfig

    example = ROOT / "config" / "example.yaml"
    result = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", "--strict", str(example)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data = yaml.safe_load(example.read_text(encoding="utf-8"))
    assert set(data) == set(AgentConfig.model_fields), set(AgentConfig.model_fields) ^ set(data)
    # Every registered detector is shown with its parameters, and run by a camera.
    from detectors.registry import specs

    assert set(data["detectors"]) == set(specs())
    assert {d for cam in data["cameras"] for d in cam["detectors"]} == set(specs())
    assert all(cam.get("pose") for cam in data["cameras"])


def test_the_config_the_demo_writes_passes_strict(tmp_path: Path):
    """`edge-agent demo` writes OUT/config.yaml from config/demo.yaml plus what it starts: the ports of
    its simulated buses (here: paths standing in for the pty pairs), its cameras, a bureau key.
    config/demo.yaml alone is not a whole config (its meters wait for their ports), so this is
    the file to check."""
    from edge_agent.demo.scenes import cameras
    from edge_agent.demo.site import DemoSite, camera_entry, dump_config

    site = DemoSite(tmp_path / "demo")
    site.out_dir.mkdir(parents=True)
    site.buses = {m: SimpleNamespace(agent_port=str(tmp_path / "dev" / m)) for m in ("noise-1", "dust-1")}
    site.camera_entries = [camera_entry(cam, f"rtsp://127.0.0.1:{8554 + i}/cam") for i, cam in enumerate(cameras())]
    path = tmp_path / "demo" / "config.yaml"
    path.write_text(dump_config(site.build_config("127.0.0.1", 1883)), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", "--strict", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_doctor_shows_each_warning(tmp_path: Path):
    from edge_agent.doctor.checks import PASS, WARN, config_results

    text = BASE.replace("    quantity: pm10\n", "    quantity: tsp\n")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    results = config_results(path, load_checked(path).warnings)
    assert [r.status for r in results] == [PASS, WARN]
    assert results[1].detail.startswith(f"line {line_of(text, 'quantity: tsp')}: rules.dust.quantity: ")
