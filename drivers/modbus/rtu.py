"""Modbus RTU frames: build requests, check and decode responses, and name what went wrong.

Library choice: **pymodbus** (already a dependency, pure Python, wheels for the Pi and Jetson,
maintained). We use its PDU codec (request/response classes, `DecodePDU`) and its RTU CRC, so
the wire format is not ours to get wrong. We do *not* use its `ModbusSerialClient`
transaction loop, because on a construction-site bus we must tell faults apart and own the
timing: pymodbus silently drops a frame with a bad CRC and then reports a timeout, retries on
its own (hiding the failures from health counts), closes the port after `retries + 3`
misses, and its API moved between 3.x releases (`slave=` -> `device_id=`). minimalmodbus
would classify errors well but is a new dependency and couples framing to its own serial
handling. So the transaction (write, read with deadline and silence detection, hunt for the
frame in noise) lives in `master.py` on plain pyserial, and this module says *why* a
response is unusable: `Timeout`, `CrcError`, `Garbage`, `ExceptionReply`.

Everything here is a pure function of bytes; the fuzz test drives `decode_response` with
random and mutated frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteSingleRegisterRequest,
)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class ModbusError(Exception):
    """A transaction that produced no usable answer. `kind` keys the health counters."""

    kind = "decode"


class Timeout(ModbusError):
    kind = "timeout"


class CrcError(ModbusError):
    kind = "crc"


class Garbage(ModbusError):
    kind = "garbage"


class ExceptionReply(ModbusError):
    kind = "exception"

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"exception reply {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")


class PortError(ModbusError):
    """The serial port itself failed (missing, busy, vanished): close it and reopen later."""

    kind = "port"


def crc16(data: bytes | bytearray) -> bytes:
    """CRC-16/MODBUS as it goes on the wire (low byte first): init 0xFFFF, poly 0xA001."""
    return FramerRTU.compute_CRC(bytes(data)).to_bytes(2, "big")


def crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == frame[-2:]


_FRAMER = FramerRTU(DecodePDU(is_server=False))


def _frame(pdu: ModbusPDU) -> bytes:
    return _FRAMER.buildFrame(pdu)


@dataclass(frozen=True)
class Request:
    """A request frame and the shape of the answer it calls for."""

    address: int
    function: int
    frame: bytes
    response_len: int  # bytes of a normal answer, CRC included
    register: int
    count: int


def read_request(address: int, function: int, register: int, count: int) -> Request:
    """FC 03 (holding) or FC 04 (input) registers."""
    cls = {3: ReadHoldingRegistersRequest, 4: ReadInputRegistersRequest}.get(function)
    if cls is None:
        raise ValueError(f"function {function} is not a register read (3 or 4)")
    if not 1 <= count <= 125:
        raise ValueError("count must be 1..125")
    frame = _frame(cls(address=register, count=count, dev_id=address))
    return Request(address, function, frame, 5 + 2 * count, register, count)


def write_request(address: int, register: int, value: int) -> Request:
    """FC 06: write one holding register; a correct answer echoes the request."""
    frame = _frame(WriteSingleRegisterRequest(address=register, registers=[value], dev_id=address))
    return Request(address, 6, frame, 8, register, 1)


def _find_frame(req: Request, buf: bytes | bytearray) -> tuple[int, int] | None:
    """(offset, length) of the first CRC-valid answer to `req` in `buf`, normal or exception."""
    a, fn = req.address, req.function
    for i in range(len(buf) - 4):
        if buf[i] != a:
            continue
        f = buf[i + 1]
        if f == fn:
            n = req.response_len
            if fn in (3, 4) and buf[i + 2] != 2 * req.count:
                continue
        elif f == (fn | 0x80):
            n = 5
        else:
            continue
        if i + n <= len(buf) and crc_ok(buf[i:i + n]):
            return i, n
    return None


def frame_complete(req: Request, buf: bytes | bytearray) -> bool:
    """True once `buf` holds a valid answer: the reader can stop waiting."""
    return _find_frame(req, buf) is not None


def decode_response(req: Request, buf: bytes) -> list[int]:
    """Register words of the answer to `req` found in `buf` (garbage around it is tolerated).

    Raises ExceptionReply, CrcError, Garbage or Timeout (nothing or a cut-off frame); never
    anything else, whatever the bytes.
    """
    found = _find_frame(req, buf)
    if found is None:
        raise _classify(req, buf)
    i, n = found
    pdu_bytes = bytes(buf[i + 1:i + n - 2])
    try:
        pdu = DecodePDU(is_server=False).decode(pdu_bytes)
    except Exception as exc:  # pymodbus raising on a frame we checked is a bug, not a crash
        raise Garbage(f"undecodable frame {buf[i:i + n].hex(' ')}: {exc}") from None
    if pdu is None:
        raise Garbage(f"undecodable frame {buf[i:i + n].hex(' ')}")
    if isinstance(pdu, ExceptionResponse) or pdu.isError():
        raise ExceptionReply(int(pdu.exception_code))
    if req.function == 6:
        if pdu.address != req.register or list(pdu.registers) != list(decode_write_value(req)):
            raise Garbage("write echo does not match the request")
        return list(pdu.registers)
    words = list(pdu.registers)
    if len(words) != req.count:
        raise Garbage(f"asked for {req.count} registers, got {len(words)}")
    return words


def decode_write_value(req: Request) -> list[int]:
    return [int.from_bytes(req.frame[4:6], "big")]


def _classify(req: Request, buf: bytes) -> ModbusError:
    if not buf:
        return Timeout("no reply")
    head = buf[:2]
    starts_right = len(head) == 2 and head[0] == req.address and head[1] in (req.function, req.function | 0x80)
    expected = 5 if len(head) == 2 and head[1] & 0x80 else req.response_len
    if starts_right and len(buf) < expected:
        return Timeout(f"cut-off reply ({len(buf)} of {expected} bytes): {bytes(buf[:16]).hex(' ')}")
    if starts_right and len(buf) >= expected:
        return CrcError(f"CRC mismatch in {bytes(buf[:expected]).hex(' ')}")
    return Garbage(f"{len(buf)} unusable bytes: {bytes(buf[:16]).hex(' ')}{' ...' if len(buf) > 16 else ''}")


# ------------------------------------------------------------------ server side (simulator)

def parse_request(frame: bytes) -> tuple[int, int, int, int] | None:
    """(address, function, register, count-or-value) of an 8-byte FC 03/04/06 request, else None."""
    if len(frame) != 8 or not crc_ok(frame):
        return None
    return frame[0], frame[1], int.from_bytes(frame[2:4], "big"), int.from_bytes(frame[4:6], "big")


def read_response(address: int, function: int, words: list[int]) -> bytes:
    body = bytes([address, function, 2 * len(words)]) + b"".join(w.to_bytes(2, "big") for w in words)
    return body + crc16(body)


def write_response(address: int, register: int, value: int) -> bytes:
    body = bytes([address, 6]) + register.to_bytes(2, "big") + value.to_bytes(2, "big")
    return body + crc16(body)


def exception_response(address: int, function: int, code: int) -> bytes:
    body = bytes([address, function | 0x80, code])
    return body + crc16(body)
