"""The canary's always-valid statistics (chaosml.release.sequential): the closed form against a
numerical integration of the likelihood ratio over the mixture prior, the gate's false-rollback
rate under a null canary looked at every step-tenth (against a fixed-horizon z-test checked the
same way), its power, and the edges where a naive test divides by zero."""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest
from scipy import integrate, stats

from chaosml.errors import InputError
from chaosml.release.sequential import (
    BAD_ALPHA,
    DEFAULT_MIN_COUNT,
    DEFAULT_MIN_EVENTS,
    DUPLICATE_FAMILY,
    UNKNOWN_FAMILY,
    Decision,
    Direction,
    Family,
    Gate,
    Mean,
    Proportion,
    mixture_log_ratio,
)

ALPHA = 0.05
SLICES = ("EU", "US", "APAC")
# (figure, rate, direction): an error rate on labelled rows, and the positive-prediction rate
# ("the prediction distribution moved", so two-sided).
FIGURES: tuple[tuple[str, float, Direction], ...] = (
    ("error_rate", 0.1, "worse_if_higher"),
    ("positive_rate", 0.5, "two_sided"),
)
WEIGHTS = (0.05, 0.25, 0.5, 1.0)  # the candidate's share of traffic at each step
LOOKS_PER_STEP = 10
ROWS_PER_LOOK = 200  # per slice, both arms together: 2,000 rows of a slice per step
Cumulative = npt.NDArray[np.int64]  # (runs, looks, slices)


def oracle_log_ratio(
    difference: float, variance: float, tau2: float, direction: Direction
) -> float:
    """log of the integral of the normal likelihood ratio against the mixture prior, by quad."""
    sd = math.sqrt(tau2)

    def integrand(theta: float) -> float:
        ratio = math.exp((theta * difference - theta * theta / 2.0) / variance)
        return ratio * float(stats.norm.pdf(theta, 0.0, sd))

    if direction == "two_sided":
        value = integrate.quad(integrand, -math.inf, math.inf)[0]
    elif direction == "worse_if_higher":
        value = 2.0 * integrate.quad(integrand, 0.0, math.inf)[0]
    else:
        value = 2.0 * integrate.quad(integrand, -math.inf, 0.0)[0]
    return math.log(value)


@pytest.mark.parametrize(
    ("difference", "variance", "tau2"),
    [
        (0.03, 1e-4, 2e-3),
        (-0.03, 1e-4, 2e-3),
        (0.0, 4e-4, 1e-2),
        (0.5, 0.01, 0.04),
        (-0.2, 0.05, 0.5),
    ],
)
@pytest.mark.parametrize("direction", ["two_sided", "worse_if_higher", "worse_if_lower"])
def test_closed_form_equals_the_integral_over_the_mixture_prior(
    difference: float, variance: float, tau2: float, direction: Direction
) -> None:
    assert mixture_log_ratio(difference, variance, tau2, direction) == pytest.approx(
        oracle_log_ratio(difference, variance, tau2, direction), rel=1e-7, abs=1e-9
    )


def test_a_harmless_difference_far_out_gives_a_tiny_ratio_not_an_error() -> None:
    # 500 standard errors on the harmless side: exp(-x^2/2) underflows, its log must not
    log_ratio = mixture_log_ratio(-5.0, 1e-4, 2e-3, "worse_if_higher")
    assert math.isfinite(log_ratio) and log_ratio < -5.0


@pytest.mark.parametrize("direction", ["two_sided", "worse_if_higher", "worse_if_lower"])
def test_the_confidence_bound_is_where_the_mixture_reaches_the_gate_level(
    direction: Direction,
) -> None:
    gate = Gate(ALPHA, [Family("EU", "score", kind="mean", direction=direction)])
    rng = np.random.default_rng(5)
    candidate, primary = Mean.of(rng.normal(0.3, 1.0, 400)), Mean.of(rng.normal(0.0, 1.0, 4000))
    result = gate.look({("EU", "score"): (candidate, primary)}).results[0]
    assert result.difference is not None
    welch = candidate.variance / candidate.n + primary.variance / primary.n
    pooled = ((candidate.n - 1) * candidate.variance + (primary.n - 1) * primary.variance) / (
        candidate.n + primary.n - 2
    )
    tau2 = 0.04 * pooled
    low, high = result.ci
    ends = [(low, result.difference - low if low is not None else None)]
    ends.append((high, result.difference - high if high is not None else None))
    bounded = [(end, gap) for end, gap in ends if end is not None and gap is not None]
    assert len(bounded) == (2 if direction == "two_sided" else 1)
    for _, gap in bounded:
        # the distance from D to a bound is the difference the mixture rejects at alpha / K
        assert oracle_log_ratio(gap, welch, tau2, direction) == (
            pytest.approx(math.log(1.0 / ALPHA), rel=1e-6)
        )
    if direction == "worse_if_higher":
        assert high is None and low is not None and 0.0 < low < result.difference
    if direction == "worse_if_lower":
        assert low is None and high is not None


def simulate(
    runs: int,
    seed: int,
    *,
    harm: tuple[str, str, float] | None = None,
    rates: dict[str, float] | None = None,
) -> tuple[Cumulative, Cumulative, dict[str, tuple[Cumulative, Cumulative]]]:
    """Cumulative rows and successes per arm at every look: (candidate n, primary n, figure ->
    (candidate successes, primary successes)). ``harm`` adds to one slice's figure's rate on
    the candidate; ``rates`` replaces the candidate's rate of a figure on every slice."""
    rng = np.random.default_rng(seed)
    share = np.repeat(WEIGHTS, LOOKS_PER_STEP)[None, :, None]
    shape = (runs, len(WEIGHTS) * LOOKS_PER_STEP, len(SLICES))
    n_candidate = rng.binomial(ROWS_PER_LOOK, share, size=shape)
    n_primary = ROWS_PER_LOOK - n_candidate
    successes = {}
    for figure, rate, _ in FIGURES:
        candidate_rate = np.full(len(SLICES), (rates or {}).get(figure, rate))
        if harm is not None and harm[1] == figure:
            candidate_rate[SLICES.index(harm[0])] += harm[2]
        x_candidate = rng.binomial(n_candidate, candidate_rate[None, None, :])
        x_primary = rng.binomial(n_primary, rate)
        successes[figure] = (x_candidate.cumsum(axis=1), x_primary.cumsum(axis=1))
    return n_candidate.cumsum(axis=1), n_primary.cumsum(axis=1), successes


def families(directions: dict[str, Direction] | None = None) -> list[Family]:
    return [
        Family(name, figure, direction=(directions or {}).get(figure, direction))
        for name in SLICES
        for figure, _, direction in FIGURES
    ]


def run_canaries(
    data: tuple[Cumulative, Cumulative, dict[str, tuple[Cumulative, Cumulative]]],
    gate_families: list[Family],
) -> list[Decision | None]:
    """The first rolling-back decision of each canary (None: promoted), looking at every look."""
    n_candidate, n_primary, successes = data
    outcomes: list[Decision | None] = []
    for run in range(n_candidate.shape[0]):
        gate = Gate(ALPHA, gate_families)
        outcome = None
        for look in range(n_candidate.shape[1]):
            decision = gate.look(
                {
                    (name, figure): (
                        Proportion(
                            int(n_candidate[run, look, j]), int(successes[figure][0][run, look, j])
                        ),
                        Proportion(
                            int(n_primary[run, look, j]), int(successes[figure][1][run, look, j])
                        ),
                    )
                    for j, name in enumerate(SLICES)
                    for figure, _, _ in FIGURES
                }
            )
            if decision.rolled_back:
                outcome = decision
                break
        outcomes.append(outcome)
    return outcomes


def fixed_horizon_rollbacks(
    data: tuple[Cumulative, Cumulative, dict[str, tuple[Cumulative, Cumulative]]],
) -> float:
    """The share of canaries a pooled two-sample z-test rolls back when checked at every look,
    Bonferroni over the same families at the same alpha, with the gate's minimum counts."""
    n_candidate, n_primary, successes = data
    level = ALPHA / (len(SLICES) * len(FIGURES))
    rolled = np.zeros(n_candidate.shape[0], dtype=bool)
    for figure, _, direction in FIGURES:
        x_candidate, x_primary = successes[figure]
        rate = (x_candidate + x_primary) / (n_candidate + n_primary)
        with np.errstate(divide="ignore", invalid="ignore"):
            se = np.sqrt(rate * (1.0 - rate) * (1.0 / n_candidate + 1.0 / n_primary))
            z = (x_candidate / n_candidate - x_primary / n_primary) / se
        p = stats.norm.sf(z) if direction == "worse_if_higher" else 2.0 * stats.norm.sf(np.abs(z))
        fewest = np.minimum(n_candidate, n_primary)
        enough = (fewest >= DEFAULT_MIN_COUNT) & (
            fewest * np.minimum(rate, 1.0 - rate) >= DEFAULT_MIN_EVENTS
        )
        rolled |= (enough & (p <= level)).any(axis=(1, 2))
    return float(rolled.mean())


@pytest.mark.slow
def test_a_null_canary_looked_at_every_step_tenth_is_rolled_back_at_most_alpha_of_the_time() -> (
    None
):
    # 500 canaries of a candidate identical to the primary, 3 slices x 2 figures, 40 looks
    data = simulate(500, seed=20261201)
    outcomes = run_canaries(data, families())
    sequential = sum(o is not None for o in outcomes) / len(outcomes)
    fixed = fixed_horizon_rollbacks(data)
    print(
        f"false rollbacks: mSPRT gate {sequential:.3f}, fixed-horizon z-test {fixed:.3f}, alpha {ALPHA}"
    )
    assert sequential <= ALPHA
    # the reason for the method: the same data, the same alpha, a test meant for one look
    assert fixed > ALPHA


@pytest.mark.slow
def test_a_candidate_ten_points_worse_on_one_slice_is_rolled_back_naming_that_slice() -> None:
    outcomes = run_canaries(simulate(100, seed=7, harm=("APAC", "error_rate", 0.10)), families())
    rolled = [o for o in outcomes if o is not None]
    print(f"power: {len(rolled)} of {len(outcomes)} rolled back")
    assert len(rolled) >= 90
    for decision in rolled:
        assert decision.family is not None
        assert (decision.family.slice, decision.family.figure) == ("APAC", "error_rate")
        assert decision.family.difference is not None and decision.family.difference > 0.0
        low, high = decision.family.ci
        assert high is None and low is not None and low < decision.family.difference


@pytest.mark.slow
def test_a_candidate_better_on_every_figure_is_never_rolled_back_by_a_harm_only_figure() -> None:
    # both figures worse_if_higher, the candidate's rates 5 points lower on every slice
    one_sided = families({"positive_rate": "worse_if_higher"})
    data = simulate(200, seed=11, rates={"error_rate": 0.05, "positive_rate": 0.45})
    assert all(o is None for o in run_canaries(data, one_sided))
    # the same data with the positive rate two-sided: a 5-point move is a change, and is found
    moved = run_canaries(data, families())
    assert sum(o is not None for o in moved) >= 150
    assert all(
        o is None or (o.family is not None and o.family.figure == "positive_rate") for o in moved
    )


def as_json(decision: Decision) -> str:
    return json.dumps(decision.to_dict(), allow_nan=False)


def one_family(direction: Direction = "worse_if_higher", kind: str = "proportion") -> Gate:
    return Gate(ALPHA, [Family("EU", "error_rate", kind=kind, direction=direction)])  # type: ignore[arg-type]


def test_zero_counts_give_no_estimate_and_no_rollback() -> None:
    decision = one_family().look({("EU", "error_rate"): (Proportion(), Proportion())})
    result = decision.results[0]
    assert not decision.rolled_back and decision.family is None
    assert result.difference is None and result.candidate is None and result.p_value == 1.0
    assert not result.testable and result.ci == (None, None)
    assert '"difference": null' in as_json(decision)


def test_one_arm_empty_is_not_testable() -> None:
    gate = one_family()
    decision = gate.look({("EU", "error_rate"): (Proportion(), Proportion(5000, 4000))})
    result = decision.results[0]
    assert result.primary == 0.8 and result.candidate is None and result.difference is None
    assert not result.testable and not decision.rolled_back
    as_json(decision)


@pytest.mark.parametrize("direction", ["worse_if_higher", "worse_if_lower", "two_sided"])
def test_all_successes_in_both_arms_is_no_evidence_and_no_nan(direction: Direction) -> None:
    decision = one_family(direction).look(
        {("EU", "error_rate"): (Proportion(500, 500), Proportion(5000, 5000))}
    )
    result = decision.results[0]
    assert result.difference == 0.0 and result.p_value == 1.0 and not decision.rolled_back
    assert all(v is None or math.isfinite(v) for v in result.ci)
    as_json(decision)


def test_all_errors_against_none_is_rolled_back_once_the_counts_allow() -> None:
    # the continuity floor keeps the variance positive: a total flip is decisive, not a 0/0
    small = DEFAULT_MIN_COUNT - 1
    gate = one_family()
    early = gate.look({("EU", "error_rate"): (Proportion(small, small), Proportion(small, 0))})
    assert not early.rolled_back and not early.results[0].testable
    later = gate.look(
        {("EU", "error_rate"): (Proportion(small + 1, small + 1), Proportion(small + 1, 0))}
    )
    assert later.rolled_back and later.family is not None
    assert later.family.name == "EU/error_rate" and later.family.p_value <= ALPHA
    as_json(later)


def test_a_rare_event_figure_waits_for_enough_expected_events() -> None:
    # 0.1% errors on the primary, 0.6% on 1,000 candidate rows: the binomial's tail, not the
    # normal's, decides what 6 errors mean; the figure waits for 10 expected events per arm
    gate = one_family()
    decision = gate.look({("EU", "error_rate"): (Proportion(1000, 6), Proportion(100_000, 100))})
    assert not decision.results[0].testable and not decision.rolled_back


def test_the_running_minimum_persists_and_a_missing_family_keeps_its_statistics() -> None:
    gate = Gate(ALPHA, [Family("EU", "error_rate"), Family("US", "error_rate")])
    quiet = (Proportion(1000, 100), Proportion(10_000, 1000))
    bad = gate.look(
        {
            ("EU", "error_rate"): (Proportion(1000, 250), Proportion(10_000, 1000)),
            ("US", "error_rate"): quiet,
        }
    )
    assert bad.rolled_back and bad.family is not None and bad.family.slice == "EU"
    p_then = bad.family.p_value
    # later the EU figure looks healthy again; the US figure is not reported at this look
    after = gate.look(
        {("EU", "error_rate"): (Proportion(100_000, 10_000), Proportion(1_000_000, 100_000))}
    )
    assert after.rolled_back and after.family is not None and after.family.p_value == p_then
    us = after.results[1]
    assert (us.n_candidate, us.n_primary) == (1000, 10_000)
    assert bad.results[0].p_adjusted == min(1.0, 2 * p_then)


def test_worse_if_lower_counts_only_a_drop() -> None:
    accuracy = [Family("EU", "accuracy", direction="worse_if_lower")]
    drop = Gate(ALPHA, accuracy).look(
        {("EU", "accuracy"): (Proportion(1000, 800), Proportion(10_000, 9000))}
    )
    gain = Gate(ALPHA, accuracy).look(
        {("EU", "accuracy"): (Proportion(1000, 990), Proportion(10_000, 9000))}
    )
    assert drop.rolled_back and not gain.rolled_back
    assert gain.results[0].p_value == 1.0


def test_a_mean_figure_finds_a_shift_of_its_score_and_not_a_copy() -> None:
    rng = np.random.default_rng(3)
    family = [Family("EU", "score", kind="mean", direction="two_sided")]
    primary = Mean.of(rng.normal(0.5, 0.1, 5000))
    shifted = Gate(ALPHA, family).look(
        {("EU", "score"): (Mean.of(rng.normal(0.53, 0.1, 500)), primary)}
    )
    same = Gate(ALPHA, family).look(
        {("EU", "score"): (Mean.of(rng.normal(0.5, 0.1, 500)), primary)}
    )
    assert shifted.rolled_back and not same.rolled_back
    assert shifted.results[0].difference == pytest.approx(0.03, abs=0.01)


def test_constant_scores_have_a_floored_variance() -> None:
    family = [Family("EU", "score", kind="mean", direction="two_sided")]
    same = Gate(ALPHA, family).look(
        {("EU", "score"): (Mean.of([0.5] * 200), Mean.of([0.5] * 2000))}
    )
    moved = Gate(ALPHA, family).look(
        {("EU", "score"): (Mean.of([0.6] * 200), Mean.of([0.5] * 2000))}
    )
    assert not same.rolled_back and same.results[0].p_value == 1.0
    assert moved.rolled_back
    as_json(same)
    as_json(moved)


def test_sufficient_statistics_add_up() -> None:
    assert Proportion(10, 3) + Proportion(5, 5) == Proportion(15, 8)
    values = [0.1, 0.4, 0.9, 0.2]
    assert Mean.of(values[:2]) + Mean.of(values[2:]) == Mean.of(values)
    assert Mean.of(values).variance == pytest.approx(float(np.var(values, ddof=1)))


def test_a_family_named_twice_is_an_error() -> None:
    with pytest.raises(InputError) as caught:
        Gate(ALPHA, [Family("EU", "error_rate"), Family("EU", "error_rate", direction="two_sided")])
    assert str(caught.value) == DUPLICATE_FAMILY.format(name="EU/error_rate")


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_alpha_outside_the_open_unit_interval_is_an_error(alpha: float) -> None:
    with pytest.raises(InputError) as caught:
        Gate(alpha, [Family("EU", "error_rate")])
    assert str(caught.value) == BAD_ALPHA.format(alpha=alpha)


def test_statistics_for_an_undeclared_family_or_of_the_wrong_kind_are_errors() -> None:
    gate = one_family()
    with pytest.raises(InputError) as caught:
        gate.look({("US", "error_rate"): (Proportion(), Proportion())})
    assert str(caught.value) == UNKNOWN_FAMILY.format(name="US/error_rate")
    with pytest.raises(InputError, match="is a proportion figure, got Mean"):
        gate.look({("EU", "error_rate"): (Mean(), Mean())})
    gate.look({("EU", "error_rate"): (Proportion(10, 1), Proportion(10, 1))})
    with pytest.raises(InputError, match="cumulative count went down"):
        gate.look({("EU", "error_rate"): (Proportion(9, 1), Proportion(10, 1))})
    assert gate.looks == 1  # a refused look changes nothing


@pytest.mark.parametrize(("n", "successes"), [(5, 6), (5, -1), (-1, 0)])
def test_impossible_counts_are_errors(n: int, successes: int) -> None:
    with pytest.raises(InputError):
        Proportion(n, successes)


def test_below_the_minimum_counts_there_is_no_interval() -> None:
    # one score per arm: the floored variance would give a width of 1e-6, a false precision
    family = [Family("EU", "score", kind="mean", direction="two_sided")]
    result = (
        Gate(ALPHA, family).look({("EU", "score"): (Mean.of([0.9]), Mean.of([0.1]))}).results[0]
    )
    assert result.difference == pytest.approx(0.8)
    assert not result.testable and result.ci == (None, None) and result.p_value == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["worse_if_lower", "worse_if_higher", "two_sided"])
def test_a_null_canary_of_a_skewed_score_is_rolled_back_at_most_alpha_of_the_time(
    direction: Direction,
) -> None:
    # lognormal values (a latency, a skewed score): with Welch's variance alone, a small
    # candidate arm whose mean came out low also has a low variance, and worse_if_lower
    # rolled back 19 of these 300 canaries
    runs, rows = 300, 200
    rng = np.random.default_rng(17)
    share = np.repeat(WEIGHTS, LOOKS_PER_STEP)[None, :, None, None]
    values = rng.lognormal(0.0, 1.0, size=(runs, len(share[0]), len(SLICES), rows))
    to_candidate = rng.random(values.shape) < share
    sums = {}
    for arm, mask in (("candidate", to_candidate), ("primary", ~to_candidate)):
        sums[arm] = tuple(
            np.cumsum(np.where(mask, x, 0.0).sum(axis=3), axis=1)
            for x in (np.ones_like(values), values, values * values)
        )
    rolled = 0
    gate_families = [Family(name, "score", kind="mean", direction=direction) for name in SLICES]
    for run in range(runs):
        gate = Gate(ALPHA, gate_families)
        for look in range(values.shape[1]):
            arms = {
                arm: [
                    Mean(
                        n=round(float(n[run, look, j])),
                        total=float(total[run, look, j]),
                        total_sq=float(total_sq[run, look, j]),
                    )
                    for j in range(len(SLICES))
                ]
                for arm, (n, total, total_sq) in sums.items()
            }
            decision = gate.look(
                {
                    (name, "score"): (arms["candidate"][j], arms["primary"][j])
                    for j, name in enumerate(SLICES)
                }
            )
            if decision.rolled_back:
                rolled += 1
                break
    print(f"skewed score, {direction}: {rolled} of {runs} rolled back")
    assert rolled / runs <= ALPHA


# --- users, not rows: the clustered variance ------------------------------------------------


def test_the_clustered_variance_is_statsmodels_cluster_robust_variance_of_the_mean() -> None:
    import statsmodels.api as sm

    from chaosml.release.sequential import Mean, design_effect

    rng = np.random.default_rng(7)
    users = rng.integers(0, 60, size=900)
    values = rng.normal(size=60)[users] + rng.normal(size=900)
    fit = sm.OLS(values, np.ones(len(values))).fit(
        cov_type="cluster", cov_kwds={"groups": users, "use_correction": True}
    )
    keys = np.unique(users)
    n = [float((users == k).sum()) for k in keys]
    total = [float(values[users == k].sum()) for k in keys]
    per_row = Mean.of(values.tolist()).variance
    clustered = design_effect(n, total, per_row) * per_row / len(values)
    assert math.isclose(clustered, float(fit.bse[0]) ** 2, rel_tol=1e-9)


def test_rows_of_their_own_and_one_user_are_the_edges() -> None:
    from chaosml.release.sequential import Proportion, clustered_mean, clustered_proportion

    # each row its own user: the counts as they are
    assert clustered_proportion([1] * 50, [1] * 7 + [0] * 43) == Proportion(50, 7, rows=50)
    # one user's many rows: one observation of users
    assert clustered_proportion([400], [37]) == Proportion(1, 0, rows=400)
    # alike users (each exactly at the common rate) vary less than rows: never more than rows
    assert clustered_proportion([10] * 20, [2] * 20) == Proportion(200, 40, rows=200)
    assert clustered_mean([3] * 4, [3.0] * 4, [3.0] * 4).n == 12
    # users twice as alike inside as rows: fewer effective rows, the same rate
    wide = clustered_proportion([10] * 40, [0, 10] * 4 + [1] * 32)
    assert wide.rows == 400 and wide.n < 400 and math.isclose(wide.mean or 0, 0.18, abs_tol=0.01)
    # no rows
    assert clustered_proportion([], []) == Proportion()


def test_an_arm_without_variation_takes_the_other_arm_s_design_effect() -> None:
    from chaosml.release.sequential import (
        clustered_proportion,
        clustered_proportions,
        design_effect,
    )

    alike = ([10] * 40, [0, 10] * 4 + [1] * 32)  # users alike inside: a design effect above 1
    none = ([10] * 40, [0] * 40)  # no error at all: nothing to measure its clustering by
    deff = design_effect(alike[0], alike[1], 0.18 * 0.82)
    assert deff > 2
    one, two = clustered_proportions([alike, none])
    assert one == clustered_proportion(*alike)  # the arm with variation sets it
    assert two.rows == 400 and two.n == int(400 / deff) and two.successes == 0
    with pytest.raises(InputError):
        design_effect([2, 2], [1.0, float("nan")], 0.25)


def simulate_users(
    runs: int, seed: int, *, rows_per_user: int, users_per_look: int, strength: float
) -> list[list[tuple[list[int], list[int], list[int], list[int]]]]:
    """Null canaries of sticky users: each user's error rate is drawn from Beta(mean 0.15,
    ``strength`` = a + b, so the rows' intra-user correlation is 1 / (strength + 1)), the same
    for both arms; per run and look, the cumulative (candidate rows, candidate errors, primary
    rows, primary errors) of each user so far."""
    rng = np.random.default_rng(seed)
    a, b = 0.15 * strength, 0.85 * strength
    out = []
    for _ in range(runs):
        looks, users = [], {"candidate": ([], []), "primary": ([], [])}
        for weight in np.repeat(WEIGHTS, LOOKS_PER_STEP):
            rates = rng.beta(a, b, size=users_per_look)
            errors = rng.binomial(rows_per_user, rates)
            on = rng.random(users_per_look) < weight
            for arm, chosen in (("candidate", on), ("primary", ~on)):
                users[arm][0].extend([rows_per_user] * int(chosen.sum()))
                users[arm][1].extend(errors[chosen].tolist())
            looks.append((*map(list, users["candidate"]), *map(list, users["primary"])))
        out.append(looks)
    return out


@pytest.mark.slow
def test_a_null_canary_of_sticky_users_stays_within_alpha_only_with_the_clustered_variance() -> (
    None
):
    from chaosml.release.sequential import clustered_proportions

    # 500 canaries, 40 looks, users of 10 rows each whose rows correlate at 1/3 (design effect 4)
    data = simulate_users(500, 20261202, rows_per_user=10, users_per_look=30, strength=2.0)
    family = [Family("overall", "error", direction="worse_if_higher")]

    def rolled_back(clustered: bool) -> float:
        rolled = 0
        for looks in data:
            gate = Gate(ALPHA, family)
            for n_c, x_c, n_p, x_p in looks:
                if clustered:  # as the canary does: one design effect for both arms
                    one, two = clustered_proportions([(n_c, x_c), (n_p, x_p)])
                    arms = (one, two)
                else:
                    arms = (Proportion(sum(n_c), sum(x_c)), Proportion(sum(n_p), sum(x_p)))
                if gate.look({("overall", "error"): arms}).rolled_back:
                    rolled += 1
                    break
        return rolled / len(data)

    by_users, by_rows = rolled_back(True), rolled_back(False)
    print(f"false rollbacks of sticky users: clustered {by_users:.3f}, rows {by_rows:.3f}")
    assert by_users <= ALPHA
    assert by_rows > ALPHA  # the reason: rows of one user taken as independent
