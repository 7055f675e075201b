"""HJ 212-2017 packets: CRC, encode/decode, split/reassemble, stream framing.

A packet on the wire is `##` + 4-digit length of the data segment (UTF-8 bytes) + data
segment + 4 hex CRC of the data segment + CRLF. The data segment is
`QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;[PNUM=..;PNO=..;]CP=&&...&&`. Inside CP, `;`
separates data items and `,` separates the fields of one item (e.g. a value and its flag).

Decoding never raises anything but `DecodeError`, whose `kind` tells a technician what was
wrong: a bad CRC and a bad length are told apart from other garbage.

Two decoding modes. Strict (the default; what the box applies to itself and to its platform)
refuses any packet that does not follow HJ 212-2017 to the letter. Tolerant (the reference
platform's default, `strict=False`) takes every packet whose framing, length and CRC are
right, decodes what it can and records each deviation as a `DecodeWarning` on the packet:
a 13-digit millisecond-epoch QN (converted to the 17-digit form), a 3-digit ST, a missing
or malformed CP, unknown header fields (kept in `Packet.extra`), text that is not UTF-8.
A bad CRC or a bad length is refused in both modes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Literal
from zoneinfo import ZoneInfo

# Flag bits `V5..V0 D A` (HJ 212-2017 §6.3.3): A = answer wanted, D = packet is split.
FLAG_ACK = 0x01
FLAG_SPLIT = 0x02
VERSION_2017 = 1
MAX_SEGMENT = 1024  # the standard's limit on a data segment; longer data is split (PNUM/PNO)
_MAX_LENGTH_FIELD = 9999  # what four decimal digits can say
_OVERHEAD = 2 + 4 + 4 + 2  # "##", length, CRC, CRLF

DecodeKind = Literal["bad_header", "bad_length", "bad_crc", "malformed", "garbage", "too_long"]
# What tolerant decoding let pass, one code per kind of deviation (see DecodeWarning).
WarningCode = Literal[
    "qn_epoch_ms",  # QN was a 13-digit millisecond epoch; converted to YYYYMMDDhhmmsszzz
    "qn_format",  # QN neither 17 digits nor an epoch; kept as sent
    "st_3_digits",  # ST of 3 digits (HJ 212-2017 says 2); kept as sent
    "st_format",  # ST not 2 or 3 digits; kept as sent
    "cn_format",  # CN not 4 digits; kept as sent
    "cp_missing",  # no CP=&&...&& at all: no data
    "cp_malformed",  # CP not enclosed in &&...&&, or fields that are not key=value (skipped)
    "header_unknown",  # a header field HJ 212-2017 does not define; kept in Packet.extra
    "header_case",  # a header field name in the wrong case (e.g. FLAG=); taken
    "header_missing",  # ST, CN, PW or MN missing; empty
    "header_duplicate",  # a header field twice; the first is kept
    "header_syntax",  # a header token without '=', an empty token, no ';' before CP
    "flag_format",  # Flag not a number of one byte; ignored
    "split_format",  # PNUM/PNO alone, not numbers, or PNO outside 1..PNUM; ignored
    "not_utf8",  # data segment not UTF-8: read as GB18030 (GBK), or with replacement characters
]
DEFAULT_TZ = "Asia/Shanghai"  # the time zone a millisecond-epoch QN is converted into


class DecodeError(Exception):
    """Why bytes from the wire are not a valid packet. Never anything else escapes decode()."""

    def __init__(self, kind: DecodeKind, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind: DecodeKind = kind
        self.detail = detail


@dataclass(frozen=True)
class DecodeWarning:
    """One deviation from HJ 212-2017 that tolerant decoding let pass: a code a program can
    count, and a text a technician can read."""

    code: WarningCode
    text: str

    def __str__(self) -> str:
        return f"{self.code}: {self.text}"


class EncodeError(ValueError):
    """A packet that cannot be put on the wire (too long, or a value the syntax cannot carry)."""


class DataFlag(str, Enum):
    """Data flags, `xxx-Flag=` (HJ 212-2017 Table 5)."""

    NORMAL = "N"
    STOPPED = "F"
    MAINTENANCE = "M"
    MANUAL = "S"
    FAULT = "D"
    CALIBRATING = "C"
    OVER_RANGE = "T"
    COMM_ERROR = "B"


def crc16(data: bytes) -> int:
    """The CRC of HJ 212-2017 Appendix A. Not CRC-16/MODBUS: the register is shifted before the XOR."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ byte
        for _ in range(8):
            carry = crc & 1
            crc >>= 1
            if carry:
                crc ^= 0xA001
    return crc


def make_flag(*, ack: bool, split: bool = False, version: int = VERSION_2017) -> int:
    return (version << 2) | (FLAG_SPLIT if split else 0) | (FLAG_ACK if ack else 0)


CpItem = tuple[tuple[str, str], ...]  # the `,`-joined fields of one data item, in order


@dataclass(frozen=True)
class Packet:
    """One HJ 212 packet. CP keeps its items and fields in order, values as sent, so that a
    decoded packet re-encodes byte for byte."""

    st: str
    cn: str
    pw: str
    mn: str
    qn: str | None = None
    flag: int | None = None
    pnum: int | None = None
    pno: int | None = None
    cp: tuple[CpItem, ...] = field(default=())
    # Only from tolerant decoding (never encoded): the QN as sent when `qn` is a conversion
    # of it, header fields HJ 212 does not define, and what deviated from the standard.
    qn_sent: str | None = None
    extra: tuple[tuple[str, str], ...] = ()
    warnings: tuple[DecodeWarning, ...] = ()

    @property
    def wire_qn(self) -> str | None:
        """The QN as the sender wrote it: what an answer must echo for the sender to match it."""
        return self.qn_sent if self.qn_sent is not None else self.qn

    @property
    def warning_codes(self) -> tuple[str, ...]:
        return tuple(w.code for w in self.warnings)

    @property
    def ack_wanted(self) -> bool:
        return self.flag is not None and bool(self.flag & FLAG_ACK)

    @property
    def is_split(self) -> bool:
        return self.pnum is not None

    @property
    def version(self) -> int | None:
        return None if self.flag is None else self.flag >> 2

    def fields(self) -> dict[str, str]:
        """All CP fields, flattened (the last wins if a key repeats)."""
        return {k: v for item in self.cp for k, v in item}

    def get(self, key: str) -> str | None:
        return self.fields().get(key)

    @property
    def data_time(self) -> str | None:
        return self.get("DataTime")


def cp_items(pairs: Iterable[Iterable[tuple[str, str]]]) -> tuple[CpItem, ...]:
    return tuple(tuple(item) for item in pairs)


_HEADER_KEYS = ("QN", "ST", "CN", "PW", "MN", "Flag", "PNUM", "PNO")
_RE_QN = re.compile(r"\d{17}")
_RE_QN_EPOCH_MS = re.compile(r"\d{13}")
_RE_ST = re.compile(r"\d{2}")
_RE_ST3 = re.compile(r"\d{3}")
_RE_CN = re.compile(r"\d{4}")
_RE_INT = re.compile(r"\d{1,4}")
_RE_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")
_RE_LEN = re.compile(rb"\d{4}")


# --- encoding ----------------------------------------------------------------------------

def _refuse(what: str, value: str, bad: Iterable[str]) -> None:
    for token in bad:
        if token in value:
            raise EncodeError(f"{what} {value[:40]!r} contains {token!r}, which HJ 212 syntax reserves")


def encode_segment(p: Packet, *, strict: bool = True) -> str:
    """The data segment as text. Refuses what the decoder could not read back the same.

    `strict=False` lets QN, ST and CN through as they are (still refusing the characters the
    syntax reserves): for a platform's answer that must echo a sender's non-standard QN.
    """
    if strict and p.qn is not None and not _RE_QN.fullmatch(p.qn):
        raise EncodeError(f"QN {p.qn!r} is not 17 digits")
    if strict and (not _RE_ST.fullmatch(p.st) or not _RE_CN.fullmatch(p.cn)):
        raise EncodeError(f"ST {p.st!r} must be 2 digits and CN {p.cn!r} 4 digits")
    head: list[str] = []
    if p.qn is not None:
        head.append(f"QN={p.qn}")
    head += [f"ST={p.st}", f"CN={p.cn}", f"PW={p.pw}", f"MN={p.mn}"]
    if p.flag is not None:
        head.append(f"Flag={p.flag}")
    if p.flag is not None and not 0 <= p.flag <= 255:
        raise EncodeError(f"Flag {p.flag} is not one byte")
    if (p.pnum is None) != (p.pno is None):
        raise EncodeError("PNUM and PNO go together")
    if p.pnum is not None and p.pno is not None and not 1 <= p.pno <= p.pnum <= 9999:
        raise EncodeError(f"PNO={p.pno} outside 1..PNUM={p.pnum} (at most 9999)")
    if p.pnum is not None:
        head += [f"PNUM={p.pnum}", f"PNO={p.pno}"]
    for token in head:
        _refuse("header field", token, (";", "CP=&&", "\r\n"))
    for item in p.cp:
        if not item:
            raise EncodeError("empty CP item")
        for k, v in item:
            if not k:
                raise EncodeError("empty CP key")
            _refuse("CP key", k, ("=", ";", ",", "&&", "\r\n"))
            _refuse(f"CP value of {k}", v, (";", ",", "&&", "\r\n"))
    cp = ";".join(",".join(f"{k}={v}" for k, v in item) for item in p.cp)
    return ";".join(head) + f";CP=&&{cp}&&"


def frame(segment: bytes) -> bytes:
    """Wrap a data segment: `##`, length, segment, CRC, CRLF."""
    if len(segment) > _MAX_LENGTH_FIELD:
        raise EncodeError(f"data segment of {len(segment)} bytes does not fit a 4-digit length")
    return b"##%04d" % len(segment) + segment + b"%04X\r\n" % crc16(segment)


def encode(p: Packet, *, strict: bool = True) -> bytes:
    """One packet, whatever its length (see `split` for the 1,024-byte rule)."""
    return frame(encode_segment(p, strict=strict).encode("utf-8"))


def segment_length(p: Packet) -> int:
    return len(encode_segment(p).encode("utf-8"))


def split(p: Packet, max_segment: int = MAX_SEGMENT) -> list[Packet]:
    """Split a packet whose data segment is over `max_segment` bytes into PNUM/PNO parts.

    Parts share QN, ST, CN, PW and MN, carry the D flag bit, and break CP only between data
    items. DataTime, when it is the first item, is repeated in every part so that each part
    says which time it belongs to; `reassemble` removes the repeats.
    """
    if segment_length(p) <= max_segment:
        return [p]
    lead: tuple[CpItem, ...] = ()
    rest = p.cp
    if rest and rest[0] and rest[0][0][0] == "DataTime":
        lead, rest = rest[:1], rest[1:]
    flag = (p.flag if p.flag is not None else make_flag(ack=False)) | FLAG_SPLIT
    # Measure with the widest PNUM/PNO so that the final numbers can only shrink the parts.
    probe = replace(p, flag=flag, pnum=9999, pno=9999)
    groups: list[list[CpItem]] = []
    current: list[CpItem] = []
    for item in rest:
        candidate = [*current, item]
        if segment_length(replace(probe, cp=(*lead, *candidate))) <= max_segment:
            current = candidate
            continue
        if not current:
            raise EncodeError(f"one CP item is longer than {max_segment} bytes: {item[:2]!r}...")
        groups.append(current)
        current = [item]
        if segment_length(replace(probe, cp=(*lead, *current))) > max_segment:
            raise EncodeError(f"one CP item is longer than {max_segment} bytes: {item[:2]!r}...")
    if current:
        groups.append(current)
    if len(groups) > 9999:
        raise EncodeError("too many parts")
    n = len(groups)
    return [replace(p, flag=flag, pnum=n, pno=i + 1, cp=(*lead, *g)) for i, g in enumerate(groups)]


def encode_split(p: Packet, max_segment: int = MAX_SEGMENT) -> list[bytes]:
    return [encode(part) for part in split(p, max_segment)]


def reassemble(parts: Sequence[Packet]) -> Packet:
    """Join the parts of a split packet (any order) back into one; ValueError if incomplete."""
    if not parts:
        raise ValueError("no parts")
    ordered = sorted(parts, key=lambda q: q.pno or 0)
    first = ordered[0]
    pnum = first.pnum
    if pnum is None or [q.pno for q in ordered] != list(range(1, pnum + 1)):
        raise ValueError(f"parts {[q.pno for q in ordered]} do not make PNUM={pnum}")
    for q in ordered:
        if (q.qn, q.st, q.cn, q.mn, q.pnum) != (first.qn, first.st, first.cn, first.mn, pnum):
            raise ValueError("parts disagree on QN/ST/CN/MN/PNUM")
    lead = first.cp[:1] if first.cp and first.cp[0] and first.cp[0][0][0] == "DataTime" else ()
    cp: list[CpItem] = list(first.cp)
    for q in ordered[1:]:
        items = q.cp[1:] if lead and q.cp[:1] == lead else q.cp
        cp.extend(items)
    flag = None if first.flag is None else first.flag & ~FLAG_SPLIT
    warnings: dict[str, DecodeWarning] = {}  # one per kind, as on a single packet
    for q in ordered:
        for w in q.warnings:
            warnings.setdefault(w.code, w)
    return replace(first, flag=flag, pnum=None, pno=None, cp=tuple(cp), warnings=tuple(warnings.values()))


# --- decoding ----------------------------------------------------------------------------


def decode(raw: bytes, *, check_crc: bool = True, strict: bool = True, tz: str = DEFAULT_TZ) -> Packet:
    """Decode one whole frame (from `##` to CRLF). Raises DecodeError only.

    `strict=False`: tolerant decoding (see the module's docstring); framing, length and CRC
    are checked all the same, and `tz` is the zone a millisecond-epoch QN is converted into.
    """
    try:
        return _decode(raw, check_crc, strict, tz)
    except DecodeError:
        raise
    except Exception as exc:  # a bug here must not take the uplink down: report it as malformed
        raise DecodeError("malformed", f"unexpected {type(exc).__name__}: {exc}") from exc


def _decode(raw: bytes, check_crc: bool, strict: bool, tz: str) -> Packet:
    if not isinstance(raw, (bytes, bytearray)):
        raise DecodeError("malformed", "not bytes")
    raw = bytes(raw)
    if not raw.startswith(b"##"):
        raise DecodeError("bad_header", "does not start with '##'")
    if not raw.endswith(b"\r\n"):
        raise DecodeError("bad_header", "does not end with CRLF")
    if len(raw) < _OVERHEAD:
        raise DecodeError("bad_length", f"only {len(raw)} bytes")
    length_field = raw[2:6]
    if not _RE_LEN.fullmatch(length_field):
        raise DecodeError("bad_length", f"length field {length_field!r} is not 4 digits")
    declared = int(length_field)
    actual = len(raw) - _OVERHEAD
    if declared != actual:
        raise DecodeError("bad_length", f"length field says {declared}, data segment has {actual} bytes")
    segment = raw[6:6 + declared]
    crc_field = raw[6 + declared:-2]
    if not _RE_HEX4.fullmatch(crc_field):
        raise DecodeError("bad_crc", f"CRC field {crc_field!r} is not 4 hex digits")
    if check_crc:
        got, want = int(crc_field, 16), crc16(segment)
        if got != want:
            raise DecodeError("bad_crc", f"CRC {got:04X} received, {want:04X} computed")
    return parse_segment(segment, strict=strict, tz=tz)


def parse_segment(segment: bytes, *, strict: bool = True, tz: str = DEFAULT_TZ) -> Packet:
    """Parse a data segment (no framing). Strict: raises DecodeError('malformed'); tolerant:
    never raises, every deviation is a warning on the packet."""
    if not strict:
        return _parse_tolerant(segment, tz)
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("malformed", f"data segment is not UTF-8 ({exc.reason})") from None
    cut = text.find("CP=&&")
    if cut < 0 or not text.endswith("&&") or len(text) < cut + 7:
        raise DecodeError("malformed", "no CP=&&...&&")
    if cut and text[cut - 1] != ";":
        raise DecodeError("malformed", "CP is not preceded by ';'")
    head_text, cp_text = text[:cut], text[cut + 5:-2]
    head: dict[str, str] = {}
    for token in head_text.split(";")[:-1] if head_text else []:
        key, eq, value = token.partition("=")
        if not eq:
            raise DecodeError("malformed", f"header field {token!r} has no '='")
        if key not in _HEADER_KEYS:
            raise DecodeError("malformed", f"unknown header field {key!r}")
        if key in head:
            raise DecodeError("malformed", f"header field {key} twice")
        head[key] = value
    for key in ("ST", "CN", "PW", "MN"):
        if key not in head:
            raise DecodeError("malformed", f"header field {key} missing")
    _expect(head, "QN", _RE_QN)
    _expect(head, "ST", _RE_ST)
    _expect(head, "CN", _RE_CN)
    for key in ("Flag", "PNUM", "PNO"):
        _expect(head, key, _RE_INT)
    if ("PNUM" in head) != ("PNO" in head):
        raise DecodeError("malformed", "PNUM and PNO go together")
    pnum = int(head["PNUM"]) if "PNUM" in head else None
    pno = int(head["PNO"]) if "PNO" in head else None
    if pnum is not None and pno is not None and not 1 <= pno <= pnum:
        raise DecodeError("malformed", f"PNO={pno} outside 1..PNUM={pnum}")
    flag = int(head["Flag"]) if "Flag" in head else None
    if flag is not None and flag > 255:
        raise DecodeError("malformed", f"Flag={flag} is not one byte")
    return Packet(
        st=head["ST"], cn=head["CN"], pw=head["PW"], mn=head["MN"], qn=head.get("QN"), flag=flag,
        pnum=pnum, pno=pno, cp=_parse_cp(cp_text),
    )


def _expect(head: dict[str, str], key: str, pattern: re.Pattern[str]) -> None:
    value = head.get(key)
    if value is not None and not pattern.fullmatch(value):
        raise DecodeError("malformed", f"{key}={value!r} is not valid")


def _parse_cp(text: str) -> tuple[CpItem, ...]:
    if not text:
        return ()
    if "&&" in text:
        raise DecodeError("malformed", "'&&' inside CP")
    items: list[CpItem] = []
    for item_text in text.split(";"):
        item: list[tuple[str, str]] = []
        for token in item_text.split(","):
            key, eq, value = token.partition("=")
            if not eq or not key:
                raise DecodeError("malformed", f"CP field {token[:40]!r} is not key=value")
            item.append((key, value))
        items.append(tuple(item))
    return tuple(items)


class _Warnings:
    """One warning per code and packet; the details of repeats are appended to its text."""

    def __init__(self) -> None:
        self._texts: dict[WarningCode, list[str]] = {}

    def add(self, code: WarningCode, text: str) -> None:
        self._texts.setdefault(code, []).append(text)

    def result(self) -> tuple[DecodeWarning, ...]:
        out = []
        for code, texts in self._texts.items():
            shown = "; ".join(texts[:3]) + (f"; and {len(texts) - 3} more" if len(texts) > 3 else "")
            out.append(DecodeWarning(code, shown))
        return tuple(out)


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def qn_from_epoch_ms(ms: int, tz: str = DEFAULT_TZ) -> str:
    """A millisecond epoch as an HJ 212 QN: local time YYYYMMDDhhmmsszzz in `tz`."""
    when = datetime.fromtimestamp(ms // 1000, ZoneInfo(tz))
    return when.strftime("%Y%m%d%H%M%S") + f"{ms % 1000:03d}"


def _parse_tolerant(segment: bytes, tz: str) -> Packet:
    """Take what a well-framed packet says, whatever its deviations; never raises."""
    warns = _Warnings()
    try:
        text = segment.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = segment.decode("gb18030")
            warns.add("not_utf8", "data segment is not UTF-8; read as GB18030 (GBK)")
        except UnicodeDecodeError:
            text = segment.decode("utf-8", "replace")
            warns.add("not_utf8", "data segment is not UTF-8 nor GB18030; undecodable bytes replaced")

    # Header and CP.
    cut = text.find("CP=&&")
    if cut >= 0:
        head_text, body = text[:cut], text[cut + 5:]
        if cut and text[cut - 1] != ";":
            warns.add("header_syntax", "no ';' before CP")
        if body.endswith("&&"):
            cp_text = body[:-2]
        else:
            warns.add("cp_malformed", f"CP not closed with '&&': {_short(body)}")
            cp_text = body.rstrip("&")
    else:
        found = re.search(r"(?:^|;)CP=", text)
        if found is not None:
            head_end = found.start() + 1 if found.group().startswith(";") else found.start()
            head_text, cp_text = text[:head_end], text[found.end():]
            warns.add("cp_malformed", f"CP not enclosed in '&&': {_short(cp_text)}")
            cp_text = cp_text.strip("&")
        else:
            head_text, cp_text = text, ""
            warns.add("cp_missing", "no CP=&&...&&: the packet carries no data")

    head: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    tokens = head_text.split(";")
    if tokens and tokens[-1] == "":
        tokens.pop()  # the ';' that ends the last header field
    canonical = {k.lower(): k for k in _HEADER_KEYS}
    for token in tokens:
        if not token:
            warns.add("header_syntax", "empty header field (';;')")
            continue
        key, eq, value = token.partition("=")
        if not eq:
            warns.add("header_syntax", f"header field {_short(token)} has no '='")
            continue
        if key not in _HEADER_KEYS and key.lower() in canonical:
            warns.add("header_case", f"header field {key!r} read as {canonical[key.lower()]!r}")
            key = canonical[key.lower()]
        if key not in _HEADER_KEYS:
            warns.add("header_unknown", f"{key}={_short(value)} kept")
            extra.append((key, value))
        elif key in head:
            warns.add("header_duplicate", f"{key} twice ({head[key]!r} kept, {_short(value)} ignored)")
        else:
            head[key] = value
    missing = [k for k in ("ST", "CN", "PW", "MN") if k not in head]
    if missing:
        warns.add("header_missing", f"{', '.join(missing)} missing")

    qn, qn_sent = head.get("QN"), None
    if qn is not None and not _RE_QN.fullmatch(qn):
        if _RE_QN_EPOCH_MS.fullmatch(qn):
            qn_sent, qn = qn, qn_from_epoch_ms(int(qn), tz)
            warns.add("qn_epoch_ms", f"QN={qn_sent} is a millisecond epoch; read as {qn} ({tz})")
        else:
            warns.add("qn_format", f"QN={_short(qn)} is not 17 digits; kept as sent")
    st = head.get("ST", "")
    if "ST" in head and not _RE_ST.fullmatch(st):
        if _RE_ST3.fullmatch(st):
            warns.add("st_3_digits", f"ST={st} has 3 digits (HJ 212-2017: 2)")
        else:
            warns.add("st_format", f"ST={_short(st)} is not 2 digits")
    cn = head.get("CN", "")
    if "CN" in head and not _RE_CN.fullmatch(cn):
        warns.add("cn_format", f"CN={_short(cn)} is not 4 digits")

    flag: int | None = None
    if "Flag" in head:
        if _RE_INT.fullmatch(head["Flag"]) and int(head["Flag"]) <= 255:
            flag = int(head["Flag"])
        else:
            warns.add("flag_format", f"Flag={_short(head['Flag'])} is not a number 0..255; ignored")
    pnum: int | None = None
    pno: int | None = None
    if "PNUM" in head or "PNO" in head:
        a, b = head.get("PNUM", ""), head.get("PNO", "")
        if _RE_INT.fullmatch(a) and _RE_INT.fullmatch(b) and 1 <= int(b) <= int(a):
            pnum, pno = int(a), int(b)
        else:
            warns.add("split_format", f"PNUM={_short(a)} PNO={_short(b)} unusable; read as a whole packet")

    return Packet(st=st, cn=cn, pw=head.get("PW", ""), mn=head.get("MN", ""), qn=qn, flag=flag, pnum=pnum,
                  pno=pno, cp=_parse_cp_tolerant(cp_text, warns), qn_sent=qn_sent, extra=tuple(extra),
                  warnings=warns.result())


def _parse_cp_tolerant(text: str, warns: _Warnings) -> tuple[CpItem, ...]:
    if not text:
        return ()
    if "&&" in text:
        warns.add("cp_malformed", "'&&' inside CP")
    items: list[CpItem] = []
    for item_text in text.split(";"):
        if not item_text:
            warns.add("cp_malformed", "empty CP item (';;' or a trailing ';')")
            continue
        item: list[tuple[str, str]] = []
        for token in item_text.split(","):
            key, eq, value = token.partition("=")
            if not eq or not key:
                warns.add("cp_malformed", f"CP field {_short(token)} is not key=value; skipped")
                continue
            item.append((key, value))
        if item:
            items.append(tuple(item))
    return tuple(items)


# --- a TCP byte stream -------------------------------------------------------------------

@dataclass(frozen=True)
class Decoded:
    """One frame cut from a stream: the packet, or why it is not one."""

    raw: bytes
    packet: Packet | None
    error: DecodeError | None


class StreamDecoder:
    """Cuts a TCP byte stream into frames: packets may arrive in pieces or several at once.
    `strict` and `tz` are passed to `decode`.

    A frame runs from `##` to the next CRLF (a data segment never holds CRLF). Bytes before
    `##` are reported as garbage; a stream without CRLF for longer than any packet can be is
    dropped as too long, so a babbling peer cannot fill memory.
    """

    def __init__(self, max_frame: int = _MAX_LENGTH_FIELD + _OVERHEAD, *, strict: bool = True,
                 tz: str = DEFAULT_TZ):
        self._buf = bytearray()
        self._max = max_frame
        self._strict = strict
        self._tz = tz

    def feed(self, data: bytes) -> list[Decoded]:
        self._buf += data
        out: list[Decoded] = []
        while self._buf:
            start = self._buf.find(b"##")
            if start < 0:
                # Keep a trailing '#' that may begin the next packet.
                keep = 1 if self._buf.endswith(b"#") else 0
                junk = bytes(self._buf[:len(self._buf) - keep])
                if junk:
                    out.append(Decoded(junk, None, DecodeError("garbage", f"{len(junk)} bytes outside a packet")))
                del self._buf[:len(self._buf) - keep]
                break
            if start > 0:
                junk = bytes(self._buf[:start])
                out.append(Decoded(junk, None, DecodeError("garbage", f"{len(junk)} bytes before '##'")))
                del self._buf[:start]
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > self._max:
                    junk = bytes(self._buf)
                    self._buf.clear()
                    out.append(Decoded(junk, None, DecodeError("too_long", f"no CRLF in {len(junk)} bytes")))
                break
            raw = bytes(self._buf[:end + 2])
            del self._buf[:end + 2]
            try:
                out.append(Decoded(raw, decode(raw, strict=self._strict, tz=self._tz), None))
            except DecodeError as exc:
                out.append(Decoded(raw, None, exc))
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


class Reassembler:
    """Collects the parts of split packets; gives back whole packets once complete.

    Incomplete sets are forgotten oldest first beyond `max_pending`, so lost parts cannot
    pile up.
    """

    def __init__(self, max_pending: int = 64):
        self._parts: dict[tuple[str | None, str, str, int], dict[int, Packet]] = {}
        self._max = max_pending

    def add(self, p: Packet) -> Packet | None:
        if p.pnum is None or p.pno is None:
            return p
        key = (p.qn, p.mn, p.cn, p.pnum)
        got = self._parts.setdefault(key, {})
        got[p.pno] = p
        if len(got) == p.pnum:
            del self._parts[key]
            try:
                return reassemble(list(got.values()))
            except ValueError:
                return None
        while len(self._parts) > self._max:
            del self._parts[next(iter(self._parts))]
        return None
