"""Load the YAML config and turn every problem into `FILE:LINE:COL: dotted.path: reason`.

A technician on a crane reads these lines on a small screen, so each one names the exact
key (its line in the file) and, for typos, the nearest valid key.

The file is also untrusted input to `check-config`, which systemd runs before every start:
whatever it holds, loading ends in a config or in such lines, in well under a second. So the
file is read only up to MAX_FILE_BYTES, nesting stops at MAX_DEPTH, aliases may not refer to
a node that contains them and may not expand the document past MAX_VALUES values (a
"billion laughs" file), and a value PyYAML cannot construct (`!!float abc`, `2026-02-30`, a
5,000-digit number) is reported at its line like any other mistake.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, RootModel, ValidationError

from detectors.registry import unknown_message
from edge_agent.config.checks import Finding, Severity, cross_check
from edge_agent.config.detectors import DetectorsConfig
from edge_agent.config.root import AgentConfig

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

# Limits, each far above a real config and each keeping the worst file well under a second on a
# PC: 0.07 s of CPU with libyaml's parser, 0.5 s with PyYAML's pure-Python one (about 1 MB/s, the
# fallback where PyYAML was built without libyaml); a Pi is several times slower.
MAX_FILE_BYTES = 256 * 1024  # config/example.yaml, every section commented, is 11 kB
MAX_DEPTH = 64  # a real config nests about 6 deep
MAX_VALUES = 10_000  # values after expanding every alias; config/example.yaml has about 250


@dataclass(frozen=True)
class Problem:
    """One line for the technician: an error, or a warning (valid, but something will not work).

    Printed as `FILE:LINE:COL: dotted.path: reason`, a warning as `FILE:LINE:COL: warning:
    dotted.path: reason` (the form compilers use, which editors jump to). No file means the
    config did not come from one (the demo's, a test's): then only path and reason.
    """

    file: str
    line: int
    col: int
    path: str
    reason: str
    severity: Severity = "error"

    def __str__(self) -> str:
        mark = "warning: " if self.severity == "warning" else ""
        where = f"{self.file}:{self.line}:{self.col}: " if self.file else ""
        return f"{where}{mark}{_printable(self.path)}: {_printable(self.reason)}"

    def as_json(self) -> dict[str, Any]:
        """For the retained status: the key, the reason, and its line in the file when known."""
        where = {"line": self.line, "col": self.col} if self.file and self.line else {}
        return {"path": self.path, "reason": self.reason, **where}


@dataclass(frozen=True)
class Loaded:
    """A valid config and the warnings about it (each with its line)."""

    config: AgentConfig
    warnings: list[Problem]


class ConfigError(Exception):
    """Raised with every problem found in one file (not just the first)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> str:
    """One line of plain text: a control character (a key may hold one, escaped) shows as \\xNN."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


if typing.TYPE_CHECKING:
    _LoaderBase = yaml.SafeLoader
else:
    _LoaderBase = object


class _Limits(_LoaderBase):
    """Limits on depth and alias expansion, and marked constructor errors, over PyYAML's composer
    and safe constructor: mixed into a loader with either event source below."""

    byte_offsets = False  # whether a ReaderError's position counts UTF-8 bytes (libyaml) or characters

    def __init__(self, stream: str):
        super().__init__(stream)
        self._start()

    def _start(self) -> None:
        self._depth = 0
        self._values = 0  # values composed so far, counting each alias as the whole subtree it names
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height) with aliases expanded
        self._heights: list[int] = [0]  # the tallest child seen so far, per open node
        self._open: list[str] = []  # anchors of the collections being composed (an alias to one is a loop)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            name = str(event.anchor)
            if name in self._open:
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{name} refers to a node that contains it (a loop)", event.start_mark)
            node = super().compose_node(parent, index)  # an undefined alias fails here, marked
            values, height = self._sizes.get(id(node), (1, 1))
            if self._depth + height > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{name} nests the document deeper than {MAX_DEPTH} levels",
                    event.start_mark)
            self._count(values, event.start_mark,
                        f"alias *{name} expands the document past {MAX_VALUES} values (a 'billion laughs' "
                        "file?); write the values out, or use fewer aliases")
            self._heights[-1] = max(self._heights[-1], height)
            return node
        event = self.peek_event()
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                              event.start_mark)
        anchor = getattr(event, "anchor", None)
        start = self._values
        self._depth += 1
        self._heights.append(0)
        if anchor is not None:
            self._open.append(str(anchor))
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            height = self._heights.pop() + 1
            if anchor is not None:
                self._open.pop()
        self._count(1, event.start_mark, f"the document has more than {MAX_VALUES} values")
        self._sizes[id(node)] = (self._values - start, height)
        self._heights[-1] = max(self._heights[-1], height)
        return node

    def _count(self, values: int, mark: yaml.Mark, reason: str) -> None:
        self._values += values
        if self._values > MAX_VALUES:
            raise yaml.composer.ComposerError(None, None, reason, mark)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """As PyYAML's, but a value it cannot build (ValueError, ...) becomes an error at its node."""
        queued = len(self.state_generators)
        try:
            data = super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            raise _value_error(node, exc) from None
        if len(self.state_generators) > queued:  # a collection finishes later, outside this frame
            self.state_generators[-1] = typing.cast(Any, _guarded(self.state_generators[-1], node))
        return data


class _PurePythonLoader(_Limits, yaml.SafeLoader):
    """PyYAML's pure-Python scanner and parser: about 1 MB/s, the slowest accepted file in ~0.5 s on a PC."""


if yaml.__with_libyaml__:  # PyYAML's wheels (x86-64 and aarch64) bundle libyaml

    from yaml._yaml import CParser

    class _LibyamlLoader(_Limits, yaml.composer.Composer, CParser,
                         yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """libyaml's scanner and parser (C, ~7x faster) under PyYAML's own composer, so the limits
        still see every node as it is built. libyaml follows the YAML spec on tabs: one between
        tokens (before a comment, after a colon) is whitespace, where PyYAML's scanner refuses it;
        a tab in indentation is an error with both."""

        byte_offsets = True

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            _Limits._start(self)

    _BoundedLoader: type[_Limits] = _LibyamlLoader
else:  # a PyYAML built without libyaml: the same results, slower
    _BoundedLoader = _PurePythonLoader


def _guarded(generator: Generator[Any, None, None], node: yaml.Node) -> Generator[Any, None, None]:
    try:
        yield from generator
    except yaml.YAMLError:
        raise
    except Exception as exc:
        raise _value_error(node, exc) from None


class _ValueProblem(yaml.constructor.ConstructorError):
    """A scalar PyYAML could not turn into a value; its `problem` is the whole reason."""


def _value_error(node: yaml.Node, exc: Exception) -> _ValueProblem:
    value = node.value if isinstance(node.value, str) else ""
    shown = value if len(value) <= 40 else f"{value[:20]}... ({len(value)} characters)"
    reason = str(exc).split("\n")[0]
    if "integer string conversion" in reason:
        reason = f"a number of {len(value)} digits is too long for any setting"
    elif isinstance(exc, AttributeError) and node.tag.endswith(":timestamp"):
        reason = "not a timestamp (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"
    return _ValueProblem(None, None, f"invalid value {shown}: {reason}" if shown else f"invalid value: {reason}",
                         node.start_mark)


_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # what PyYAML's marks count as a line break


def _line_col(text: str, pos: int) -> tuple[int, int]:
    """1-based line and column of a character, counting line breaks as PyYAML's marks do."""
    line, start = 1, 0
    for m in _LINE_BREAK.finditer(text[:pos]):
        line, start = line + 1, m.end()
    return line, pos - start + 1


def _index_positions(node: yaml.Node, loc: Loc, out: dict[Loc, tuple[int, int]], dups: list[Problem],
                     file: str, marks: dict[tuple[int, int], Loc] | None = None) -> None:
    """Record the (line, col) of every key, and of every list item, by its path.

    `marks` maps where each node starts to its path, to name the key of a value PyYAML cannot
    construct. The walk expands aliases: the loader has bounded both their depth and their size.
    """
    if marks is not None:
        marks.setdefault((node.start_mark.line, node.start_mark.column), loc)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            child = (*loc, key)
            pos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                dups.append(Problem(file, pos[0], pos[1], _dotted(child), "duplicate key (the later one would win)"))
            seen.add(key)
            out[child] = pos
            if marks is not None:
                marks.setdefault((key_node.start_mark.line, key_node.start_mark.column), child)
            _index_positions(value_node, child, out, dups, file, marks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*loc, i)
            out.setdefault(child, (item.start_mark.line + 1, item.start_mark.column + 1))
            _index_positions(item, child, out, dups, file, marks)


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{_short(part)}]" if isinstance(part, int) else (f".{_short(part)}" if text else _short(part))
    return text or "(root)"


def _short(value: Any, limit: int = 60) -> str:
    """str() for a message: a 5,000-digit number or a 1 MB string is cut, never an exception."""
    try:
        text = value if isinstance(value, str) else repr(value) if not isinstance(value, int) else str(value)
    except ValueError:  # int beyond sys.get_int_max_str_digits()
        return f"<a number of about {int(value.bit_length() * 0.30103) + 1} digits>"
    return text if len(text) <= limit else f"{text[:limit - 20]}... ({len(text)} characters)"


def _position(loc: Loc, positions: dict[Loc, tuple[int, int]]) -> tuple[int, int]:
    """The line of the offending key, or of its nearest ancestor that is in the file."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in positions:
            return positions[loc[:n]]
    return (1, 1)


def _locate(finding: Finding, positions: dict[Loc, tuple[int, int]]) -> tuple[int, int]:
    """The finding's key if written; else the first of its alternatives that is; else the nearest
    written ancestor of the key (a default is about the section that would hold it)."""
    for loc in (finding.loc, *finding.also):
        if loc in positions:
            return positions[loc]
    return _position(finding.loc, positions)


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


def _reason(err: dict[str, Any], loc: Loc, root: type[BaseModel] = AgentConfig) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
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
    if "input" in err and not isinstance(err["input"], (dict, list)):
        shown = _short(err["input"]) if isinstance(err["input"], int) else _short(repr(err["input"]))
        if shown not in msg:
            msg += f" (got {shown})"
    return msg


def _read(path: Path, name: str) -> str:
    """The file's text, read no further than MAX_FILE_BYTES (a device or a huge file cannot hang us)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(name, 0, 0, "(file)", f"cannot read: {exc.strerror or exc}")]) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([Problem(name, 0, 0, "(file)", f"larger than {MAX_FILE_BYTES // 1024} kB; "
                                   "a config is a few kB: is this the right file?")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(name, 0, 0, "(file)", f"not UTF-8 text: {exc}")]) from exc


def _yaml_problem(name: str, text: str, exc: yaml.YAMLError, marks: dict[tuple[int, int], Loc],
                  byte_offsets: bool = False) -> Problem:
    """One line for any error PyYAML raises, at its own position."""
    if isinstance(exc, yaml.reader.ReaderError):
        position = exc.position
        if byte_offsets:
            position = len(text.encode("utf-8")[:position].decode("utf-8", errors="ignore"))
        line, col = _line_col(text, position)
        char = exc.character if isinstance(exc.character, int) else 0
        return Problem(name, line, col, "(yaml)",
                       f"invalid YAML: control character U+{char:04X} is not allowed in a config file; remove it")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        where = marks.get((mark.line, mark.column)) if mark else None
        if isinstance(exc, _ValueProblem):
            return Problem(name, line, col, _dotted(where) if where is not None else "(yaml)", str(exc.problem))
        reason = " ".join(x for x in (exc.context, exc.problem) if x)
        if "exceeded maximum nesting depth" in reason:  # libyaml's own limit (1,000), met while it scans ahead
            reason = f"nested deeper than {MAX_DEPTH} levels"
        elif mark is not None and _char_at(text, mark.line, mark.column) == "\t" and "'\\t'" not in reason:
            reason += " (a tab: YAML indents with spaces only)"  # libyaml's message does not name the character
        if exc.context_mark is not None and exc.problem_mark is not None and (
            exc.context_mark.line != exc.problem_mark.line
        ):
            reason += f" (opened at line {exc.context_mark.line + 1})"
        path = _dotted(where) if isinstance(exc, yaml.constructor.ConstructorError) and where is not None else "(yaml)"
        return Problem(name, line, col, path, f"invalid YAML: {reason}")
    return Problem(name, 1, 1, "(yaml)", f"invalid YAML: {exc}")


def _char_at(text: str, line: int, column: int) -> str:
    """The character at a 0-based YAML mark ('' past the end), breaking lines as PyYAML's marks do."""
    lines = _LINE_BREAK.split(text)
    return lines[line][column:column + 1] if 0 <= line < len(lines) else ""


def _parse(name: str, text: str) -> tuple[Any, dict[Loc, tuple[int, int]], list[Problem]]:
    """(data, key positions, duplicate keys), or ConfigError with the line of the problem."""
    loader_class = _BoundedLoader
    positions: dict[Loc, tuple[int, int]] = {}
    dups: list[Problem] = []
    marks: dict[tuple[int, int], Loc] = {}
    try:
        loader = loader_class(text)  # the reader checks every character here
        try:
            root = loader.get_single_node()
            if root is not None:
                _index_positions(root, (), positions, dups, name, marks)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(name, text, exc, marks, loader_class.byte_offsets)]) from None
    except RecursionError:  # cannot happen within MAX_DEPTH; never a traceback all the same
        raise ConfigError([Problem(name, 1, 1, "(yaml)", "invalid YAML: nested too deeply")]) from None
    return data, positions, dups


def load_config(path: str | Path) -> AgentConfig:
    """Parse and validate; raises ConfigError listing every problem with its line."""
    return load_checked(path).config


def config_warnings(config: AgentConfig) -> list[Problem]:
    """The warnings about a config that did not come from a file (no lines: line 0)."""
    return [Problem("", 0, 0, _dotted(f.loc), f.reason, f.severity) for f in cross_check(config) if f.is_warning]


def load_model(path: str | Path, model: type[M]) -> tuple[M, dict[Loc, tuple[int, int]]]:
    """Any config model from a YAML file, with the same bounds and `FILE:LINE:COL: path: reason` errors
    (the agent's config, and the bureau's): the model and the position of every key."""
    path = Path(path)
    name = str(path)
    text = _read(path, name)
    data, positions, problems = _parse(name, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(name, 1, 1, "(root)", "the file must be a mapping of sections")])
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc: Loc = tuple(err["loc"])
            where = _without_tags(loc)
            if err["type"] == "union_tag_invalid":
                where = (*where, "type")  # the tag's own line, where it was written
            line, col = _position(where, positions)
            problems.append(Problem(name, line, col, _dotted(where), _reason(dict(err), loc, model)))
        problems.sort(key=lambda p: (p.line, p.col))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config, positions


def load_checked(path: str | Path) -> Loaded:
    """Parse and validate; the config and its warnings, or ConfigError listing every error with its line."""
    config, positions = load_model(path, AgentConfig)
    name = str(path)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for finding in cross_check(config):
        line, col = _locate(finding, positions)
        problem = Problem(name, line, col, _dotted(finding.loc), finding.reason, finding.severity)
        (warnings if finding.is_warning else problems).append(problem)
    if problems:
        problems.sort(key=lambda p: (p.line, p.col))
        raise ConfigError(problems)
    warnings.sort(key=lambda p: (p.line, p.col))
    return Loaded(config, warnings)
