"""What an alerting rule's PromQL query can produce, read from its text without evaluating it: the
label keys its alerts can carry, and the longest range it looks back over.

``label_keys`` follows the labels through the query: an aggregation ``by (a, b)`` keeps ``a`` and
``b``; one without ``by`` keeps none; ``without``, ``topk`` and plain selectors keep the series'
labels (which only Prometheus knows, so the caller's ``series`` says them per metric); binary
operators keep either side's (a superset, never fewer than the alert can have); ``label_replace``
and ``label_join`` add theirs; ``histogram_quantile`` drops ``le``. Anything it cannot follow gives
None: "cannot tell", never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Keys = frozenset[str]
SeriesLabels = Callable[[str], frozenset[str] | None]

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<range>\[[^\]]*\])
    |(?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![\w.])
    |(?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    |(?P<ident>[a-zA-Z_:][\w:]*)
    |(?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=,(){}@])
    """,
    re.VERBOSE,
)
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|[smhdwy])")
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
_KEEP_SERIES = {"topk", "bottomk", "limitk", "limit_ratio"}  # they select series, labels intact
_BINARY = {"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"}
_SCALAR_CALLS = {"time", "vector", "scalar", "pi"}
_UNKNOWN_CALLS = {"absent", "absent_over_time"}  # their labels come from matchers, or nothing
_METRIC = "\0"  # prefix of "the series labels of this metric", resolved at the end


class _CannotTell(Exception):
    pass


def duration_seconds(text: str) -> float:
    """A PromQL duration (``5m``, ``1h30m``, ``500ms``) in seconds."""
    return sum(int(n) * _UNIT[unit] for n, unit in _DURATION.findall(text))


def window_seconds(query: str) -> float | None:
    """The longest range (``[5m]``, a subquery's ``[10m:1m]``) in ``query``, None without one."""
    try:
        tokens = _tokens(query)
    except _CannotTell:
        return None
    ranges = [
        duration_seconds(text[1:-1].split(":")[0]) for kind, text in tokens if kind == "range"
    ]
    return max(ranges, default=None)


def label_keys(query: str, series: SeriesLabels) -> frozenset[str] | None:
    """The label keys an alert of ``query`` can carry (the rule's own labels not included), or
    None when they cannot be told. ``series(metric)``: the label keys of that metric's series."""
    try:
        parser = _Parser(_tokens(query))
        keys = parser.expr()
        if parser.position != len(parser.tokens):
            return None
    except (_CannotTell, IndexError):
        return None
    found: set[str] = set()
    for key in keys:
        if key.startswith(_METRIC):
            labels = series(key[1:])
            if labels is None:
                return None
            found |= labels
        else:
            found.add(key)
    return frozenset(found - {"__name__"})


def _tokens(query: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(query):
        found = _TOKEN.match(query, position)
        if found is None or found.lastgroup is None:
            raise _CannotTell(query[position:])
        if found.lastgroup != "space":
            tokens.append((found.lastgroup, found.group()))
        position = found.end()
    return tokens


def _unquote(text: str) -> str:
    return text[1:-1]


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.position = tokens, 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", "")

    def take(self, text: str | None = None) -> tuple[str, str]:
        token = self.tokens[self.position]
        if text is not None and token[1] != text:
            raise _CannotTell(f"expected {text!r}, got {token[1]!r}")
        self.position += 1
        return token

    def at(self, *texts: str) -> bool:
        kind, text = self.peek()
        return kind in ("op", "ident") and text in texts

    def expr(self) -> Keys:
        keys = self.unary()
        while self.peek()[1] in _BINARY or self.peek()[1] == "atan2":
            self.take()
            extra: Keys = frozenset()
            if self.at("bool"):
                self.take()
            if self.at("on", "ignoring"):
                self.take()
                self.names()
            if self.at("group_left", "group_right"):
                self.take()
                if self.at("("):
                    extra = self.names()
            keys = keys | self.unary() | extra
        return keys

    def unary(self) -> Keys:
        if self.at("-", "+"):
            self.take()
            return self.unary()
        keys = self.primary()
        while True:
            if self.peek()[0] == "range":
                self.take()
            elif self.at("offset"):
                self.take()
                if self.at("-"):
                    self.take()
                self.take()
            elif self.at("@"):
                self.take()
                if self.peek()[0] == "ident":  # start() / end()
                    self.take()
                    self.take("(")
                    self.take(")")
                else:
                    self.take()
            else:
                return keys

    def primary(self) -> Keys:
        kind, text = self.take()
        if kind in ("number", "string", "duration"):
            return frozenset()
        if text == "(":
            keys = self.expr()
            self.take(")")
            return keys
        if text == "{":
            self.position -= 1
            matchers = self.matchers()
            if "__name__" not in matchers:
                raise _CannotTell("a selector without a metric name")
            return frozenset({*matchers} - {"__name__"} | {_METRIC + matchers["__name__"]})
        if kind != "ident":
            raise _CannotTell(text)
        if text in AGGREGATIONS and (self.at("(") or self.at("by", "without")):
            return self.aggregation(text)
        if self.at("("):
            return self.call(text)
        if text.lower() in ("inf", "nan"):
            return frozenset()
        matchers = self.matchers() if self.at("{") else {}
        return frozenset({*matchers, _METRIC + text} - {"__name__"})

    def names(self) -> Keys:
        self.take("(")
        found = set()
        while not self.at(")"):
            kind, text = self.take()
            if kind == "string":
                text = _unquote(text)
            elif kind != "ident":
                raise _CannotTell(text)
            found.add(text)
            if self.at(","):
                self.take()
        self.take(")")
        return frozenset(found)

    def matchers(self) -> dict[str, str]:
        self.take("{")
        found: dict[str, str] = {}
        while not self.at("}"):
            kind, name = self.take()
            if kind == "string":  # a quoted metric name (UTF-8 names)
                found["__name__"] = _unquote(name)
            else:
                op = self.take()[1]
                value = self.take()
                if value[0] != "string":
                    raise _CannotTell(value[1])
                found[name] = _unquote(value[1]) if op == "=" and name == "__name__" else ""
                if name == "__name__" and op != "=":
                    raise _CannotTell("a metric name by regular expression")
            if self.at(","):
                self.take()
        self.take("}")
        return found

    def arguments(self) -> list[tuple[Keys, str | None]]:
        """Each argument's keys, and its text when it is a string literal."""
        self.take("(")
        found: list[tuple[Keys, str | None]] = []
        while not self.at(")"):
            kind, text = self.peek()
            literal = _unquote(text) if kind == "string" and self.peek(1)[1] in (",", ")") else None
            found.append((self.expr(), literal))
            if self.at(","):
                self.take()
        self.take(")")
        return found

    def aggregation(self, name: str) -> Keys:
        mode, grouping = None, frozenset[str]()
        if self.at("by", "without"):
            mode = self.take()[1]
            grouping = self.names()
        arguments = self.arguments()
        if mode is None and self.at("by", "without"):
            mode = self.take()[1]
            grouping = self.names()
        if not arguments:
            raise _CannotTell(name)
        inner = arguments[-1][0]
        if name in _KEEP_SERIES or mode == "without":
            return inner
        extra = frozenset({arguments[0][1]}) if name == "count_values" and arguments[0][1] else None
        if name == "count_values" and extra is None:
            raise _CannotTell(name)
        return grouping | (extra or frozenset()) if mode == "by" else (extra or frozenset())

    def call(self, name: str) -> Keys:
        arguments = self.arguments()
        if name in _UNKNOWN_CALLS:
            raise _CannotTell(name)
        if name in _SCALAR_CALLS:
            return frozenset()
        if name in ("label_replace", "label_join"):
            if len(arguments) < 2 or arguments[1][1] is None:
                raise _CannotTell(name)
            return arguments[0][0] | {arguments[1][1]}
        if name == "histogram_quantile" and len(arguments) == 2:
            return arguments[1][0] - {"le"}
        keys: Keys = frozenset()
        for argument, _ in arguments:
            keys |= argument
        return keys
