"""The canonical form of a JSON value: the exact bytes that get signed and hashed.

It is RFC 8785 (JSON Canonicalization Scheme, "JCS"), so a bureau written in any language
can reproduce it with a JCS library:

* objects: members sorted by their keys' UTF-16 code units, no whitespace anywhere;
* strings: UTF-8, only `"`, `\\` and U+0000..U+001F escaped (`\\b \\t \\n \\f \\r` short,
  the rest as `\\u00xx`, lower-case hex); everything else literal (no `\\u` for Mandarin);
* numbers: the ECMAScript Number-to-String form (`4.5`, `1e+30`, `0.002`, `1e-7`);
  integers must lie within +-(2**53 - 1), NaN and infinities are not allowed;
* literals: `true`, `false`, `null`.

Object keys must be strings. A value outside this model raises `CanonicalError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1


class CanonicalError(ValueError):
    """The value has no canonical form (a float NaN, a huge integer, a non-string key...)."""


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 bytes of `value` (dicts, lists/tuples, str, int, float, bool, None)."""
    parts: list[str] = []
    _write(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from "\ud800" in the input
        raise CanonicalError(f"string is not valid Unicode: {exc.reason}") from None


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(encode_basestring(value))
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalError(f"integer {value} is outside +-(2**53 - 1)")
        out.append(str(value))
    elif isinstance(value, float):
        out.append(format_number(value))
    elif isinstance(value, Mapping):
        keys = list(value)
        if not all(isinstance(k, str) for k in keys):
            raise CanonicalError("object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(encode_basestring(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalError(f"{type(value).__name__} has no JSON form")


def format_number(x: float) -> str:
    """ECMAScript's Number::toString for a finite double (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(x):
        raise CanonicalError(f"{x} is not a finite number")
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    # repr() gives the shortest digits that round-trip, which is what ECMAScript uses too.
    _s, digit_tuple, exp = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exp, int)
    exp += len(digit_tuple) - len(digits)
    k = len(digits)
    n = exp + k  # the value is 0.DIGITS * 10**n
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * -n + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + text


def loads_strict(data: bytes | str) -> Any:
    """Parse JSON, refusing what a canonical signer could not have meant: duplicate keys, NaN.

    Raises ValueError (json.JSONDecodeError, UnicodeDecodeError are ValueErrors too).
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
