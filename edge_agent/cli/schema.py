"""`edge-agent schema`: the JSON Schema of the config, for editors that complete YAML."""

from __future__ import annotations

import argparse
import json

from edge_agent.config import AgentConfig

NAME = "schema"
HELP = "print the config's JSON Schema (for YAML completion in an editor)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--indent", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    schema = AgentConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edge-agent config"
    print(json.dumps(schema, indent=args.indent, ensure_ascii=False))
    return 0
