"""Load the YAML config and turn every problem into `FILE:LINE:COL: dotted.path: reason`.

A technician on a crane reads these lines on a small screen, so each one names the exact
key (its line in the file) and, for typos, the nearest valid key.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, RootModel, ValidationError

from detectors.registry import unknown_message
from edge_agent.config.checks import cross_check
from edge_agent.config.detectors import DetectorsConfig
from edge_agent.config.root import AgentConfig

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    col: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {self.reason}"


class ConfigError(Exception):
    """Raised with every problem found in one file (not just the first)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _index_positions(node: yaml.Node, loc: Loc, out: dict[Loc, tuple[int, int]], dups: list[Problem],
                     file: str) -> None:
    """Record the (line, col) of every key, and of every list item, by its path."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*loc, key)
            pos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                dups.append(Problem(file, pos[0], pos[1], _dotted(child), "duplicate key (the later one would win)"))
            seen.add(key)
            out[child] = pos
            _index_positions(value_node, child, out, dups, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*loc, i)
            out.setdefault(child, (item.start_mark.line + 1, item.start_mark.column + 1))
            _index_positions(item, child, out, dups, file)


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(root)"


def _position(loc: Loc, positions: dict[Loc, tuple[int, int]]) -> tuple[int, int]:
    """The line of the offending key, or of its nearest ancestor that is in the file."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in positions:
            return positions[loc[:n]]
    return (1, 1)


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """Walk the model classes along a path, to list the keys valid at that point.

    `loc` is pydantic's: a discriminated union (the `detectors:` entries) puts the chosen tag
    into the path right after the entry's key, which picks the member here.
    """
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, RootModel):
            current = _unwrap(current.model_fields["root"].annotation)
        if isinstance(part, str) and _union_members(current):
            current = _union_members(current).get(part)
            continue
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            if isinstance(part, int):
                continue
            if typing.get_origin(current) is dict:
                current = typing.get_args(current)[1]
                continue
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _union_members(tp: Any) -> dict[str, type[BaseModel]]:
    """Tag -> member of a union discriminated on `type` (empty for anything else)."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return {}
    out: dict[str, type[BaseModel]] = {}
    for member in typing.get_args(tp):
        if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
            default = member.model_fields["type"].default
            if isinstance(default, str):
                out[default] = member
    return out


def _without_tags(loc: Loc) -> Loc:
    """The path as written in the file: drop the union tag pydantic inserts after a `detectors:` entry."""
    if len(loc) >= 3 and loc[0] == "detectors" and isinstance(loc[2], str):
        value_type = typing.get_args(DetectorsConfig.model_fields["root"].annotation)[1]
        members = _union_members(value_type)
        if loc[2] in members:
            return (*loc[:2], *loc[3:])
    return loc


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X, list[X] -> X, Annotated[X, ...] -> X; a union discriminated on `type` stays."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif _union_members(tp):
            return tp
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        elif origin in (list, tuple, set, frozenset):
            tp = typing.get_args(tp)[0]
        else:
            return tp


def _reason(err: dict[str, Any], loc: Loc) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(AgentConfig, loc[:-1])
        key = str(loc[-1])
        hint = ""
        if parent is not None:
            valid = list(parent.model_fields)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
        return f"unknown key '{key}'{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag", "")
        return unknown_message(str(tag))
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and not isinstance(err["input"], (dict, list)) and repr(err["input"]) not in msg:
        msg += f" (got {err['input']!r})"
    return msg


def load_config(path: str | Path) -> AgentConfig:
    """Parse and validate; raises ConfigError listing every problem with its line."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(name, 0, 0, "(file)", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(name, 0, 0, "(file)", f"not UTF-8 text: {exc}")]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = " ".join(x for x in (exc.context, exc.problem) if x)
        if exc.context_mark is not None and exc.problem_mark is not None and (
            exc.context_mark.line != exc.problem_mark.line
        ):
            reason += f" (opened at line {exc.context_mark.line + 1})"
        raise ConfigError([Problem(name, line, col, "(yaml)", f"invalid YAML: {reason}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(name, 1, 1, "(yaml)", f"invalid YAML: {exc}")]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(name, 1, 1, "(root)", "the file must be a mapping of sections")])

    positions: dict[Loc, tuple[int, int]] = {}
    problems: list[Problem] = []
    if root is not None:
        _index_positions(root, (), positions, problems, name)
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc: Loc = tuple(err["loc"])
            where = _without_tags(loc)
            if err["type"] == "union_tag_invalid":
                where = (*where, "type")  # the tag's own line, where it was written
            line, col = _position(where, positions)
            problems.append(Problem(name, line, col, _dotted(where), _reason(dict(err), loc)))
        problems.sort(key=lambda p: (p.line, p.col))
        raise ConfigError(problems) from None
    for finding in cross_check(config):
        line, col = _position(finding.loc, positions)
        problems.append(Problem(name, line, col, _dotted(finding.loc), finding.reason))
    if problems:
        problems.sort(key=lambda p: (p.line, p.col))
        raise ConfigError(problems)
    return config
