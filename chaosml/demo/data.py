"""A deterministic synthetic credit-approval dataset with planted weak slices.

Columns: ``age``, ``income`` (yearly, 5% missing, more for the self-employed), ``region``,
``employment``, ``credit_history_years``, ``debt_ratio``, ``n_accounts``, ``sex`` (the sensitive
attribute, not a model feature) and the binary label ``approved``.

What is planted, so that slices have something to find:
- applicants under 25 have noisy labels (every model is weaker there);
- for the self-employed, approval depends on income *and* debt jointly (a linear model misses it);
- APAC applicants are approved more often at the same income and debt, and the training snapshot of
  model v2 lost nearly all APAC rows (see ``train.py``), so v2 is better overall but worse in APAC.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = ("EU", "US", "APAC", "LATAM")
EMPLOYMENT = ("salaried", "self_employed", "unemployed", "student")
FEATURES = (
    "age",
    "income",
    "region",
    "employment",
    "credit_history_years",
    "debt_ratio",
    "n_accounts",
)
NUMERIC = ("age", "income", "credit_history_years", "debt_ratio", "n_accounts")
CATEGORICAL = ("region", "employment")
LABEL = "approved"
SENSITIVE = "sex"


def make_credit(n: int = 20_000, *, seed: int = 0) -> pd.DataFrame:
    """``n`` applicants; the same ``seed`` gives the same rows."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, size=n)
    region = rng.choice(REGIONS, size=n, p=[0.35, 0.3, 0.2, 0.15])
    employment = rng.choice(EMPLOYMENT, size=n, p=[0.6, 0.2, 0.1, 0.1])
    sex = rng.choice(("F", "M"), size=n)
    income = np.round(rng.lognormal(mean=10.6, sigma=0.5, size=n) * (1 + (age - 18) / 120), -1)
    income = np.where(employment == "student", income * 0.3, income)
    history = np.clip(age - 18 - rng.integers(0, 10, size=n), 0, None)
    debt = np.clip(rng.beta(2, 5, size=n) + np.where(employment == "unemployed", 0.15, 0), 0, 1)
    accounts = rng.poisson(3, size=n)

    z_income = (np.log(income) - 10.8) / 0.5
    logit = 0.6 + 1.3 * z_income - 4.5 * (debt - 0.3) + 0.04 * history - 0.1 * accounts
    logit += np.where(region == "APAC", 1.6, 0.0)
    self_employed = employment == "self_employed"
    logit = np.where(self_employed, 2.5 * np.sign(z_income * (0.35 - debt)) + 0.3, logit)
    logit -= np.where(employment == "unemployed", 1.2, 0)
    approved = rng.random(n) < 1 / (1 + np.exp(-2 * logit))
    noisy = (age < 25) & (rng.random(n) < 0.25)
    approved = np.where(noisy, ~approved, approved)

    missing = rng.random(n) < np.where(self_employed, 0.15, 0.03)
    frame = pd.DataFrame(
        {
            "age": age,
            "income": np.where(missing, np.nan, income),
            "region": region,
            "employment": employment,
            "credit_history_years": history,
            "debt_ratio": np.round(debt, 3),
            "n_accounts": accounts,
            "sex": sex,
            "approved": approved.astype(np.int8),
        }
    )
    return frame
