"""Meter profiles: what to read from a meter, as data (YAML in `config/profiles/`), not code.

A profile names the registers of one meter model: function code, register, data type with
byte and word order, scale, unit and quantity, the plausible range, and optionally the
registers that set the meter's address and baud rate. Register maps of cheap RS-485 meters
vary by vendor, so a technician adds a model by copying a YAML file, never by editing code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drivers.modbus.codec import DataType, Order, decode_raw
from drivers.resources import bundled_config_dir

READ_FUNCTIONS = (3, 4)  # holding registers, input registers
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
MAX_REGS_PER_READ = 125  # Modbus limit for FC 03/04


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class FieldSpec:
    """One quantity the meter reports, and where it lives."""

    quantity: str
    register: int
    function: int = 3
    dtype: DataType = DataType.UINT16
    byte_order: Order = Order.BIG
    word_order: Order = Order.BIG
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    min: float | None = None
    max: float | None = None
    stale_after_s: float | None = None  # same value for longer than this -> quality stale

    @property
    def count(self) -> int:
        return self.dtype.registers

    def value(self, words: list[int] | tuple[int, ...]) -> float:
        """Engineering value from this field's register words (653 × 0.1 -> 65.3, not 65.30000000000001)."""
        value = decode_raw(words, self.dtype, self.byte_order, self.word_order) * self.scale + self.offset
        return value if self.dtype is DataType.FLOAT32 else round(value, 9)

    def in_range(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class SettingRegister:
    """A holding register written with FC 06 to change a meter setting (address, baud)."""

    register: int
    codes: tuple[tuple[int, int], ...] = ()  # (setting, register value); empty: write the value as is

    def code_for(self, setting: int) -> int:
        if not self.codes:
            return setting
        for value, code in self.codes:
            if value == setting:
                return code
        raise ProfileError(f"this meter has no code for {setting}; known: {[v for v, _ in self.codes]}")

    def setting_for(self, code: int) -> int | None:
        if not self.codes:
            return code
        return next((value for value, c in self.codes if c == code), None)


@dataclass(frozen=True)
class ReadBlock:
    """One request: a run of registers covering one or more fields."""

    function: int
    start: int
    count: int
    fields: tuple[FieldSpec, ...]

    def split(self, words: list[int] | tuple[int, ...]) -> list[tuple[FieldSpec, tuple[int, ...]]]:
        return [(f, tuple(words[f.register - self.start: f.register - self.start + f.count]))
                for f in self.fields]


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    fields: tuple[FieldSpec, ...]
    default_address: int = 1
    default_baud: int = 9600
    default_parity: str = "N"
    baud_candidates: tuple[int, ...] = (4800, 9600)
    merge_gap: int = 0  # unused registers a single request may span between two fields
    address_register: SettingRegister | None = None
    baud_register: SettingRegister | None = None
    source: str = ""  # file it was loaded from

    def blocks(self) -> tuple[ReadBlock, ...]:
        """Group fields into as few requests as the profile allows (merge_gap, 125 registers)."""
        out: list[ReadBlock] = []
        for fn in sorted({f.function for f in self.fields}):
            fields = sorted((f for f in self.fields if f.function == fn), key=lambda f: f.register)
            group: list[FieldSpec] = []
            for f in fields:
                if group:
                    start = group[0].register
                    end = max(g.register + g.count for g in group)
                    if f.register - end <= self.merge_gap and f.register + f.count - start <= MAX_REGS_PER_READ:
                        group.append(f)
                        continue
                    out.append(_block(fn, group))
                group = [f]
            if group:
                out.append(_block(fn, group))
        return tuple(out)

    def register_span(self, function: int) -> tuple[int, int] | None:
        """First register and one past the last, over fields read with `function`."""
        fields = [f for f in self.fields if f.function == function]
        if not fields:
            return None
        return min(f.register for f in fields), max(f.register + f.count for f in fields)


def _block(function: int, group: list[FieldSpec]) -> ReadBlock:
    start = group[0].register
    end = max(g.register + g.count for g in group)
    return ReadBlock(function, start, end - start, tuple(group))


# ---------------------------------------------------------------- loading

_FIELD_KEYS = {"quantity", "function", "register", "type", "byte_order", "word_order", "scale", "offset",
               "unit", "min", "max", "stale_after_s", "note"}
_TOP_KEYS = {"name", "description", "defaults", "baud_candidates", "merge_gap", "fields",
             "address_register", "baud_register", "note"}


def profiles_dir() -> Path:
    return bundled_config_dir() / "profiles"


def bundled_profiles() -> list[str]:
    """Names of the profiles shipped in config/profiles/."""
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def resolve_profile(name_or_path: str) -> Path:
    """A bundled name (`renke_rs_zs_n01`) or a path to a YAML file -> the file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if candidate.is_file():
            return candidate
        raise ProfileError(f"profile file {name_or_path} not found")
    bundled = profiles_dir() / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(bundled_profiles()) or "(none found)"
    raise ProfileError(f"unknown meter profile {name_or_path!r}; bundled profiles: {known}, or give a file path")


def load_profile(name_or_path: str) -> Profile:
    path = resolve_profile(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from exc
    try:
        return parse_profile(data, source=str(path))
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from exc


def parse_profile(data: Any, source: str = "") -> Profile:
    if not isinstance(data, dict):
        raise ProfileError("a profile must be a mapping")
    _no_unknown(data, _TOP_KEYS, "")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ProfileError("name: required string")
    raw_fields = data.get("fields")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise ProfileError("fields: need a non-empty list")
    fields = tuple(_parse_field(f, i) for i, f in enumerate(raw_fields))
    _no_overlap(fields)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ProfileError("defaults: must be a mapping")
    _no_unknown(defaults, {"address", "baud", "parity"}, "defaults.")
    address = _int(defaults.get("address", 1), "defaults.address", 1, 255)
    baud = _baud(defaults.get("baud", 9600), "defaults.baud")
    parity = str(defaults.get("parity", "N")).upper()
    if parity not in ("N", "E", "O"):
        raise ProfileError("defaults.parity: one of N, E, O")
    candidates = data.get("baud_candidates", [baud])
    if not isinstance(candidates, list) or not candidates:
        raise ProfileError("baud_candidates: need a list of baud rates")
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        fields=fields,
        default_address=address,
        default_baud=baud,
        default_parity=parity,
        baud_candidates=tuple(_baud(b, "baud_candidates") for b in candidates),
        merge_gap=_int(data.get("merge_gap", 0), "merge_gap", 0, 100),
        address_register=_setting(data.get("address_register"), "address_register"),
        baud_register=_setting(data.get("baud_register"), "baud_register"),
        source=source,
    )


def _parse_field(raw: Any, i: int) -> FieldSpec:
    where = f"fields[{i}]."
    if not isinstance(raw, dict):
        raise ProfileError(f"fields[{i}]: must be a mapping")
    _no_unknown(raw, _FIELD_KEYS, where)
    quantity = raw.get("quantity")
    if not isinstance(quantity, str) or not quantity:
        raise ProfileError(f"{where}quantity: required string")
    try:
        dtype = DataType(str(raw.get("type", "uint16")))
        byte_order = Order(str(raw.get("byte_order", "big")))
        word_order = Order(str(raw.get("word_order", "big")))
    except ValueError as exc:
        raise ProfileError(f"{where}{exc} (types: {[t.value for t in DataType]}, orders: big, little)") from exc
    function = _int(raw.get("function", 3), where + "function", 3, 4)
    register = _int(raw.get("register"), where + "register", 0, 0xFFFF - dtype.registers + 1)
    scale = _float(raw.get("scale", 1.0), where + "scale")
    if scale == 0:
        raise ProfileError(f"{where}scale: must not be 0")
    lo = None if raw.get("min") is None else _float(raw["min"], where + "min")
    hi = None if raw.get("max") is None else _float(raw["max"], where + "max")
    if lo is not None and hi is not None and lo > hi:
        raise ProfileError(f"{where}min > max")
    stale = raw.get("stale_after_s")
    return FieldSpec(
        quantity=quantity, register=register, function=function, dtype=dtype, byte_order=byte_order,
        word_order=word_order, scale=scale, offset=_float(raw.get("offset", 0.0), where + "offset"),
        unit=str(raw.get("unit", "")), min=lo, max=hi,
        stale_after_s=None if stale is None else _float(stale, where + "stale_after_s"),
    )


def _setting(raw: Any, where: str) -> SettingRegister | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: must be a mapping with 'register' (and 'codes')")
    _no_unknown(raw, {"register", "codes", "note"}, where + ".")
    codes = raw.get("codes") or {}
    if not isinstance(codes, dict):
        raise ProfileError(f"{where}.codes: mapping of setting -> register value")
    pairs = tuple(sorted((_int(k, f"{where}.codes", 0, 10**7), _int(v, f"{where}.codes", 0, 0xFFFF))
                         for k, v in codes.items()))
    return SettingRegister(register=_int(raw.get("register"), where + ".register", 0, 0xFFFF), codes=pairs)


def _no_unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ProfileError(f"{where}{unknown[0]}: unknown key (valid: {', '.join(sorted(allowed))})")


def _no_overlap(fields: tuple[FieldSpec, ...]) -> None:
    seen: dict[tuple[int, int], str] = {}
    for f in fields:
        for r in range(f.register, f.register + f.count):
            other = seen.get((f.function, r))
            if other is not None:
                raise ProfileError(f"fields: {f.quantity} overlaps {other} at register {r:#06x}")
            seen[(f.function, r)] = f.quantity
    names = [f.quantity for f in fields]
    dups = {n for n in names if names.count(n) > 1}
    if dups:
        raise ProfileError(f"fields: quantity {sorted(dups)[0]} appears twice")


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProfileError(f"{where}: need an integer {lo}..{hi} (got {value!r})")
    if not lo <= value <= hi:
        raise ProfileError(f"{where}: {value} is outside {lo}..{hi}")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProfileError(f"{where}: need a number (got {value!r})")
    return float(value)


def _baud(value: Any, where: str) -> int:
    if value not in BAUD_RATES:
        raise ProfileError(f"{where}: {value!r} is not a standard baud rate {BAUD_RATES}")
    return int(value)


__all__ = [
    "BAUD_RATES", "DataType", "FieldSpec", "Order", "Profile", "ProfileError", "ReadBlock",
    "SettingRegister", "bundled_profiles", "load_profile", "parse_profile", "profiles_dir",
    "resolve_profile",
]
