"""`edge-agent demo`: a whole simulated site on this machine, no hardware needed."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from edge_agent.cli._common import host_port
from edge_agent.config.logging import LoggingConfig
from edge_agent.logsetup import setup_logging

NAME = "demo"
HELP = "run a simulated site (meters, broker, console view) with no hardware"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for data and evidence")
    parser.add_argument("--mqtt", type=host_port, metavar="HOST:PORT",
                        help="use this broker instead of the embedded one")
    parser.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: run until Ctrl-C)")
    parser.add_argument("--quiet", action="store_true", help="no console view")
    parser.add_argument("--hardware-only", action="store_true",
                        help="run the simulated meters, cameras and broker but not the agent (to try `doctor`)")
    parser.add_argument("--with-console", action="store_true",
                        help="also start the bureau's web console (edge-bureau, pip install -e '.[bureau]') on "
                             "this demo, and print its URL and a login")
    parser.add_argument("--console-port", type=int, default=8080, help="web console port (default 8080)")
    parser.add_argument("--log-level", default="ERROR", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log lines besides the console view (default ERROR)")


def simulated_outputs(out: Path) -> Path:
    """Speaker into a WAV file (ALSA's file plugin) and GPIO on mock pins, set before either starts."""
    import os

    out.mkdir(parents=True, exist_ok=True)
    wav = out.resolve() / "speaker.wav"
    conf = out.resolve() / "asound.conf"
    conf.write_text('pcm.!default { type plug; slave.pcm "speaker_file" }\n'
                    f'pcm.speaker_file {{ type file; slave.pcm "null"; file "{wav}"; format "wav"; perm 0644 }}\n')
    if Path("/usr/share/alsa/alsa.conf").exists():
        os.environ["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{conf}"
    os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")
    return wav


def run(args: argparse.Namespace) -> int:
    setup_logging(LoggingConfig(level=args.log_level, format="text"))
    wav = simulated_outputs(args.out)
    from edge_agent.demo.site import DemoSite

    site = DemoSite(args.out, mqtt=args.mqtt, quiet=args.quiet, hardware_only=args.hardware_only)
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    console = None
    try:
        config = site.start()
        if not args.hardware_only:
            print(f"demo: the speaker plays into {wav}; relays are simulated GPIO pins", flush=True)
        if args.with_console and not args.hardware_only:
            console = start_console(args.out, config.mqtt.host, config.mqtt.port, args.console_port)
        stop.wait(args.duration if args.duration > 0 else None)
    except Exception as exc:
        logging.getLogger("edge_agent").critical("demo failed: %s", exc, exc_info=True)
        return 1
    finally:
        print("demo: stopping", flush=True)
        if console is not None:
            console.terminate()
            try:
                console.wait(10)
            except Exception:
                console.kill()
        site.stop()
    return 0


def start_console(out: Path, host: str, port: int, web_port: int) -> Any:
    """The bureau's console as a separate process: the box never imports (or needs) the bureau."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("bureau") is None or importlib.util.find_spec("uvicorn") is None:
        print("demo: the console is not installed: pip install -e '.[bureau]'", flush=True)
        return None
    return subprocess.Popen([sys.executable, "-m", "bureau", "demo-console", "--mqtt", f"{host}:{port}",
                             "--demo-out", str(out.resolve()), "--port", str(web_port)])
