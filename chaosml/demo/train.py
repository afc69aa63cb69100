"""``chaosml demo train``: fit the two demo model versions and write everything a demo needs.

- ``v1``: logistic regression (imputed, scaled, one-hot) on a representative training snapshot;
- ``v2``: histogram gradient boosting on a snapshot that lost nearly all APAC rows: better overall, worse there.

Both are saved with skops (no pickle), next to ``eval.parquet`` and a ``chaosml.yaml`` naming them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from chaosml.demo.data import CATEGORICAL, FEATURES, LABEL, NUMERIC, make_credit

TRAIN_ROWS = 40_000
EVAL_ROWS = 20_000
APAC_KEEP = 0.0  # fraction of APAC rows in v2's training snapshot


@dataclass(kw_only=True, frozen=True)
class DemoArtifacts:
    folder: Path
    v1: Path
    v2: Path
    data: Path
    config: Path

    @property
    def reference(self) -> Path:
        """A sample of the training data: what the service's drift monitors compare against."""
        return self.folder / "reference.parquet"


def build_v1() -> object:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                list(NUMERIC),
            ),
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
        ]
    )
    return make_pipeline(features, LogisticRegression(max_iter=1000))


def build_v2() -> object:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    features = ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                list(CATEGORICAL),
            )
        ],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    model = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, random_state=0, categorical_features=[0, 1]
    )
    return make_pipeline(features, model)


def fingerprint(seed: int) -> str:
    """What the demo's models depend on: the seed, the data generator and this training code,
    and the versions of the libraries that fit them."""
    import sklearn

    from chaosml.demo import data

    digest = hashlib.sha256()
    for part in (
        str(seed),
        Path(data.__file__).read_text(encoding="utf-8"),
        Path(__file__).read_text(encoding="utf-8"),
        np.__version__,
        sklearn.__version__,
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def train_demo(
    folder: str | Path,
    *,
    seed: int = 0,
    force: bool = False,
    say: Callable[[str], None] = lambda line: None,
) -> DemoArtifacts:
    """Generate the demo data, fit v1 and v2, and write them with a config into ``folder``;
    unless ``folder`` holds them already, fitted from the same inputs (``fingerprint``)."""
    import skops.io as sio

    folder = Path(folder)
    artifacts = DemoArtifacts(
        folder=folder,
        v1=folder / "v1.skops",
        v2=folder / "v2.skops",
        data=folder / "eval.parquet",
        config=folder / "chaosml.yaml",
    )
    stamp, inputs = folder / "trained.sha256", fingerprint(seed)
    files = (artifacts.v1, artifacts.v2, artifacts.data, artifacts.config, artifacts.reference)
    fresh = all(f.is_file() for f in (*files, stamp)) and not force
    if fresh and stamp.read_text(encoding="utf-8").strip() == inputs:
        return artifacts
    say(f"training the demo models in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    train = make_credit(TRAIN_ROWS, seed=seed + 1)
    evaluation = make_credit(EVAL_ROWS, seed=seed + 2)
    rng = np.random.default_rng(seed + 3)
    keep = (train["region"] != "APAC") | (rng.random(len(train)) < APAC_KEEP)
    snapshot = train[keep]

    v1, v2 = build_v1(), build_v2()
    v1.fit(train[list(FEATURES)], train[LABEL])  # type: ignore[attr-defined]
    v2.fit(snapshot[list(FEATURES)], snapshot[LABEL])  # type: ignore[attr-defined]

    train.sample(5000, random_state=seed).to_parquet(artifacts.reference, index=False)
    sio.dump(v1, artifacts.v1)
    sio.dump(v2, artifacts.v2)
    evaluation.to_parquet(artifacts.data, index=False)
    config = {
        "versions": {"v1": "v1.skops", "v2": "v2.skops"},
        "data": "eval.parquet",
        "label": LABEL,
    }
    artifacts.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    stamp.write_text(inputs + "\n", encoding="utf-8")  # last: a cut-short run trains again
    return artifacts
