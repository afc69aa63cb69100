"""The shadow's disagreement intervals are simultaneous over the slices it judges (Bonferroni),
checked against statsmodels' Wilson interval at the adjusted level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from chaosml.release.shadow import disagreement
from chaosml.slices.suite import load_suite


def test_intervals_are_wilson_at_the_bonferroni_level(tmp_path: Path) -> None:
    (tmp_path / "suite.yaml").write_text(
        "label: y\nmin_size: 50\nslices:\n  - {by: [g]}\n  - {name: tiny, where: 'x < 0.01'}\n"
        "metrics: [accuracy]\ncompare: {metric: accuracy, max_drop: 0.05, confidence: 0.95}\n"
    )
    suite = load_suite(tmp_path / "suite.yaml")
    rng = np.random.default_rng(0)
    n = 2000
    rows = pd.DataFrame({"g": rng.choice(list("abcd"), n), "x": rng.random(n)})
    primary = pd.DataFrame({"prediction": rng.integers(0, 2, n), "score": rng.random(n)})
    flip = rng.random(n) < 0.08
    candidate = primary.copy()
    candidate.loc[flip, "prediction"] = 1 - candidate.loc[flip, "prediction"]
    found = disagreement(suite, rows, primary, candidate)
    judged = [s for s in found if s.verdict != "too small"]
    assert {s.name for s in found} - {s.name for s in judged} == {"tiny"}  # below min_size
    for s in judged:
        low, high = proportion_confint(s.disagree, s.n, alpha=0.05 / len(judged), method="wilson")
        assert s.ci is not None
        assert np.allclose(s.ci, (low, high), rtol=1e-9, atol=1e-12), (s.name, s.ci, low, high)
        assert s.verdict == ("disagrees" if low > 0.05 else "agrees")
