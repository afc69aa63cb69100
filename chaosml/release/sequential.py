"""Always-valid statistics for a canary: figures that can be looked at after every batch.

A canary looks at its figures many times (after every batch of new rows), and stops the first
time one looks bad. A fixed-horizon test checked that way rejects a healthy candidate far more
often than its alpha. This module gives tests that stay valid at every look.

**Method.** For each figure, ``D`` is the candidate's mean minus the primary's (a proportion:
error rate, positive-prediction rate, HTTP error rate; or the mean of a continuous value such as
a score), ``V`` its variance (a plug-in estimate). Under the normal approximation ``D`` is
``N(theta, V)``, and ``S = D / V`` is a Brownian motion with drift ``theta`` in the information
``I = 1 / V``, whatever the share of traffic each arm gets at each step (as long as that share
does not depend on the outcomes). The mixture sequential probability ratio test (mSPRT; Johari,
Koomen, Pekelis, Walsh, "Peeking at A/B tests", KDD 2017, and "Always valid inference",
Operations Research 2022) mixes the likelihood ratio of ``theta`` against 0 over a prior
``theta ~ N(0, tau^2)``; in closed form::

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 D^2 / (2 V (V + tau^2)))

For a one-sided figure (only harm counts: ``worse_if_higher`` or ``worse_if_lower``) the prior is
the half-normal on the harmful side, which doubles the evidence a harmful difference gives::

    Lambda = 2 sqrt(V / (V + tau^2)) * exp(x^2 / 2) * Phi(s x),   x = tau D / sqrt(V (V + tau^2))

with ``s`` = +1 (``worse_if_higher``) or -1 (``worse_if_lower``). Each is a nonnegative
(super)martingale under the null (``theta = 0``, or ``theta`` on the harmless side), so by Ville's
inequality ``P(Lambda ever reaches 1/a) <= a``: the always-valid p-value, the running minimum of
``1/Lambda`` over the looks capped at 1, is below ``a`` with probability at most ``a``, at any
number of looks and any stopping time.

``tau^2`` is given in units of one observation's variance (``tau2``, default 0.04: the prior
expects differences of about 0.2 standard deviations) and scaled by the pooled per-observation
variance of the figure, so one default serves a 10% error rate, a 50% positive rate and a score.
A mixture is most sensitive where ``tau^2 / V`` is about ``2 log(1/a) + log(1 + tau^2 / V)``
(about 12 at ``a = 0.05 / 6``); with 0.04 that is a few hundred candidate rows, the size of a
canary's slice in its first steps.

**Variance.** Proportions: the pooled rate with a continuity floor, ``(x_c + x_p + 1/2) / (n_c +
n_p + 1)``, which is the null's variance and is never 0 (a slice with no errors yet does not make
the first error infinitely significant). Means: the larger of Welch's ``s_c^2 / n_c + s_p^2 /
n_p`` and the pooled ``s^2 (1/n_c + 1/n_p)``, each variance floored at ``1e-12 (1 + mean^2)``.
Welch's alone fails a right-skewed figure (a latency, a lognormal score) on its low side: a
small candidate arm whose mean came out low also has a low variance, so its drop looks
significant (0.095 false rollbacks at alpha 0.05 in a simulation); the pooled variance, which
the large primary arm dominates, does not move with it, and Welch's covers a candidate that is
noisier than the primary. Nothing here returns NaN: a figure without data has
no estimate (``None``) and a p-value of 1.

**Minimum counts.** The normal approximation of ``D`` is what makes the guarantee hold; at small
``n`` the binomial's tail on the harmful side is heavier than the normal's, which would let early
noise through. So a figure may reject only once each arm has ``min_count`` observations (default
100) and, for a proportion, each arm expects ``min_events`` successes and as many failures at
the pooled rate (default 10, the usual condition for the normal approximation of a binomial
sharpened for the mSPRT's far tails); before that its looks do not count (its p-value stays
where it was). Rare-event figures (an HTTP error rate of 0.1%) therefore become testable only
after about ``min_events / rate`` rows per arm.

**The gate.** ``Gate(alpha, families)`` holds the (slice, figure) families declared before the
canary starts and rolls back when some family's always-valid p-value reaches ``alpha / K``
(Bonferroni over the ``K`` families). The family-wise error, the chance that a candidate that
is no worse on any family is ever rolled back, is at most ``alpha``, under any dependence
between the figures (the union bound needs none), at any number of looks.

**Clusters.** A sticky canary assigns users, not rows, and one user's rows are alike (the same
person, the same kind of request), so rows are not independent and their variance understates
the mean's. Where each row's user is known (the split records its key), an arm's figure is
computed from per-user sums (``clustered_proportion``, ``clustered_mean``): the variance of the
mean is the clustered one (the delta method for a ratio of sums, Deng, Knoblich, Lu, "Applying
the delta method in metric analytics", KDD 2018), entered as the counts of independent rows that
have that variance (the rows divided by the design effect, which is at least 1). The minimum
counts then apply to those effective rows. The proxy's service figures (HTTP errors, slow
requests) are counted per request without users: they stay per row.

**Assumptions.** Observations (users, where known; else rows) independent within and between
arms, the normal approximation of the difference of means (held by the minimum counts), and
families fixed in advance. With a
plug-in variance the guarantee is asymptotic (Johari et al. 2022).

The confidence sequence (``FamilyResult.ci``) is the set of differences the same mixture does
not reject at ``alpha / K``, with the unpooled variance (it is about differences other than 0):
two-sided for a two-sided figure, one-sided (a lower bound on the harm for ``worse_if_higher``,
an upper bound for ``worse_if_lower``) otherwise. It covers the true difference at every look
at once with probability at least ``1 - alpha / K``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from chaosml.errors import InputError

Direction = Literal["worse_if_higher", "worse_if_lower", "two_sided"]
Kind = Literal["proportion", "mean"]

DEFAULT_TAU2 = 0.04
DEFAULT_MIN_COUNT = 100
DEFAULT_MIN_EVENTS = 10
VARIANCE_FLOOR = 1e-12

BAD_ALPHA = "alpha must be in (0, 1), got {alpha!r}"
BAD_TAU2 = "tau2 must be a positive number, got {tau2!r}"
BAD_MIN = "{name} must be a whole number >= 1, got {value!r}"
NO_FAMILIES = "a gate needs at least one (slice, figure) family"
DUPLICATE_FAMILY = "family {name} is declared twice"
UNKNOWN_FAMILY = "no family {name} was declared before the canary started"
WRONG_KIND = "family {name} is a {kind} figure, got {got} statistics"
SHRANK = "family {name}: the {arm}'s cumulative count went down ({before} to {after})"
BAD_PROPORTION = "a proportion needs 0 <= successes <= n, got n={n}, successes={successes}"
BAD_MEAN = "a mean needs n >= 0 and finite sums, got n={n}, total={total}, total_sq={total_sq}"

_LOG_2 = math.log(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class Proportion:
    """One arm's sufficient statistics of a 0/1 figure: rows seen and rows where it is 1
    (``rows``: the rows behind them, when ``n`` counts effective rows of clustered ones)."""

    n: int = 0
    successes: int = 0
    rows: int | None = None

    @property
    def observed(self) -> int:
        return self.n if self.rows is None else self.rows

    def __post_init__(self) -> None:
        if not 0 <= self.successes <= self.n:
            raise InputError(BAD_PROPORTION.format(n=self.n, successes=self.successes))

    def __add__(self, other: Proportion) -> Proportion:
        rows = None if self.rows is None and other.rows is None else self.observed + other.observed
        return Proportion(n=self.n + other.n, successes=self.successes + other.successes, rows=rows)

    @property
    def mean(self) -> float | None:
        return self.successes / self.n if self.n else None


@dataclass(frozen=True, slots=True)
class Mean:
    """One arm's sufficient statistics of a continuous figure: count, sum, sum of squares
    (``rows``: the rows behind them, when ``n`` counts effective rows of clustered ones)."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    rows: int | None = None

    @property
    def observed(self) -> int:
        return self.n if self.rows is None else self.rows

    def __post_init__(self) -> None:
        if self.n < 0 or not (math.isfinite(self.total) and math.isfinite(self.total_sq)):
            raise InputError(BAD_MEAN.format(n=self.n, total=self.total, total_sq=self.total_sq))

    @classmethod
    def of(cls, values: Iterable[float]) -> Mean:
        xs = [float(v) for v in values]
        return cls(n=len(xs), total=math.fsum(xs), total_sq=math.fsum(x * x for x in xs))

    def __add__(self, other: Mean) -> Mean:
        rows = None if self.rows is None and other.rows is None else self.observed + other.observed
        return Mean(
            n=self.n + other.n,
            total=self.total + other.total,
            total_sq=self.total_sq + other.total_sq,
            rows=rows,
        )

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    @property
    def variance(self) -> float:
        """The sample variance, floored (0 for fewer than two values, before the floor)."""
        if self.n < 2:
            raw = 0.0
        else:
            raw = max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))
        m = self.total / self.n if self.n else 0.0
        return max(raw, VARIANCE_FLOOR * (1.0 + m * m))


Counts = Proportion | Mean


def _spread(n: Sequence[float], total: Sequence[float]) -> tuple[float, float]:
    """The clustered variance's numerator of ``sum(total) / sum(n)`` (K/(K-1) times the squared
    deviations of the clusters' totals from their share of it), and the rows."""
    rows = math.fsum(n)
    mean = math.fsum(total) / rows
    k = len(n)
    spread = math.fsum((t - mean * m) ** 2 for t, m in zip(total, n, strict=True))
    return k / (k - 1) * spread, rows


def design_effect(n: Sequence[float], total: Sequence[float], per_row: float) -> float:
    """How much more the mean of rows that come in clusters (one user's rows) varies than if
    its rows were independent: the clustered variance of the ratio ``sum(total) / sum(n)``
    (the delta method, with the K/(K-1) small-sample factor) over the independent-rows variance
    ``per_row / sum(n)``; at least 1 (clusters never count as more evidence than rows). A single
    cluster (no variation between clusters to see) gives ``sum(n)``: its rows are one
    observation of users."""
    return shared_design_effect([(n, total, per_row)])


def shared_design_effect(arms: Sequence[tuple[Sequence[float], Sequence[float], float]]) -> float:
    """One design effect for several arms (per arm: its clusters' rows and totals, and its
    per-row variance): the arms' clustered variances over their independent-rows variances,
    each summed with the weights that make it the pooled ratio. An arm with no variation of its
    own (every row 0, say) tells nothing of its clustering and takes the others'; under the
    null the arms are one population. At least 1; the rows when there is one user in all."""
    if not all(math.isfinite(x) for _, total, per_row in arms for x in (*total, per_row)):
        raise InputError("a design effect of values that are not all finite")
    sizes = [m for n, _, _ in arms for m in n]
    if not sizes:
        return 1.0
    if max(sizes) <= 1:  # every row a cluster of its own: independent rows
        return 1.0
    if len(sizes) < 2:
        return max(math.fsum(sizes), 1.0)  # one user: one observation
    clustered = independent = 0.0
    for n, total, per_row in arms:
        if len(n) < 2 or per_row <= 0:
            continue
        spread, rows = _spread(n, total)
        clustered += spread / rows  # (each arm's variance times its rows)
        independent += per_row
    if independent <= 0:  # no arm has variation to measure (the test's floor takes over)
        return 1.0
    return max(1.0, clustered / independent)


def _effective_proportion(rows: int, hits: int, deff: float) -> Proportion:
    if not rows:
        return Proportion()
    effective = int(rows / deff)
    rate = hits / rows
    return Proportion(n=effective, successes=min(effective, round(rate * effective)), rows=rows)


def clustered_proportions(
    arms: Sequence[tuple[Sequence[int], Sequence[int]]],
) -> list[Proportion]:
    """Each arm's 0/1 figure from per-cluster counts (rows and successes of each user), as the
    counts of independent rows with the same rate and the clustered variance: both divided by
    the arms' shared design effect (rows rounded down, so never more evidence than there is;
    the successes rounded, so the rate moves by at most half an effective row)."""
    deff = shared_design_effect(
        [(n, s, (sum(s) / sum(n)) * (1 - sum(s) / sum(n)) if sum(n) else 0.0) for n, s in arms]
    )
    return [_effective_proportion(int(sum(n)), int(sum(s)), deff) for n, s in arms]


def clustered_proportion(n: Sequence[int], successes: Sequence[int]) -> Proportion:
    """One arm's figure as ``clustered_proportions`` gives it, from its users alone."""
    return clustered_proportions([(n, successes)])[0]


def clustered_means(
    arms: Sequence[tuple[Sequence[int], Sequence[float], Sequence[float]]],
) -> list[Mean]:
    """Each arm's continuous figure from per-cluster sums, as the sums of independent rows with
    the same mean and per-row variance, scaled down by the arms' shared design effect."""
    wholes = [Mean(n=int(sum(n)), total=math.fsum(t), total_sq=math.fsum(q)) for n, t, q in arms]
    deff = shared_design_effect(
        [(n, t, w.variance if w.n > 1 else 0.0) for (n, t, _), w in zip(arms, wholes, strict=True)]
    )
    out = []
    for whole in wholes:
        effective = int(whole.n / deff)
        scale = effective / whole.n if whole.n else 0.0
        out.append(
            Mean(
                n=effective,
                total=whole.total * scale,
                total_sq=whole.total_sq * scale,
                rows=whole.n,
            )
        )
    return out


def clustered_mean(n: Sequence[int], total: Sequence[float], total_sq: Sequence[float]) -> Mean:
    """One arm's figure as ``clustered_means`` gives it, from its users alone."""
    return clustered_means([(n, total, total_sq)])[0]


@dataclass(frozen=True, slots=True)
class Family:
    """One (slice, figure) the canary is judged by, declared before it starts."""

    slice: str
    figure: str
    kind: Kind = "proportion"
    direction: Direction = "worse_if_higher"

    @property
    def key(self) -> tuple[str, str]:
        return (self.slice, self.figure)

    @property
    def name(self) -> str:
        return f"{self.slice}/{self.figure}"


def _log_ndtr(x: float) -> float:
    """log Phi(x), accurate in both tails."""
    if x > 0.0:
        return math.log1p(-0.5 * math.erfc(x / math.sqrt(2.0)))
    if x > -30.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    return -0.5 * x * x + _log_mills_tail(x)


def _log_mills_tail(x: float) -> float:
    """log(Phi(x) exp(x^2 / 2)) for x <= -30 (the asymptotic series, exact to double here)."""
    inv = 1.0 / (x * x)
    return -math.log(-x) - _LOG_SQRT_2PI + math.log1p(-inv + 3.0 * inv * inv)


def _half_normal_term(u: float) -> float:
    """u^2 / 2 + log Phi(u), without the two large terms cancelling for very negative u."""
    if u > -30.0:
        return 0.5 * u * u + _log_ndtr(u)
    return _log_mills_tail(u)


def mixture_log_ratio(
    difference: float, variance: float, tau2: float, direction: Direction
) -> float:
    """log Lambda of the mSPRT for a difference ``difference`` of variance ``variance``.

    ``tau2`` is the mixture prior's variance in the difference's own units: the normal prior for
    ``two_sided``, the half-normal on the harmful side otherwise."""
    ratio = tau2 / variance
    x = difference * math.sqrt(tau2 / (variance * (variance + tau2)))
    base = -0.5 * math.log1p(ratio)
    if direction == "two_sided":
        return base + 0.5 * x * x
    sign = 1.0 if direction == "worse_if_higher" else -1.0
    return _LOG_2 + base + _half_normal_term(sign * x)


def _one_sided_radius(variance: float, tau2: float, log_level: float) -> float:
    """The c with one-sided log Lambda(c) = log_level: the one-sided bound's distance from D."""
    base = _LOG_2 - 0.5 * math.log1p(tau2 / variance)
    # Start where the root would be if Phi(u) were 1 (left of it: log Phi < 0); Newton on an
    # increasing convex function steps past the root once, then converges from the right.
    u = math.sqrt(max(2.0 * (log_level - base), 1e-12))
    for _ in range(50):
        g = base + _half_normal_term(u) - log_level
        slope = u + math.exp(-0.5 * u * u - _LOG_SQRT_2PI - _log_ndtr(u))
        step = g / slope
        u -= step
        if abs(step) < 1e-12 * max(1.0, u):
            break
    return u * math.sqrt(variance * (variance + tau2) / tau2)


@dataclass(frozen=True, kw_only=True)
class FamilyResult:
    """One family at one look. ``p_value`` is always valid (the running minimum over the looks);
    ``p_adjusted`` is it times the number of families, capped at 1; ``ci`` holds the always-valid
    bounds on the difference at the gate's level (``None``: unbounded on that side, or the
    figure is not testable yet: below the minimum counts an interval would be falsely precise)."""

    slice: str
    figure: str
    kind: Kind
    direction: Direction
    n_candidate: int
    n_primary: int
    candidate: float | None
    primary: float | None
    difference: float | None
    p_value: float
    p_adjusted: float
    ci: tuple[float | None, float | None]
    testable: bool
    rejected: bool

    @property
    def name(self) -> str:
        return f"{self.slice}/{self.figure}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "slice": self.slice,
            "figure": self.figure,
            "kind": self.kind,
            "direction": self.direction,
            "n_candidate": self.n_candidate,
            "n_primary": self.n_primary,
            "candidate": _finite(self.candidate),
            "primary": _finite(self.primary),
            "difference": _finite(self.difference),
            "p_value": float(self.p_value),
            "p_adjusted": float(self.p_adjusted),
            "ci": [_finite(self.ci[0]), _finite(self.ci[1])],
            "testable": self.testable,
            "rejected": self.rejected,
        }


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the gate concluded at one look: rolled back or not, and by which family."""

    look: int
    alpha: float
    rolled_back: bool
    family: FamilyResult | None  # the rejected family with the smallest p-value
    results: tuple[FamilyResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "look": self.look,
            "alpha": float(self.alpha),
            "method": "mSPRT (normal mixture), Bonferroni over the families",
            "rolled_back": self.rolled_back,
            "family": None if self.family is None else self.family.to_dict(),
            "results": [r.to_dict() for r in self.results],
        }


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class _Moments:
    """What the test needs of one family's two arms."""

    difference: float
    test_variance: float  # of D under the null (pooled for proportions, at least pooled for means)
    ci_variance: float  # of D anywhere (unpooled)
    tau2: float  # the mixture's variance in the figure's units
    enough: bool


def _proportion_moments(
    c: Proportion, p: Proportion, *, tau2: float, min_count: int, min_events: int
) -> _Moments:
    n = c.n + p.n
    pooled = (c.successes + p.successes + 0.5) / (n + 1.0)
    unit = pooled * (1.0 - pooled)
    inv = 1.0 / c.n + 1.0 / p.n
    rc, rp = (c.successes + 0.5) / (c.n + 1.0), (p.successes + 0.5) / (p.n + 1.0)
    rate = (c.successes + p.successes) / n
    fewest = min(c.n, p.n) * min(rate, 1.0 - rate)
    return _Moments(
        difference=c.successes / c.n - p.successes / p.n,
        test_variance=unit * inv,
        ci_variance=rc * (1.0 - rc) / c.n + rp * (1.0 - rp) / p.n,
        tau2=tau2 * unit,
        enough=min(c.n, p.n) >= min_count and fewest >= min_events,
    )


def _mean_moments(c: Mean, p: Mean, *, tau2: float, min_count: int) -> _Moments:
    vc, vp = c.variance, p.variance
    dof = c.n + p.n - 2
    pooled = ((c.n - 1) * vc + (p.n - 1) * vp) / dof if dof > 0 else max(vc, vp)
    welch = vc / c.n + vp / p.n
    return _Moments(
        difference=c.total / c.n - p.total / p.n,
        test_variance=max(welch, pooled * (1.0 / c.n + 1.0 / p.n)),
        ci_variance=welch,
        tau2=tau2 * pooled,
        enough=min(c.n, p.n) >= min_count,
    )


def _interval(
    m: _Moments, direction: Direction, log_level: float
) -> tuple[float | None, float | None]:
    v, t2 = m.ci_variance, m.tau2
    if direction == "two_sided":
        half = math.sqrt(v * (v + t2) / t2 * (2.0 * log_level + math.log1p(t2 / v)))
        return (m.difference - half, m.difference + half)
    radius = _one_sided_radius(v, t2, log_level)
    if direction == "worse_if_higher":
        return (m.difference - radius, None)
    return (None, m.difference + radius)


@dataclass(kw_only=True)
class _State:
    family: Family
    candidate: Counts
    primary: Counts
    p_value: float = 1.0


class Gate:
    """Always-valid rollback decisions over families fixed before the canary starts.

    ``look(stats)`` takes the current cumulative statistics, keyed by (slice, figure), each a
    pair (candidate, primary) of ``Proportion`` or ``Mean``; a family left out keeps its last
    statistics. The running minimum p-value of each family persists across looks, so once
    rolled back, the gate stays rolled back."""

    def __init__(
        self,
        alpha: float,
        families: Sequence[Family],
        *,
        tau2: float = DEFAULT_TAU2,
        min_count: int = DEFAULT_MIN_COUNT,
        min_events: int = DEFAULT_MIN_EVENTS,
    ) -> None:
        if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
            raise InputError(BAD_ALPHA.format(alpha=alpha))
        if not (isinstance(tau2, int | float) and math.isfinite(tau2) and tau2 > 0.0):
            raise InputError(BAD_TAU2.format(tau2=tau2))
        for name, value in (("min_count", min_count), ("min_events", min_events)):
            if not (isinstance(value, int) and value >= 1):
                raise InputError(BAD_MIN.format(name=name, value=value))
        if not families:
            raise InputError(NO_FAMILIES)
        self.alpha = float(alpha)
        self.tau2 = float(tau2)
        self.min_count = min_count
        self.min_events = min_events
        self._states: dict[tuple[str, str], _State] = {}
        for family in families:
            if family.key in self._states:
                raise InputError(DUPLICATE_FAMILY.format(name=family.name))
            empty: Counts = Proportion() if family.kind == "proportion" else Mean()
            self._states[family.key] = _State(family=family, candidate=empty, primary=empty)
        self.looks = 0
        self.threshold = self.alpha / len(self._states)  # Bonferroni
        self._log_level = math.log(1.0 / self.threshold)

    @property
    def families(self) -> tuple[Family, ...]:
        return tuple(s.family for s in self._states.values())

    def look(self, stats: Mapping[tuple[str, str], tuple[Counts, Counts]]) -> Decision:
        """Fold in the current cumulative statistics and decide."""
        for key, (candidate, primary) in stats.items():
            state = self._states.get(key)
            if state is None:
                raise InputError(UNKNOWN_FAMILY.format(name="/".join(key)))
            _check(state, candidate, primary)
        for key, (candidate, primary) in stats.items():
            state = self._states[key]
            state.candidate, state.primary = candidate, primary
        self.looks += 1
        results = tuple(self._judge(state) for state in self._states.values())
        rejected = [r for r in results if r.rejected]
        return Decision(
            look=self.looks,
            alpha=self.alpha,
            rolled_back=bool(rejected),
            family=min(rejected, key=lambda r: r.p_value) if rejected else None,
            results=results,
        )

    def _judge(self, state: _State) -> FamilyResult:
        family, c, p = state.family, state.candidate, state.primary
        ci: tuple[float | None, float | None] = (None, None)
        difference: float | None = None
        testable = False
        if c.n and p.n:
            if isinstance(c, Proportion) and isinstance(p, Proportion):
                m = _proportion_moments(
                    c, p, tau2=self.tau2, min_count=self.min_count, min_events=self.min_events
                )
            else:
                assert isinstance(c, Mean) and isinstance(p, Mean)
                m = _mean_moments(c, p, tau2=self.tau2, min_count=self.min_count)
            difference, testable = m.difference, m.enough
            if testable:
                log_ratio = mixture_log_ratio(
                    m.difference, m.test_variance, m.tau2, family.direction
                )
                if log_ratio > 0.0:
                    state.p_value = min(state.p_value, math.exp(-log_ratio))
                ci = _interval(m, family.direction, self._log_level)
        k = len(self._states)
        return FamilyResult(
            slice=family.slice,
            figure=family.figure,
            kind=family.kind,
            direction=family.direction,
            n_candidate=c.n,
            n_primary=p.n,
            candidate=c.mean,
            primary=p.mean,
            difference=difference,
            p_value=state.p_value,
            p_adjusted=min(1.0, state.p_value * k),
            ci=ci,
            testable=testable,
            rejected=state.p_value <= self.threshold,
        )


def _check(state: _State, candidate: Counts, primary: Counts) -> None:
    family = state.family
    expected = Proportion if family.kind == "proportion" else Mean
    for arm, counts, before in (
        ("candidate", candidate, state.candidate),
        ("primary", primary, state.primary),
    ):
        if not isinstance(counts, expected):
            raise InputError(
                WRONG_KIND.format(name=family.name, kind=family.kind, got=type(counts).__name__)
            )
        if counts.observed < before.observed:  # (effective rows may shrink: not the rows)
            raise InputError(
                SHRANK.format(
                    name=family.name, arm=arm, before=before.observed, after=counts.observed
                )
            )


__all__ = [
    "DEFAULT_MIN_COUNT",
    "DEFAULT_MIN_EVENTS",
    "DEFAULT_TAU2",
    "Counts",
    "Decision",
    "Direction",
    "Family",
    "FamilyResult",
    "Gate",
    "Kind",
    "Mean",
    "Proportion",
    "clustered_mean",
    "clustered_means",
    "clustered_proportion",
    "clustered_proportions",
    "design_effect",
    "mixture_log_ratio",
    "shared_design_effect",
]
