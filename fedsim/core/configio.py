"""Loading YAML into validated pydantic models, with errors that point at the file.

The one loader behind scenarios and device profiles: it parses YAML while remembering the
line of every key, applies ``dotted.key=value`` overrides, validates against a pydantic
model, and turns every validation failure into a :class:`~fedsim.core.errors.ConfigError`
naming the file, the line, the dotted path, the bad value and what was expected.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from fedsim.core.errors import ConfigError

__all__ = [
    "Spec", "read_yaml", "parse_yaml", "read_json_object", "validate", "load_model", "apply_overrides", "parse_override",
    "MAX_DEPTH", "MAX_NODES", "MAX_BYTES",
]

M = TypeVar("M", bound=BaseModel)
LineMap = dict[tuple, int]

# Bounds on a YAML document, checked before anything walks it: deeper nesting would
# exhaust Python's stack, and aliases let a few hundred bytes stand for billions of nodes.
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_BYTES = 16 * 2**20
_TOO_DEEP = f"is nested more than {MAX_DEPTH} levels deep; expected flatter YAML"


class Spec(BaseModel):
    """Base of every block of configuration: frozen, unknown keys rejected, numbers finite
    (NaN and infinity are refused wherever a number is meant) and booleans never taken
    for numbers (``size: true`` is not one device)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _numbers_only(field.annotation) and _has_bool(value):
            raise ValueError("expected a number, not a boolean (true/false)")
        return value


def _leaves(tp: Any) -> set:
    args = typing.get_args(tp)
    if not args:
        return {tp}
    return set().union(*(_leaves(a) for a in args))


def _numbers_only(annotation: Any) -> bool:
    """Whether a field holds numbers (or containers of numbers) and never a boolean."""
    leaves = _leaves(annotation)
    if bool in leaves or Any in leaves or not leaves & {int, float}:
        return False
    return not any(isinstance(t, type) and issubclass(t, BaseModel) for t in leaves)


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list | tuple):
        return any(_has_bool(v) for v in value)
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    return False


def _problem(path, line, expected) -> ConfigError:
    return ConfigError(path, [("", line, ConfigError.MISSING, expected)])


def read_yaml(path: str | Path) -> tuple[Any, LineMap]:
    """Parse a YAML file; return the data and a map from key paths to 1-based lines.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 text, not YAML, nested
            deeper than :data:`MAX_DEPTH` or (through aliases) larger than :data:`MAX_NODES`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)  # bounded: /dev/zero is a path too
    except FileNotFoundError:
        raise _problem(path, None, "the file does not exist") from None
    except IsADirectoryError:
        raise _problem(path, None, "is a directory; expected a YAML file") from None
    except OSError as exc:
        raise _problem(path, None, f"cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise _problem(path, None, f"is larger than {MAX_BYTES // 2**20} MiB; expected a configuration file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _problem(path, line, f"is not UTF-8 text (byte {exc.start} is not; is this a binary file?); expected a YAML text file") from None
    return parse_yaml(text, path)


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON file that holds an object (``what`` it should be, for the message).

    Raises:
        ValueError: the file is unreadable, not JSON, or not an object; names the file.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path} cannot be read as {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}; expected an object ({what})")
    return data


def parse_yaml(text: str, file: str | Path | None = None) -> tuple[Any, LineMap]:
    """Parse YAML text (from ``file``, for messages); return the data and its line map."""
    if _bracket_depth(text) > MAX_DEPTH:
        raise _problem(file, None, _TOO_DEEP)
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        lines: LineMap = {}
        data = None
        if node is not None:
            _check_size(node, file)
            data = loader.construct_document(node)  # refuses keys that are lists or mappings
            _collect_lines(node, (), lines)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise _problem(file, line, f"is not valid YAML ({exc.reason}: character {exc.character!r}); is this a binary file?") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = " ".join((getattr(exc, "problem", None) or str(exc)).split())
        raise _problem(file, line, f"is not valid YAML ({problem})") from None
    except RecursionError:
        raise _problem(file, None, _TOO_DEEP) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise _problem(file, None, f"holds a value that cannot be read ({exc})") from None
    except _DuplicateKey as dup:
        raise ConfigError(file, [(dup.path, dup.line, ConfigError.MISSING, "is defined twice in the same mapping; keep one")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def _bracket_depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` in the text, counted before parsing: PyYAML's
    scanner takes time quadratic in flow nesting, so a long run of ``[`` would hang it.
    Brackets inside scalars count too; only an absurd text has 64 unclosed ones."""
    depth = top = 0
    for match in _BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        top = max(top, depth)
    return top


_BRACKETS = re.compile(r"[\[\]{}]")


def _check_size(root: yaml.Node, file) -> None:
    """Refuse documents nested too deeply, or too large once aliases are expanded.

    Sizes and heights are memoised per node, so a shared (aliased) node is measured once
    however often it is referenced: the check is linear in the document's text.
    """
    measured: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()

    def measure(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in measured:
            return measured[key]
        line = node.start_mark.line + 1
        if key in open_:
            raise _problem(file, line, "holds an alias (*name) to a node that contains it; expected plain data")
        open_.add(key)
        children: list = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        size, height = 1, 0
        for child in children:
            child_size, child_height = measure(child)
            size, height = size + child_size, max(height, child_height + 1)
        if height > MAX_DEPTH:
            raise _problem(file, line, _TOO_DEEP)
        if size > MAX_NODES:
            raise _problem(file, line, f"expands (aliases *name included) to more than {MAX_NODES:,} values; expected a smaller document")
        open_.discard(key)
        measured[key] = (size, height)
        return size, height

    measure(root)


class _DuplicateKey(Exception):
    def __init__(self, path: str, line: int) -> None:
        self.path, self.line = path, line


def _collect_lines(node: yaml.Node, prefix: tuple, lines: LineMap) -> None:
    lines[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            if key_node.value in seen:
                # YAML would silently keep the last one; a repeated class is a mistake.
                raise _DuplicateKey(".".join(str(p) for p in prefix + (key_node.value,)), key_node.start_mark.line + 1)
            seen.add(key_node.value)
            key = prefix + (key_node.value,)
            lines[key] = key_node.start_mark.line + 1
            _collect_lines(value_node, key, lines)
            lines[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_lines(item, prefix + (i,), lines)


def _line_for(loc: tuple, lines: LineMap) -> int | None:
    # Pydantic locations use str keys and int indexes, as do the YAML paths; walk up to
    # the closest ancestor that the file spells out (a missing key has no line itself).
    loc = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


# Pydantic adds the union member or validator to error locations; users never wrote them.
_DIST_TAGS = {"constant", "uniform", "normal", "lognormal", "choice"}


def _is_internal(part) -> bool:
    return isinstance(part, str) and ("[" in part or part in _DIST_TAGS)


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys a mapping at ``loc`` (the parent of an unknown key) accepts."""
    import typing

    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) or next(
                (f for f in current.model_fields.values() if f.alias == part), None
            )
            if field is None:
                return None
            current = field.annotation
        else:
            # dict[str, X] or list[X]: the key or index selects an X.
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = args[-1] if args else None
        while typing.get_origin(current) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            members = [a for a in typing.get_args(current) if a is not type(None)]
            current = members[0] if len(members) == 1 else current
            if len(members) != 1:
                break
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(f.alias or name for name, f in current.model_fields.items())
    return None


def _expected(err: dict, model: type[BaseModel] | None = None, loc: tuple = ()) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1]) if model is not None else None
        hint = f"; known keys here: {', '.join(known)}" if known else ""
        return f"is not a known key (check the spelling){hint}"
    if kind == "missing":
        return "is required but missing"
    msg = err["msg"]
    if kind == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind.startswith("literal_error") and "expected" in ctx:
        msg = f"expected one of {ctx['expected']}"
    return "expected: " + msg[0].lower() + msg[1:] if not msg.startswith("expected") else msg


def validate(
    model: type[M],
    data: Any,
    *,
    file: str | Path | None = None,
    lines: LineMap | None = None,
    context: dict | None = None,
    prefix: tuple = (),
) -> M:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` on any problem.

    ``prefix`` is the path of ``data`` inside the file (for nested sections).
    """
    lines = lines or {}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            # Union members show up as extra path parts named after the member type.
            own = tuple(p for p in err["loc"] if not _is_internal(p))
            if err["type"] != "missing":
                own = _written(data, own)
            loc = prefix + own
            path = ".".join(str(p) for p in loc)
            value = ConfigError.MISSING if err["type"] == "missing" else err.get("input")
            problems.append((path, _line_for(loc, lines), value, _expected(err, model, own)))
        raise ConfigError(file, problems) from None


def _written(data: Any, loc: tuple) -> tuple:
    """The part of ``loc`` the user wrote: a bare ``5`` standing for ``{dist: constant,
    value: 5}`` is reported at the field, not at a ``.value`` the file never spells."""
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return loc[:i] if i else loc
    return loc


def load_model(model: type[M], path: str | Path, overrides: list[str] | None = None, context: dict | None = None) -> M:
    """Read a YAML file, apply ``dotted.key=value`` overrides and validate it."""
    data, lines = read_yaml(path)
    if data is None:
        data = {}
    if overrides:
        data = apply_overrides(data, overrides, file=path)
    return validate(model, data, file=path, lines=lines, context=context)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'engine.max_rounds=50'`` -> ``(['engine', 'max_rounds'], 50)``; values are YAML."""
    if "=" not in text:
        raise ConfigError("--set", [(text, None, text, "an override of the form dotted.key=value")])
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("--set", [(key, None, text, "a dotted key such as engine.max_rounds")])
    if not raw.strip():
        return key.split("."), None
    try:
        value, _ = parse_yaml(raw, "--set " + key)
    except ConfigError as exc:
        if exc.problems[0][3].startswith("is not valid YAML"):
            value = raw  # not YAML: the text itself (validation says whether that fits)
        else:
            raise
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str], file: str | Path | None = None) -> dict:
    """Return a copy of ``data`` with each ``dotted.key=value`` set (creating mappings)."""
    import copy

    data = copy.deepcopy(data)
    if not isinstance(data, dict):
        raise ConfigError(file, [("", None, data, "a mapping at the top level")])
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(file, [(where, None, child, f"a mapping, to set '{text}'")])
            node = child
        node[parts[-1]] = value
    return data
