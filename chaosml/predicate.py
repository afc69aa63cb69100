"""The predicate language: safe boolean expressions over the columns of a table.

Slices (``where: "age < 25 and region == 'EU'"``) and payload faults (``where: "sex == 'F'"``) use it.
A predicate is parsed with Python's own parser and then checked against a whitelist of node types,
so nothing in it is ever executed: no attribute access, no calls (but ``isna(col)``/``notna(col)``),
no subscripts, no arithmetic. What it allows:

- comparisons ``== != < <= > >=``, chained (``18 <= age < 25``), between columns and literals;
- ``in`` / ``not in`` with a list of literals;
- ``and`` / ``or`` / ``not`` and parentheses;
- ``isna(col)`` and ``notna(col)``;
- column names (Python identifiers), string, number and boolean literals.

Missing values follow pandas: a missing value is unequal to everything, so ``==``, ``<``, ``in`` and
friends are False for it and ``!=`` and ``not in`` are True; use ``isna(col)`` to select it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import pandas as pd

from chaosml._types import BoolArray
from chaosml.errors import PredicateError

Scalar: TypeAlias = str | int | float | bool
CompareOp: TypeAlias = Literal["==", "!=", "<", "<=", ">", ">="]

FORBIDDEN = "{what} is not allowed in a predicate (allowed: comparisons, and/or/not, in, isna(col))"
UNKNOWN_COLUMN = "unknown column {column!r} (columns: {available})"
TYPE_MISMATCH = "column {column!r} holds {kind}s but is compared with {literal!r}"

_OPS: dict[type[ast.cmpop], CompareOp] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_FUNCTIONS = ("isna", "notna")


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Value:
    value: Scalar


Operand: TypeAlias = Column | Value


@dataclass(frozen=True)
class Compare:
    left: Operand
    op: CompareOp
    right: Operand


@dataclass(frozen=True)
class IsIn:
    column: Column
    values: tuple[Scalar, ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNa:
    column: Column
    negated: bool = False


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: Literal["and", "or"]
    operands: tuple[Node, ...]


Node: TypeAlias = Compare | IsIn | IsNa | Not | BoolOp


@dataclass(frozen=True)
class Predicate:
    """A parsed predicate. ``evaluate`` returns a boolean mask over the rows of a table."""

    text: str
    node: Node

    @property
    def columns(self) -> frozenset[str]:
        return frozenset(_columns(self.node))

    def evaluate(self, table: pd.DataFrame) -> BoolArray:
        missing = sorted(self.columns - set(table.columns))
        if missing:
            raise PredicateError(
                UNKNOWN_COLUMN.format(
                    column=missing[0], available=", ".join(map(str, table.columns))
                )
            )
        return _evaluate(self.node, table)

    def __str__(self) -> str:
        return render(self.node)


def parse_predicate(text: str) -> Predicate:
    """Parse ``text`` into a ``Predicate``; raise ``PredicateError`` for anything outside the language."""
    if not isinstance(text, str) or not text.strip():
        raise PredicateError("a predicate must be a non-empty string")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise PredicateError(f"predicate does not parse: {text!r}") from exc
    except (ValueError, MemoryError, RecursionError) as exc:
        raise PredicateError(f"predicate does not parse: {text!r}") from exc
    try:
        return Predicate(text=text, node=_node(tree.body))
    except RecursionError as exc:
        raise PredicateError("predicate is nested too deeply") from exc


# --- parsing -------------------------------------------------------------------------------------


def _node(expr: ast.expr) -> Node:
    if isinstance(expr, ast.BoolOp):
        op: Literal["and", "or"] = "and" if isinstance(expr.op, ast.And) else "or"
        return BoolOp(op, tuple(_node(value) for value in expr.values))
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.Not):
        return Not(_node(expr.operand))
    if isinstance(expr, ast.Compare):
        return _compare(expr)
    if isinstance(expr, ast.Call):
        return _call(expr)
    raise PredicateError(_forbidden(expr, "as a condition"))


def _compare(expr: ast.Compare) -> Node:
    parts: list[Node] = []
    left = expr.left
    for op, right in zip(expr.ops, expr.comparators, strict=True):
        if isinstance(op, ast.In | ast.NotIn):
            column = _operand(left)
            if not isinstance(column, Column):
                raise PredicateError("the left side of 'in' must be a column")
            parts.append(IsIn(column, _list(right), negated=isinstance(op, ast.NotIn)))
        elif type(op) in _OPS:
            parts.append(Compare(_operand(left), _OPS[type(op)], _operand(right)))
        else:
            raise PredicateError(_forbidden(op, "operator"))
        left = right
    return parts[0] if len(parts) == 1 else BoolOp("and", tuple(parts))


def _call(expr: ast.Call) -> Node:
    func = expr.func
    if not isinstance(func, ast.Name) or func.id not in _FUNCTIONS:
        raise PredicateError(FORBIDDEN.format(what="a function call"))
    if len(expr.args) != 1 or expr.keywords or not isinstance(expr.args[0], ast.Name):
        raise PredicateError(f"{func.id}() takes exactly one column name")
    return IsNa(Column(expr.args[0].id), negated=func.id == "notna")


def _operand(expr: ast.expr) -> Operand:
    if isinstance(expr, ast.Name):
        if expr.id in ("True", "False", "None"):  # pragma: no cover - parsed as Constant by CPython
            raise PredicateError(_forbidden(expr, "operand"))
        return Column(expr.id)
    return Value(_scalar(expr))


def _scalar(expr: ast.expr) -> Scalar:
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub | ast.UAdd):
        inner = _scalar(expr.operand)
        if isinstance(inner, bool) or not isinstance(inner, int | float):
            raise PredicateError("a sign can only precede a number")
        return -inner if isinstance(expr.op, ast.USub) else inner
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str | int | float | bool):
        if isinstance(expr.value, float) and not np.isfinite(expr.value):
            raise PredicateError("numbers in a predicate must be finite")
        return expr.value
    raise PredicateError(_forbidden(expr, "value"))


def _list(expr: ast.expr) -> tuple[Scalar, ...]:
    if not isinstance(expr, ast.List | ast.Tuple):
        raise PredicateError("'in' needs a list of literals, e.g. region in ['EU', 'US']")
    return tuple(_scalar(element) for element in expr.elts)


def _forbidden(node: ast.AST, role: str) -> str:
    names = {
        ast.Attribute: "attribute access",
        ast.Subscript: "subscripting",
        ast.Call: "a function call",
        ast.Lambda: "lambda",
        ast.BinOp: "arithmetic",
        ast.NamedExpr: "assignment",
        ast.Name: "a bare column name",
        ast.Constant: "a bare literal",
        ast.Is: "'is'",
        ast.IsNot: "'is not'",
    }
    what = names.get(type(node), f"{type(node).__name__} {role}")
    if isinstance(node, ast.Constant) and node.value is None:
        what = "None (use isna(col))"
    return FORBIDDEN.format(what=what)


# --- rendering and introspection -----------------------------------------------------------------


def render(node: Node) -> str:
    """The canonical text of a predicate; ``parse_predicate(render(n)).node == n``."""
    if isinstance(node, Compare):
        return f"{_render_operand(node.left)} {node.op} {_render_operand(node.right)}"
    if isinstance(node, IsIn):
        values = ", ".join(repr(value) for value in node.values)
        return f"{node.column.name} {'not in' if node.negated else 'in'} [{values}]"
    if isinstance(node, IsNa):
        return f"{'notna' if node.negated else 'isna'}({node.column.name})"
    if isinstance(node, Not):
        return f"not ({render(node.operand)})"
    return f" {node.op} ".join(
        f"({render(operand)})" if isinstance(operand, BoolOp) else render(operand)
        for operand in node.operands
    )


def _render_operand(operand: Operand) -> str:
    return operand.name if isinstance(operand, Column) else repr(operand.value)


def _columns(node: Node) -> list[str]:
    if isinstance(node, Compare):
        return [op.name for op in (node.left, node.right) if isinstance(op, Column)]
    if isinstance(node, IsIn | IsNa):
        return [node.column.name]
    if isinstance(node, Not):
        return _columns(node.operand)
    return [name for operand in node.operands for name in _columns(operand)]


# --- evaluation ----------------------------------------------------------------------------------


def _evaluate(node: Node, table: pd.DataFrame) -> BoolArray:
    if isinstance(node, Compare):
        return _evaluate_compare(node, table)
    if isinstance(node, IsIn):
        mask = table[node.column.name].isin(list(node.values)).to_numpy(dtype=bool)
        return ~mask if node.negated else mask
    if isinstance(node, IsNa):
        mask = table[node.column.name].isna().to_numpy(dtype=bool)
        return ~mask if node.negated else mask
    if isinstance(node, Not):
        return ~_evaluate(node.operand, table)
    masks = (_evaluate(operand, table) for operand in node.operands)
    result = next(masks).copy()
    for mask in masks:
        if node.op == "and":
            result &= mask
        else:
            result |= mask
    return result


def _value(operand: Operand, table: pd.DataFrame) -> pd.Series | Scalar:
    return table[operand.name] if isinstance(operand, Column) else operand.value


def _evaluate_compare(node: Compare, table: pd.DataFrame) -> BoolArray:
    for column, other in ((node.left, node.right), (node.right, node.left)):
        if isinstance(column, Column) and isinstance(other, Value):
            _check_kind(table[column.name], column.name, other.value, node.op)
    left, right = _value(node.left, table), _value(node.right, table)
    if not isinstance(left, pd.Series) and not isinstance(right, pd.Series):
        constant = bool(_COMPARE[node.op](pd.Series([left]), right).iloc[0])
        return np.full(len(table), constant)
    try:
        result = _COMPARE[node.op](left, right)
    except TypeError as exc:
        raise PredicateError(f"cannot compare in {render(node)!r}: {exc}") from exc
    return np.asarray(result.fillna(node.op == "!="), dtype=bool)


_COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def column_kind(series: pd.Series) -> str:
    """'number', 'string', 'bool' or 'other', for error messages and literal checks."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return column_kind(pd.Series(dtype.categories))
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_string_dtype(dtype):
        return "string"
    return "other"


def _check_kind(series: pd.Series, name: str, literal: Scalar, op: str) -> None:
    kind = column_kind(series)
    is_number = isinstance(literal, int | float) and not isinstance(literal, bool)
    mismatch = (kind == "number" and isinstance(literal, str)) or (
        kind == "string" and is_number and op not in ("==", "!=")
    )
    if mismatch:
        raise PredicateError(TYPE_MISMATCH.format(column=name, kind=kind, literal=literal))
