"""Each check answers PASS/WARN/FAIL/SKIP with what was found and what to do about a failure."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.clock import clock_synchronized
from edge_agent.config import AgentConfig, Problem
from edge_agent.uplink.mqtt import probe

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Result:
    name: str
    status: str
    detail: str
    hint: str = ""


CheckFn = Callable[[AgentConfig, bool], Iterator[Result]]


def config_results(path: Path, warnings: Sequence[Problem]) -> list[Result]:
    """The config's own line, then one WARN per warning (valid, but something will not work)."""
    if not warnings:
        return [Result("config", PASS, f"{path} is valid")]
    out = [Result("config", PASS, f"{path} is valid, with {len(warnings)} warning(s) below")]
    for w in warnings:
        out.append(Result("config", WARN, f"line {w.line}: {w.path}: {w.reason}"))  # the reason says the fix
    return out


def check_data_dir(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    data_dir = Path(config.storage.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".doctor-"):
            pass
    except OSError as exc:
        yield Result("data dir", FAIL, f"{data_dir}: {exc.strerror or exc}",
                     f"create it and give the agent's user write access: chown edge-agent {data_dir}")
        return
    yield Result("data dir", PASS, f"{data_dir} is writable")
    free = shutil.disk_usage(data_dir).free / 1e6
    need = config.storage.disk_min_free_mb + config.storage.outbox_max_mb
    if free < config.storage.disk_min_free_mb:
        yield Result("free disk", FAIL, f"{free:.0f} MB free in {data_dir}",
                     f"free space or use a bigger card; the agent needs >= {config.storage.disk_min_free_mb} MB")
    elif free < need:
        yield Result("free disk", WARN, f"{free:.0f} MB free; a full outbox ({config.storage.outbox_max_mb} MB) "
                     "would not fit", "lower storage.outbox_max_mb or free space")
    else:
        yield Result("free disk", PASS, f"{free:.0f} MB free")


def _holds_private_key(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return b"PRIVATE KEY" in fh.read(64 * 1024)
    except OSError:
        return False


def check_keys(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    """Private keys others may read: the device's signing key, and a bureau key file that is a private key.

    Whoever reads the device key can sign evidence as this box; a bureau *private* key on the
    box lets its reader sign commands to every box. Group or world access to either is a FAIL.
    """
    device_key = Path(config.evidence.device_key or Path(config.storage.data_dir) / "keys" / "device.key")
    files: list[tuple[str, Path]] = [("device key", device_key)]
    files += [(f"bureau key {k.name}", k.file) for k in config.bureau.trusted_keys
              if k.file is not None and _holds_private_key(k.file)]
    for label, path in files:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            yield Result(label, PASS, f"{path} is made on first start, mode 0600")
            continue
        except PermissionError:
            yield Result(label, SKIP, f"{path} is not visible to this user (as it should be)",
                         "run doctor as root (sudo) to check the key's mode")
            continue
        except OSError as exc:
            yield Result(label, FAIL, f"{path}: {exc.strerror or exc}", "give the agent's user read access to it")
            continue
        if mode & 0o077:
            yield Result(label, FAIL, f"{path} has mode {mode:04o}: others on this machine can read or replace it",
                         f"chmod 600 {path}")
        elif label != "device key":
            yield Result(label, WARN, f"{path} is a private key (mode {mode:04o}); the box needs only the public one",
                         "replace it by the public key: `edge-fw keys show-public` prints it")
        else:
            folder = stat.S_IMODE(path.parent.stat().st_mode)
            if folder & 0o022:
                yield Result(label, FAIL, f"{path.parent} has mode {folder:04o}: others can replace the key",
                             f"chmod 700 {path.parent}")
            else:
                yield Result(label, PASS, f"{path}, mode {mode:04o}")


def check_clock(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    synced = clock_synchronized()
    if synced:
        yield Result("clock", PASS, "synchronised (NTP)")
    elif synced is None:
        yield Result("clock", WARN, "cannot tell whether the clock is synchronised", "check `timedatectl`")
    else:
        # The box still works, and flags every message and bundle; but the bureau may reject evidence.
        yield Result("clock", WARN, "not synchronised: every message and bundle is flagged",
                     "enable NTP: `timedatectl set-ntp true`, and check the box reaches an NTP server")


def check_broker(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    cfg = config.mqtt
    if cfg.tls is not None:
        for label, path in (("CA", cfg.tls.ca_file), ("certificate", cfg.tls.cert_file), ("key", cfg.tls.key_file)):
            if path is not None and not os.access(path, os.R_OK):
                yield Result("broker", FAIL, f"TLS {label} file {path} is not readable",
                             "copy the file there and make it readable by the agent's user (mqtt.tls)")
                return
    ok, detail = probe(cfg, cfg.client_id or f"{config.site.id}-{config.device.id}")
    if ok:
        yield Result("broker", PASS, detail)
        return
    if "refused" in detail and ("password" in detail or "authorized" in detail):
        hint = "check mqtt.username and the password file with the bureau"
    elif "TLS" in detail or "certificate" in detail.lower() or "SSL" in detail:
        hint = "check mqtt.tls.ca_file is the CA that signed the broker's certificate, and mqtt.host its name"
    else:
        hint = f"check the network and that a broker listens on {cfg.host}:{cfg.port} (mqtt.host, mqtt.port)"
    yield Result("broker", FAIL, detail, hint)


def all_checks() -> list[CheckFn]:
    """In the order a technician works: storage and time, the link, then each device."""
    from edge_agent.doctor.devices import check_cameras, check_relays, check_speaker
    from edge_agent.doctor.meters import check_meters

    return [check_data_dir, check_keys, check_clock, check_broker, check_meters, check_cameras, check_speaker,
            check_relays]
