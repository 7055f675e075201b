"""`edge-agent doctor`: a PASS/FAIL table of everything a box needs, with a hint for each failure."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edge_agent.cli._common import DEFAULT_CONFIG, EXIT_CONFIG, load_checked_or_report
from edge_agent.doctor.checks import FAIL, PASS, Result, all_checks, config_results

NAME = "doctor"
HELP = "check config, meters, cameras, broker, speaker, relays, clock and disk"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=DEFAULT_CONFIG, help="config file")
    parser.add_argument("--actuate", action="store_true", help="also switch each relay on and off")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.CRITICAL)
    loaded = load_checked_or_report(args.config)
    if loaded is None:
        print(f"FAIL  config     {args.config} is not valid (lines above); fix them, then run doctor again")
        return EXIT_CONFIG
    config = loaded.config
    results: list[Result] = config_results(args.config, loaded.warnings)
    for result in results:
        print(_line(result), flush=True)
    for check in all_checks():
        try:
            for result in check(config, args.actuate):
                results.append(result)
                print(_line(result), flush=True)
        except Exception as exc:  # one broken check must not hide the others
            result = Result(check.__name__.removeprefix("check_"), FAIL, f"check crashed: {exc}",
                            "report this as a bug")
            results.append(result)
            print(_line(result), flush=True)
    failed = [r for r in results if r.status == FAIL]
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed" if failed else
          f"\nall {len(results)} checks passed")
    return 1 if failed else 0


def _line(r: Result) -> str:
    text = f"{r.status:<5} {r.name:<18} {r.detail}"
    if r.hint and r.status != PASS:
        text += f"\n{'':<24}-> {r.hint}"
    return text
