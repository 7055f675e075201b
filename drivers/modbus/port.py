"""Open a serial port for Modbus RTU, turning OS errors into a sentence a technician can act on."""

from __future__ import annotations

import errno
import os

import serial

from drivers.modbus.rtu import PortError

PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


def open_port(path: str, baud: int = 9600, parity: str = "N", stopbits: int = 1,
              timeout: float = 0.5) -> serial.Serial:
    """Open `path` 8-bit, exclusively (a second master on one RS-485 bus garbles both).

    Raises PortError whose text says what to do: missing adapter, busy port, permissions.
    """
    if not os.path.exists(path):
        raise PortError(f"{path}: no such port (is the USB-RS485 adapter plugged in? see `ls /dev/ttyUSB*`)")
    try:
        return serial.Serial(
            port=path,
            baudrate=baud,
            bytesize=serial.EIGHTBITS,
            parity=PARITY[parity.upper()],
            stopbits=serial.STOPBITS_TWO if stopbits == 2 else serial.STOPBITS_ONE,
            timeout=timeout,
            write_timeout=max(1.0, timeout),
            exclusive=True,
        )
    except KeyError:
        raise PortError(f"{path}: parity must be N, E or O (got {parity!r})") from None
    except (serial.SerialException, OSError, ValueError) as exc:
        raise PortError(describe_open_error(path, exc)) from None


def describe_open_error(path: str, exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return f"{path}: no such port (is the USB-RS485 adapter plugged in?)"
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return f"{path}: permission denied (run as root or add the user to the 'dialout' group)"
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in text.lower() or "busy" in text.lower():
        return (f"{path}: port is busy — another program holds it (is edge-agent running? "
                f"stop it with `systemctl stop edge-agent` first)")
    return f"{path}: cannot open: {text}"
