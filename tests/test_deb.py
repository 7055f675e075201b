"""The Debian package: built by packaging/build-deb.sh, installed, upgraded and purged in a throw-away root.

dpkg runs with `--root` and `--force-script-chrootless`: the maintainer scripts run on this
machine with DPKG_ROOT set and act on the throw-away root only (users and groups through
`useradd --prefix`, the tmpfiles rule through `systemd-tmpfiles --root`, the unit enabled
through `systemctl --root`). The package is built with `--no-deps` (no network here): the
packaging is what is tested, not the agent's dependencies; systemd does not run here, so the
service is not started (its unit is checked with `systemd-analyze verify`).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not (shutil.which("dpkg-deb") and shutil.which("dpkg") and shutil.which("useradd") and os.geteuid() == 0),
    reason="needs dpkg, dpkg-deb, useradd and root (a throw-away root's files are owned by its users)")


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run(["bash", str(ROOT / "packaging/build-deb.sh"), "--no-deps", "--out", str(out),
                            "--version", "0.1.0"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    first = Path(built.stdout.strip().splitlines()[-1])
    # The upgrade: the same tree repacked as 0.1.1 (faster than a second venv, same dpkg mechanics).
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-R", str(first), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    control.write_text(control.read_text().replace("Version: 0.1.0", "Version: 0.1.1"))
    (tree / "opt/edge-agent/UPGRADED").write_text("0.1.1\n")
    second = out / "edge-agent_0.1.1.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(second)], check=True,
                   capture_output=True)
    yield first, second


def fresh_root(path: Path) -> Path:
    """A root with an empty dpkg database and the base system's users and groups."""
    (path / "var/lib/dpkg/info").mkdir(parents=True)
    (path / "var/lib/dpkg/updates").mkdir()
    (path / "var/lib/dpkg/status").touch()
    etc = path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\naudio:x:29:\nvideo:x:44:\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\naudio:*::\nvideo:*::\n")
    if Path("/etc/login.defs").exists():
        shutil.copy("/etc/login.defs", etc / "login.defs")
    return path


def dpkg(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
                             "--force-confold", "--log=/dev/null", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def entry(root: Path, table: str, name: str) -> list[str] | None:
    for line in (root / "etc" / table).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def test_install_upgrade_purge_in_a_throwaway_root(debs: tuple[Path, Path], tmp_path: Path):
    first, second = debs
    root = fresh_root(tmp_path / "root")
    dpkg(root, "-i", str(first))

    user = entry(root, "passwd", "edge-agent")
    assert user is not None and user[5] == "/var/lib/edge-agent" and user[6] == "/usr/sbin/nologin"
    uid, gid = int(user[2]), int(user[3])
    for group in ("dialout", "audio", "gpio", "video"):
        members = entry(root, "group", group)
        assert members is not None and "edge-agent" in members[3].split(","), group
    data = root / "var/lib/edge-agent"
    assert (data.stat().st_uid, stat.S_IMODE(data.stat().st_mode)) == (uid, 0o750)
    assert stat.S_IMODE((data / "keys").stat().st_mode) == 0o700
    conf_dir = root / "etc/edge-agent"
    assert (conf_dir.stat().st_gid, stat.S_IMODE(conf_dir.stat().st_mode)) == (gid, 0o770)  # remote config
    config = conf_dir / "config.yaml"
    assert config.read_text() == (ROOT / "config/example.yaml").read_text()
    assert (root / "var/lib/dpkg/info/edge-agent.conffiles").read_text().strip() == "/etc/edge-agent/config.yaml"
    assert (root / "etc/systemd/system/multi-user.target.wants/edge-agent.service").is_symlink()
    unit = root / "lib/systemd/system/edge-agent.service"
    assert unit.read_text() == (ROOT / "systemd/edge-agent.service").read_text()
    assert os.readlink(root / "usr/bin/edge-agent") == "/opt/edge-agent/venv/bin/edge-agent"
    script = (root / "opt/edge-agent/venv/bin/edge-agent").read_text()
    assert script.startswith("#!/opt/edge-agent/venv/bin/python")  # pointed at its installed path
    version = subprocess.run([str(root / "opt/edge-agent/venv/bin/python"), "-c",
                              "import edge_agent; print(edge_agent.__version__)"], capture_output=True, text=True)
    assert version.stdout.strip() == "0.1.0", version.stderr
    if shutil.which("systemd-analyze"):
        local = tmp_path / "edge-agent.service"
        local.write_text(unit.read_text().replace("/opt/edge-agent", str(root / "opt/edge-agent")))
        verified = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr

    # The box runs: evidence in the data dir, a config changed on the box (as a remote `config` does).
    (data / "evidence" / "bundle-1").mkdir()
    (data / "evidence" / "bundle-1" / "manifest.json").write_text("{}")
    config.write_text(config.read_text().replace("id: crane-1", "id: crane-9"))

    dpkg(root, "-i", str(second))
    assert (root / "opt/edge-agent/UPGRADED").read_text() == "0.1.1\n"
    assert (data / "evidence" / "bundle-1" / "manifest.json").read_text() == "{}"  # the data dir is kept
    assert "id: crane-9" in config.read_text()  # the box's config is kept (a conffile it changed)
    assert entry(root, "passwd", "edge-agent") == user  # the same user, not a second one
    status = (root / "var/lib/dpkg/status").read_text()
    assert "Version: 0.1.1" in status

    dpkg(root, "--purge", "edge-agent")
    assert not data.exists() and not conf_dir.exists()
    assert not (root / "opt/edge-agent").exists() and not (root / "usr/bin/edge-agent").exists()
    assert entry(root, "passwd", "edge-agent") is None and entry(root, "group", "edge-agent") is None
    assert not (root / "etc/systemd/system/multi-user.target.wants/edge-agent.service").exists()
    assert "Package: edge-agent" not in (root / "var/lib/dpkg/status").read_text()
