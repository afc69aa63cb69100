"""The Dask and Spark engines give the local engine's answer, bit for bit: on a real ``distributed``
LocalCluster (separate worker processes) and a real Spark ``local[2]`` session, for model artifacts
and predictions files, with ``by`` values found in only some partitions, an empty file, a partition
whose labels are all one class, the fault matrix, and a worker killed in the middle of a job."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeClassifier

from chaosml.demo.train import DemoArtifacts
from chaosml.errors import InputError, VersionError
from chaosml.slices.checks import run_slice_tests
from chaosml.slices.collect import evaluate
from chaosml.slices.compare import compare_versions
from chaosml.slices.engines import DaskEngine, SparkEngine, make_engine
from chaosml.slices.fragility import fragility
from chaosml.slices.offline import offline_scenarios
from chaosml.slices.suite import ComparePolicy, SliceSpec, SliceSuite, SliceTest
from chaosml.versions import ArtifactVersion, PredictionsFile, Version
from tests.conftest import needs

CHUNK = 700  # rows per chunk and per partition: cuts files and row groups mid-way
SUITE = SliceSuite(
    label="y",
    min_size=20,
    slices=[
        SliceSpec(name="low_a", where="a < -0.5"),
        SliceSpec(name="region_missing", where="isna(region)"),
        SliceSpec(by=["g"]),  # "late" only in the last file, "early" only in the first
        SliceSpec(by=["region", "g"]),
    ],
    metrics=["accuracy", "precision", "recall", "roc_auc"],
    tests=[SliceTest(slice="g=late", metric="accuracy", min=0.5)],
    compare=ComparePolicy(metric="precision"),
)
SCENARIO = (
    "name: {name}\nload: {{users: 1, rate: 1}}\nphases: {{steady: 1s, fault: 1s, recovery: 1s}}\n"
    "faults:\n  - {fault}\n"
)
FAULTS = {
    "a-noise": "{type: noise, columns: [a], std: 0.8, toxicity: 0.5}",
    "b-missing": "{type: missing_values, columns: [b], rate: 0.3}",
    "flip": "{type: label_flip, rate: 0.2}",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of Parquet files (one empty, one all one label, small row groups), two models,
    their predictions files, and scenario files."""
    folder = tmp_path_factory.mktemp("engines")
    rng = np.random.default_rng(11)
    sizes = [900, 0, 1300, 400, 1100]
    frames = []
    for index, size in enumerate(sizes):
        a = rng.normal(size=size)
        b = a + rng.normal(scale=0.5, size=size)
        groups = ["early", "mid"] if index == 0 else ["late", "mid"] if index == 4 else ["mid"]
        frame = pd.DataFrame(
            {
                "a": a,
                "b": np.where(rng.random(size) < 0.05, np.nan, b),
                "g": rng.choice(groups, size=size),
                "region": rng.choice(["EU", "US", None], size=size),
                "y": (a + rng.normal(scale=0.7, size=size) > 0).astype(np.int64),
            }
        )
        if index == 3:
            frame["y"] = 1  # a partition whose labels are all one class
        frames.append(frame)
    data = folder / "eval"
    data.mkdir()
    for index, frame in enumerate(frames):
        frame.to_parquet(data / f"part-{index}.parquet", index=False, row_group_size=250)
    whole = pd.concat(frames, ignore_index=True)
    train = whole
    models: list[Version] = []
    predictions: list[Version] = []
    for name, model in (
        ("v1", LogisticRegression()),
        ("v2", DecisionTreeClassifier(max_depth=3, random_state=0)),
    ):
        pipeline = make_pipeline(SimpleImputer(), model).fit(train[["a", "b"]], train["y"])
        path = folder / f"{name}.joblib"
        joblib.dump(pipeline, path)
        artifact = ArtifactVersion(name, path)
        models.append(artifact)
        answers = artifact.model.predict_proba(whole[["a", "b"]])[:, 1]
        file = folder / f"{name}-predictions.parquet"
        pd.DataFrame({"prediction": (answers >= 0.5).astype(int), "score": answers}).to_parquet(
            file, row_group_size=333
        )
        predictions.append(PredictionsFile(name, file))
    scenarios = folder / "scenarios"
    scenarios.mkdir()
    for name, fault in FAULTS.items():
        text = SCENARIO.format(name=name, fault=fault)
        (scenarios / f"{name}.yaml").write_text(text, encoding="utf-8")
    return {
        "data": data,
        "whole": whole,
        "models": models,
        "predictions": predictions,
        "scenarios": offline_scenarios([scenarios]),
    }


@pytest.fixture(scope="module")
def dask_engine() -> Iterator[DaskEngine]:
    needs("dask")
    engine = DaskEngine(workers=2)
    engine.client  # noqa: B018 - start the LocalCluster once for the module
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def spark_engine() -> Iterator[SparkEngine]:
    needs("spark")
    engine = SparkEngine("local[2]")
    engine.session  # noqa: B018
    yield engine
    engine.close()


def _compare(world: dict[str, Any], kind: str, engine: Any, data: object = None) -> dict[str, Any]:
    v1, v2 = world[kind]
    result = compare_versions(
        SUITE, v1, v2, world["data"] if data is None else data, chunk_rows=CHUNK, engine=engine
    )
    return result.to_dict()


def test_the_folder_reads_as_one_table_in_chunks_at_fixed_offsets(world: dict[str, Any]) -> None:
    from chaosml.data import open_table

    table = open_table(world["data"])
    assert table.num_rows == len(world["whole"]) and len(table.files) == 5
    chunks = list(table.chunks(["a", "g"], CHUNK))
    assert [len(c) for c in chunks[:-1]] == [CHUNK] * (len(chunks) - 1)
    pd.testing.assert_frame_equal(
        pd.concat(chunks, ignore_index=True), world["whole"][["a", "g"]], check_dtype=False
    )
    for start, stop in [(0, 0), (0, 5), (890, 1210), (2100, 2300), (3690, 3700), (650, 3700)]:
        part = table.read(["a", "y"], start, stop)
        expected = world["whole"][["a", "y"]].iloc[start:stop].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, expected, check_dtype=False)


@pytest.mark.parametrize("kind", ["models", "predictions"])
def test_dask_gives_the_local_answer(
    world: dict[str, Any], dask_engine: DaskEngine, kind: str
) -> None:
    local = _compare(world, kind, "local")
    assert _compare(world, kind, dask_engine) == local
    slices = [s["name"] for s in local["slices"]]
    assert "g=early" in slices and "g=late" in slices and "region=<missing> & g=late" in slices


@pytest.mark.parametrize("kind", ["models", "predictions"])
def test_spark_gives_the_local_answer(
    world: dict[str, Any], spark_engine: SparkEngine, kind: str
) -> None:
    assert _compare(world, kind, spark_engine) == _compare(world, kind, "local")


def test_the_counts_are_equal_bit_for_bit(world: dict[str, Any], dask_engine: DaskEngine) -> None:
    local = evaluate(SUITE, world["data"], world["models"], chunk_rows=CHUNK)
    dask = evaluate(SUITE, world["data"], world["models"], chunk_rows=CHUNK, engine=dask_engine)
    assert [s.name for s in dask.stats.slices] == [s.name for s in local.stats.slices]
    assert np.array_equal(dask.stats.cells, local.stats.cells)
    assert local.stats.hist is not None and dask.stats.hist is not None
    assert np.array_equal(dask.stats.hist, local.stats.hist)
    assert local.stats.cells[0].sum() == len(world["whole"])


def test_the_fault_matrix_and_slice_tests_are_the_same_on_every_engine(
    world: dict[str, Any], dask_engine: DaskEngine, spark_engine: SparkEngine
) -> None:
    def matrix(engine: Any) -> dict[str, Any]:
        result = fragility(
            SUITE,
            world["models"],
            world["data"],
            world["scenarios"],
            seed=3,
            n_boot=200,
            chunk_rows=CHUNK,
            engine=engine,
        )
        return result.to_dict()

    local = matrix("local")
    assert {c["scenario"] for c in local["cells"]} == set(FAULTS)
    assert matrix(dask_engine) == local
    assert matrix(spark_engine) == local

    def tests(engine: Any) -> dict[str, Any]:
        report = run_slice_tests(
            SUITE,
            world["models"][0],
            world["data"],
            scenarios=world["scenarios"],
            chunk_rows=CHUNK,
            engine=engine,
        )
        return report.to_dict()

    assert tests(dask_engine) == tests("local")


def test_a_dask_dataframe_with_empty_partitions(
    world: dict[str, Any], dask_engine: DaskEngine
) -> None:
    import dask.dataframe as dd

    frame = dd.from_pandas(world["whole"], npartitions=6)
    frame = frame[frame["g"] != "late"]  # the last partitions lose rows
    rows = world["whole"][world["whole"]["g"] != "late"].reset_index(drop=True)
    empty = dd.from_pandas(rows.iloc[:0], npartitions=1)
    frame = dd.concat([empty, frame, empty])
    assert frame.map_partitions(len).compute().tolist().count(0) >= 2
    local = compare_versions(SUITE.model_copy(update={"tests": []}), *world["models"], rows)
    local_dict = local.to_dict()
    for engine in (dask_engine, None):  # None: the engine a dask DataFrame belongs to
        result = compare_versions(
            SUITE.model_copy(update={"tests": []}), *world["models"], frame, engine=engine
        )
        assert result.to_dict() | {"data": local_dict["data"]} == local_dict
    # predictions files are read at each partition's rows, counted first
    whole = dd.concat([empty, dd.from_pandas(world["whole"], npartitions=5), empty])
    files = world["predictions"]
    result = compare_versions(SUITE, *files, whole, engine=dask_engine, chunk_rows=CHUNK)
    assert result.to_dict() | {"data": "-"} == _compare(world, "predictions", "local") | {
        "data": "-"
    }


def test_a_missing_engine_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(InputError, match=r"pip install 'chaosml\[dask\]'") as dask:
        make_engine("dask")
    with pytest.raises(InputError, match=r"pip install 'chaosml\[spark\]'") as spark:
        make_engine("spark")
    assert "\n" not in str(dask.value) and "\n" not in str(spark.value)


def test_a_spark_table(world: dict[str, Any], spark_engine: SparkEngine) -> None:
    session = spark_engine.session
    session.read.parquet(str(world["data"])).createOrReplaceTempView("eval_rows")
    local = _compare(world, "models", "local")
    result = _compare(world, "models", spark_engine, "eval_rows")
    assert result["data"] == "eval_rows"
    assert result | {"data": local["data"]} == local
    frame = session.table("eval_rows")  # a Spark DataFrame as the data: Spark by default
    v1, v2 = world["models"]
    by_default = compare_versions(SUITE, v1, v2, frame, chunk_rows=CHUNK).to_dict()
    assert by_default["data"] == "<Spark DataFrame>"
    assert by_default | {"data": local["data"]} == local
    with pytest.raises(InputError, match="a Spark table has no row order"):
        _compare(world, "predictions", spark_engine, "eval_rows")


def test_a_worker_killed_mid_job_is_retried_and_the_answer_is_unchanged(
    world: dict[str, Any], dask_engine: DaskEngine
) -> None:
    client = dask_engine.client
    before = client.run(os.getpid)
    killed: list[tuple[int, int, int]] = []
    slow = _Slow(world["models"][0])

    def kill_one(done: int, total: int | None) -> None:
        if not killed:
            pid = next(iter(before.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, done, total or 0))

    result = evaluate(
        SUITE, world["data"], [slow], chunk_rows=100, engine=dask_engine, progress=kill_one
    )
    local = evaluate(SUITE, world["data"], [world["models"][0]], chunk_rows=100)
    pid, done, total = killed[0]
    assert done < total  # the job was under way when the worker died
    assert not _alive(pid)
    assert np.array_equal(result.stats.cells, local.stats.cells)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests
    assert set(client.run(os.getpid).values()) != set(before.values())


class _Slow(ArtifactVersion):
    """The same model, taking 50 ms per partition, so the job outlives a worker."""

    def __init__(self, base: Version) -> None:
        assert isinstance(base, ArtifactVersion)
        super().__init__(base.name, base.path)

    def part_predictor(self, table: Any, label: str, positive: Any) -> Any:
        return _Sleepy(super().part_predictor(table, label, positive))


class _Sleepy:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, rows: pd.DataFrame, start: int) -> Any:
        threading.Event().wait(0.05)
        return self.inner(rows, start)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_csv_and_csv_predictions_are_refused_in_one_line(
    world: dict[str, Any], tmp_path: Path
) -> None:
    csv = tmp_path / "eval.csv"
    world["whole"].to_csv(csv, index=False)
    with pytest.raises(InputError, match="reads Parquet"):
        make_engine("dask").open(csv)
    predictions = tmp_path / "p.csv"
    pd.DataFrame({"prediction": np.zeros(len(world["whole"]), int)}).to_csv(predictions)
    table = make_engine("local").open(world["data"])
    with pytest.raises(VersionError, match="needs Parquet"):
        PredictionsFile("p", predictions).part_predictor(table, "y", 1)


def test_row_groups_larger_than_a_partition_widen_it_and_faults_stay_the_same(
    world: dict[str, Any], dask_engine: DaskEngine, tmp_path: Path
) -> None:
    from chaosml.slices.engines import FAULT_BLOCK, Job

    rows = pd.concat([world["whole"]] * 7, ignore_index=True)  # 25,900 rows
    path = tmp_path / "one-group.parquet"
    rows.to_parquet(path, index=False, row_group_size=len(rows))
    table = make_engine("local").open(path)
    job = Job(
        table=table,
        plan=None,  # type: ignore[arg-type]
        label="y",
        positive=1,
        columns=["y"],
        versions=[],
        chunk_rows=FAULT_BLOCK,
    )
    assert job.ranges() == [(0, 25_900)]  # one read of the row group, not three

    def matrix(engine: Any) -> dict[str, Any]:
        result = fragility(
            SUITE,
            world["models"],
            path,
            world["scenarios"],
            seed=5,
            n_boot=100,
            chunk_rows=FAULT_BLOCK,  # the local pass: three chunks; Dask: one partition
            engine=engine,
        )
        return result.to_dict()

    assert matrix(dask_engine) == matrix("local")


def test_bad_engine_input_is_one_line_and_no_result_is_half_written(
    demo: DemoArtifacts, in_tmp: Path
) -> None:
    from typer.testing import CliRunner

    from chaosml.cli import app
    from chaosml.slices.engines import LOCAL_SCHEDULER, NOT_PARQUET

    needs("dask")
    csv = in_tmp / "eval.csv"
    pd.read_parquet(demo.data).to_csv(csv, index=False)
    suite = Path(__file__).parents[2] / "slices" / "credit.yaml"
    base = ["slices", "compare", "v1", "v2", str(suite), "--config", str(demo.config)]
    cases = [
        (["--data", str(csv), "--engine", "dask"], 2, NOT_PARQUET.format(data=csv, engine="dask")),
        (["--scheduler", "tcp://127.0.0.1:9"], 2, LOCAL_SCHEDULER),
        (
            ["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9", "--html", "c.html"],
            3,
            "dask scheduler tcp://127.0.0.1:9: cannot connect: ",
        ),
    ]
    for extra, code, message in cases:
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == code, result.output
        assert result.stderr.startswith(f"chaosml: error: {message}")
        assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not Path("c.html").exists()


@pytest.fixture(scope="module")
def recorded(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shadow's run folder as the proxy's recorder writes it (the world's rows in batches of
    50, each answered by both models), labelled by id as ``chaosml shadow`` labels it."""
    from collections import Counter

    import yaml

    from chaosml.codecs import CODECS
    from chaosml.proxy.shadow import Recorder
    from chaosml.release.shadow import analyse

    folder = tmp_path_factory.mktemp("shadow")
    whole = world["whole"]
    features = whole.drop(columns=["y"]).astype(object)
    records = features.where(features.notna(), None).to_dict("records")
    answers = [m.model.predict_proba(whole[["a", "b"]])[:, 1] for m in world["models"]]
    recorder = Recorder(folder, CODECS["records"], Counter(), flush=60.0)
    for start in range(0, len(records), 50):
        stop = min(start + 50, len(records))
        ids = [f"r{i}" for i in range(start, stop)]
        bodies = [
            json.dumps(
                {
                    "predictions": (scores[start:stop] >= 0.5).astype(int).tolist(),
                    "scores": scores[start:stop].tolist(),
                    "ids": ids,
                }
            ).encode()
            for scores in answers
        ]
        recorder.put((json.dumps({"instances": records[start:stop]}).encode(), *bodies))
    recorder.close()
    labels = folder / "labels.csv"
    pd.DataFrame({"id": [f"r{i}" for i in range(len(whole))], "y": whole["y"]}).to_csv(labels)
    suite = folder / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE.model_dump(mode="json", exclude_none=True)))
    analyse(folder, suite, labels)
    return folder / "labelled"


def test_a_shadow_s_recorded_pairs_give_one_answer_on_every_engine(
    recorded: Path, dask_engine: DaskEngine, spark_engine: SparkEngine
) -> None:
    versions = [PredictionsFile(n, recorded / f"{n}.parquet") for n in ("primary", "candidate")]
    data = recorded / "rows.parquet"
    local = compare_versions(SUITE, *versions, data, chunk_rows=CHUNK).to_dict()
    for engine in (dask_engine, spark_engine):
        assert (
            compare_versions(SUITE, *versions, data, chunk_rows=CHUNK, engine=engine).to_dict()
            == local
        )
    assert local["overall"]["n"] == 3700 and {"g=early", "g=late"} <= {
        s["name"] for s in local["slices"]
    }
