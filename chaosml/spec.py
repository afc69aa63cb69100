"""Loading YAML specs into pydantic models with every problem reported by file, line and field.

``read_yaml`` parses a file and keeps the line of every key and list item; ``validate_spec`` validates
the data against a pydantic model and raises one ``SpecError`` listing each problem as
``file:line: field.path: what was expected``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from chaosml._net import split_address
from chaosml.errors import SpecError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


class FieldError(ValueError):
    """Raised by a validator to point at a field below the one it validates."""

    def __init__(self, loc: Loc, message: str) -> None:
        self.loc = loc
        super().__init__(message)


def one_of(kind: str, value: str, known: Iterable[str]) -> str:
    """``value`` if it is a name in ``known``, else ``ValueError`` listing them."""
    names = list(known)
    if value not in names:
        raise ValueError(f"unknown {kind} {value!r} (expected one of {', '.join(names)})")
    return value


def validate_spec(
    data: dict[str, Any],
    model: type[M],
    *,
    path: Path,
    lines: dict[Loc, int],
    context: dict[str, Any] | None = None,
    tags: Collection[str] = (),
) -> M:
    """``data`` as ``model``; ``SpecError`` with every problem. ``tags``: the tag values of the
    model's discriminated unions, which pydantic puts in an error's location."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = [error_line(path, lines, error, tags) for error in exc.errors()]
        raise SpecError(sorted(set(problems), key=by_line)) from exc


def read_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse a YAML file; return the data and the 1-based line of every key and item by path."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SpecError([f"{path}: file not found"]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{path}: cannot read: {exc}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None:
            problem = f"{problem} ({context} on line {context_mark.line + 1})"
        raise SpecError([f"{path}{line}: invalid YAML: {problem}"]) from exc
    lines: dict[Loc, int] = {}
    duplicates: list[str] = []
    if node is not None:
        _index(node, (), lines, duplicates, path)
    if duplicates:
        raise SpecError(duplicates)
    return data, lines


def _index(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], duplicates: list[str], path: Path
) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                duplicates.append(
                    f"{path}:{key.start_mark.line + 1}: {dotted((*loc, name))}: duplicate key"
                )
            seen.add(name)
            _index(value, (*loc, name), lines, duplicates, path)
            lines[(*loc, name)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, (*loc, index), lines, duplicates, path)


def line_of(lines: dict[Loc, int], loc: Sequence[str | int], tags: Collection[str] = ()) -> int:
    """The line of the longest prefix of ``loc`` that the file has (pydantic adds union tags)."""
    known = tuple(part for part in loc if isinstance(part, int) or not _is_tag(part, tags))
    for end in range(len(known), -1, -1):
        if known[:end] in lines:
            return lines[known[:end]]
    return 1


def error_line(path: Path, lines: dict[Loc, int], error: Any, tags: Collection[str] = ()) -> str:
    """One pydantic error as ``file:line: field.path: what was expected``."""
    loc = tuple(part for part in error["loc"] if isinstance(part, int) or not _is_tag(part, tags))
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        loc = (*loc, *cause.loc)
    field = dotted(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "union_tag_invalid":
        ctx = error["ctx"]
        message = (
            f"unknown {ctx['discriminator'].strip(chr(39))} {ctx['tag']!r} "
            f"(expected one of {ctx['expected_tags'].replace(chr(39), '')})"
        )
    elif kind == "missing":
        message = "required key is missing"
    else:
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if error.get("input") is not None and kind not in ("value_error", "assertion_error"):
            message = f"{message}, got {error['input']!r}"
    return f"{path}:{line_of(lines, loc, tags)}: {field}: {message}"


TAGS = {"str", "int", "float", "bool", "list[str]", "function-after"}


def _is_tag(part: str, tags: Collection[str]) -> bool:
    return "[" in part or part in TAGS or part in tags


def dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def by_line(problem: str) -> tuple[int, str]:
    parts = problem.split(":")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0, problem)


def _address(value: str) -> str:
    text = value.removeprefix("http://").rstrip("/")
    split_address(text)
    return text


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


Url = Annotated[str, AfterValidator(_url)]  # http:// or https://
Address = Annotated[str, AfterValidator(_address)]  # host:port
