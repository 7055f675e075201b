"""Config validation: every problem comes back as FILE:LINE:COL: dotted.path: reason, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
site:
  id: sz-001
  timezone: Asia/Shanghai
device:
  id: box-1
mqtt:
  host: 127.0.0.1
  port: 1883
storage:
  data_dir: /tmp/edge-test
"""


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)


def test_good_config_exits_0_with_summary(tmp_path: Path):
    result = check(tmp_path, GOOD)
    assert result.returncode == 0, result.stderr
    assert "sz-001" in result.stdout and "127.0.0.1:1883" in result.stdout


def test_example_config_is_valid():
    result = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(ROOT / "config/example.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_wrong_type_names_line_and_path(tmp_path: Path):
    result = check(tmp_path, GOOD.replace("port: 1883", "port: eighteen"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'config.yaml'}:8:3: mqtt.port: Input should be a valid integer, "
        "unable to parse string as an integer (got 'eighteen')"]


def test_unknown_key_names_line_and_suggests(tmp_path: Path):
    result = check(tmp_path, GOOD.replace("  host: 127.0.0.1", "  hots: 127.0.0.1"))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith(f"{tmp_path / 'config.yaml'}:7:3: mqtt.hots: unknown key 'hots'")
    assert "did you mean 'host'?" in line


def test_missing_required_field_points_at_its_section(tmp_path: Path):
    result = check(tmp_path, GOOD.replace("device:\n  id: box-1\n", "device:\n  {}\n"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"{tmp_path / 'config.yaml'}:4:1: device.id: required field is missing"


def test_invalid_yaml_syntax_gives_line(tmp_path: Path):
    result = check(tmp_path, GOOD.replace("  port: 1883", "  port: [1883"))
    assert result.returncode == 2
    line = result.stderr.strip()
    assert line.startswith(f"{tmp_path / 'config.yaml'}:")
    assert ": (yaml): invalid YAML:" in line
    assert int(line.split(":")[1]) >= 8  # at or after the unclosed bracket, never line 0


def test_several_problems_reported_together_in_line_order(tmp_path: Path):
    text = GOOD.replace("  timezone: Asia/Shanghai", "  timezone: Mars/Olympus").replace(
        "  port: 1883", "  port: 99999")
    with pytest.raises(ConfigError) as info:
        (tmp_path / "c.yaml").write_text(text)
        load_config(tmp_path / "c.yaml")
    got = [(p.line, p.path) for p in info.value.problems]
    assert got == [(3, "site.timezone"), (8, "mqtt.port")]


def test_duplicate_key_is_an_error(tmp_path: Path):
    result = check(tmp_path, GOOD + "mqtt:\n  port: 1884\n")
    assert result.returncode == 2
    assert ":11:1: mqtt: duplicate key" in result.stderr


def test_password_must_not_be_inline(tmp_path: Path):
    result = check(tmp_path, GOOD.replace("  port: 1883", "  port: 1883\n  username: u\n  password: hunter2"))
    assert result.returncode == 2
    assert "mqtt.password" in result.stderr


def test_missing_file_is_a_clear_error(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "edge_agent", "check-config", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr and "cannot read" in result.stderr


def test_run_with_broken_config_exits_2(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD.replace("port: 1883", "port: x"))
    result = subprocess.run([sys.executable, "-m", "edge_agent", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "mqtt.port" in result.stderr


def test_schema_is_json_and_forbids_unknown_keys():
    result = subprocess.run([sys.executable, "-m", "edge_agent", "schema"], capture_output=True, text=True)
    schema = json.loads(result.stdout)
    assert schema["additionalProperties"] is False
    assert "site" in schema["required"]
    mqtt = schema["$defs"]["MqttConfig"]
    assert mqtt["additionalProperties"] is False
    assert all("description" in spec for spec in mqtt["properties"].values())
