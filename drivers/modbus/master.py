"""One Modbus RTU master on one serial port: send a request, collect the answer, classify faults.

Bytes are read until a CRC-valid answer is found, the line falls silent after some bytes
(the frame is over: decide now instead of waiting out the timeout), or the deadline passes.
Any OS-level failure of the port becomes PortError so the caller can close and reopen it.
"""

from __future__ import annotations

import termios
import time

import serial

from drivers.modbus.port import open_port
from drivers.modbus.rtu import (
    Garbage,
    PortError,
    Request,
    decode_response,
    frame_complete,
    read_request,
    write_request,
)

MAX_BUFFER = 512  # more than this without a valid frame is noise, not a late answer


def char_time(baud: int) -> float:
    return 11.0 / baud  # start + 8 data + parity/stop + stop bits, worst case


class RtuMaster:
    """Owns one open port. Not thread-safe: one bus thread uses it."""

    def __init__(self, port: serial.Serial, gap_s: float = 0.05):
        self.port = port
        baud = int(getattr(port, "baudrate", 9600) or 9600)
        self.gap_s = max(gap_s, 3.5 * char_time(baud))
        # USB adapters deliver bytes in chunks up to ~16 ms apart; never call that silence.
        self.silence_s = max(0.03, 4 * char_time(baud))
        self._last_io = 0.0

    @classmethod
    def open(cls, path: str, baud: int = 9600, parity: str = "N", stopbits: int = 1,
             gap_s: float = 0.05) -> RtuMaster:
        return cls(open_port(path, baud, parity, stopbits), gap_s)

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass

    def read_registers(self, address: int, function: int, register: int, count: int,
                       timeout: float = 0.5) -> list[int]:
        req = read_request(address, function, register, count)
        return decode_response(req, self.transact(req, timeout))

    def write_register(self, address: int, register: int, value: int, timeout: float = 0.5) -> None:
        req = write_request(address, register, value)
        decode_response(req, self.transact(req, timeout))

    def transact(self, req: Request, timeout: float) -> bytes:
        """Send `req`, return whatever came back (maybe nothing); PortError if the port failed."""
        wait = self._last_io + self.gap_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            self.port.reset_input_buffer()  # a late answer to an earlier request is not this one's
            self.port.write(req.frame)
            self.port.flush()
            return self._collect(req, timeout)
        except (serial.SerialException, OSError, termios.error) as exc:
            raise PortError(f"{self.port.port}: port failed: {exc}") from None
        finally:
            self._last_io = time.monotonic()

    def _collect(self, req: Request, timeout: float) -> bytes:
        buf = bytearray()
        deadline = time.monotonic() + timeout
        last_byte = 0.0
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return bytes(buf)
            if buf and now - last_byte >= self.silence_s and len(buf) >= 5:
                return bytes(buf)  # the line went quiet: that was the whole answer
            self.port.timeout = min(remaining, self.silence_s) if buf else remaining
            chunk = self.port.read(max(1, self.port.in_waiting))
            if chunk:
                buf += chunk
                last_byte = time.monotonic()
                if frame_complete(req, buf):
                    return bytes(buf)
                if len(buf) > MAX_BUFFER:
                    raise Garbage(f"{len(buf)} bytes of noise without a valid frame")
