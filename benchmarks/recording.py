"""The recorders' speed and memory: rows per second the shadow's recorder
(``chaosml.proxy.shadow.Recorder``) and the split's part writer (``chaosml.proxy.canary.Parts``)
sustain into Parquet on one core, and their memory over a long, time-scaled run.

``shadow-live`` is the shadow's recorder as ``chaosml shadow`` sets it: it also writes each
flush as a part for the live view.

Speed: the same exchanges (records codec, the demo's feature columns from
``chaosml.demo.data.make_credit``, an ``id`` per row, 25 to 50 rows per request, the primary's and
the candidate's answers with ``predictions``, ``scores`` and ``ids``) are handed to each recorder
as the proxy hands them over (bytes, one exchange per ``put``), and the recorder's thread decodes
and writes them; the time runs from the first hand-over to the files closed. The baseline, in the
same run: ``json.loads`` of the same request bodies, their ``instances`` joined into one list,
``pandas.DataFrame(records)`` and one ``pyarrow.parquet.write_table`` of it (the rows only: the
recorders also write the two answers). The process is pinned to one core meanwhile. Each figure
is the best of ``--rounds``.

Memory: the recorder is fed ``--hours`` of traffic at ``--rate`` requests per second, time-scaled
(fed as fast as it takes them, its flush interval shortened to ``--flush`` seconds, one flush per
``--rate * 2`` requests as at the default 2 s flush); the process's RSS is sampled after every
flush-worth. Printed, after a warm-up tenth: the first, last and max RSS, the means of the first
and the last tenth of the samples, and the least-squares slope (MB per simulated hour).

Against the code before a change: ``PYTHONPATH=OTHER_CHECKOUT python benchmarks/recording.py``.

Run: python benchmarks/recording.py [--rounds 3] [--requests 2000] [--hours 1] [--rate 50]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from chaosml.codecs import CODECS
from chaosml.demo.data import FEATURES, make_credit
from chaosml.proxy.canary import Parts
from chaosml.proxy.recording import Recording
from chaosml.proxy.shadow import Recorder

Exchange = tuple[bytes, bytes, bytes]


def exchanges(requests: int, *, seed: int = 0) -> list[Exchange]:
    """``requests`` exchanges of 25 to 50 demo rows: request, primary's and candidate's answers."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(25, 51, size=requests)
    frame = make_credit(int(sizes.sum()), seed=seed)[list(FEATURES)]
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    out, at = [], 0
    for i, n in enumerate(sizes):
        rows = records[at : at + n]
        ids = [f"{i}-{k}" for k in range(n)]
        instances = [{"id": key, **row} for key, row in zip(ids, rows, strict=True)]
        scores = rng.random(n).round(6).tolist()
        primary = {"predictions": [int(s > 0.5) for s in scores], "scores": scores, "ids": ids}
        second = [min(s + 0.01, 1.0) for s in scores]
        candidate = {"predictions": [int(s > 0.5) for s in second], "scores": second, "ids": ids}
        out.append(
            (
                json.dumps({"instances": instances}).encode(),
                json.dumps(primary).encode(),
                json.dumps(candidate).encode(),
            )
        )
        at += n
    return out


def recorder(kind: str, folder: Path, flush: float) -> Recording:
    codec = CODECS["records"]
    if kind.startswith("shadow"):  # shadow-live: also a part per flush, as chaosml shadow sets
        return Recorder(folder, codec, Counter(), flush, live=kind == "shadow-live")
    return Parts(folder, codec, flush)


def item(kind: str, exchange: Exchange, when: float) -> Any:
    request, primary, _ = exchange
    if kind.startswith("shadow"):
        return exchange
    return ("primary", 200, request, primary, when, b"user-1")


def feed(rec: Recording, items: list[Any]) -> None:
    """Hand every item over, waiting when the queue is full (a benchmark must not drop)."""
    for one in items:
        rec.queue.put(one)


def rows_of(rec: Recording) -> int:
    return rec.counted()[1]


def timed_recorder(kind: str, data: list[Exchange], folder: Path) -> tuple[float, int]:
    """Seconds for the recorder to take, decode and write ``data``; the rows it wrote."""
    items = [item(kind, e, 1.0) for e in data]
    gc.collect()
    start = time.perf_counter()
    rec = recorder(kind, folder, 2.0)
    feed(rec, items)
    rec.close()
    took = time.perf_counter() - start
    drops, rows = rec.counted()
    if drops:
        raise SystemExit(f"{kind}: the recorder dropped {drops}")
    return took, rows


def timed_baseline(data: list[Exchange], path: Path) -> tuple[float, int]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    gc.collect()
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for request, _, _ in data:
        rows.extend(json.loads(request)["instances"])
    frame = pd.DataFrame(rows)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return time.perf_counter() - start, len(frame)


def speed(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    data = exchanges(args.requests)
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})  # one core: the recorder's threads, Arrow's and ours
    best: dict[str, float] = {}
    rows = 0
    for round_ in range(args.rounds):
        for name in ("baseline", "shadow", "shadow-live", "split"):
            folder = root / f"speed-{name}-{round_}"
            if name == "baseline":
                folder.mkdir()
                took, rows = timed_baseline(data, folder / "rows.parquet")
            else:
                took, written = timed_recorder(name, data, folder)
                if written != rows:
                    raise SystemExit(f"{name}: {written} rows written of {rows}")
            best[name] = min(best.get(name, float("inf")), took)
    os.sched_setaffinity(0, cores)
    rate = {name: rows / took for name, took in best.items()}
    return {
        "requests": args.requests,
        "rows": rows,
        "cores": 1,
        "baseline": "json.loads + pandas.DataFrame(records) + one pyarrow write_table (rows only)",
        "baseline_rows_per_s": round(rate["baseline"]),
        "shadow_rows_per_s": round(rate["shadow"]),
        "shadow_live_rows_per_s": round(rate["shadow-live"]),
        "split_rows_per_s": round(rate["split"]),
        "shadow_vs_baseline": round(rate["shadow"] / rate["baseline"], 3),
        "split_vs_baseline": round(rate["split"] / rate["baseline"], 3),
        "shadow_vs_goal": round(rate["shadow"] / 50_000, 3),
        "shadow_live_vs_goal": round(rate["shadow-live"] / 50_000, 3),
        "split_vs_goal": round(rate["split"] / 50_000, 3),
        "goal": ">= 50,000 rows/s on one core",
    }


def rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def memory(kind: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """RSS over ``args.hours`` of time-scaled traffic into one recorder."""
    data = [item(kind, e, 1.0) for e in exchanges(500, seed=1)]
    per_flush = int(args.rate * 2)  # requests between flushes at the default 2 s flush
    flushes = int(args.hours * 3600 / 2)
    rec = recorder(kind, root / f"memory-{kind}", args.flush)
    samples: list[float] = []
    start = time.perf_counter()
    at = 0
    for _ in range(flushes):
        for _ in range(per_flush):
            while True:
                try:
                    rec.queue.put(data[at % len(data)], timeout=1)
                    break
                except queue.Full:
                    continue
            at += 1
        # one flush-worth handed over: let the recorder catch up and flush before sampling
        while not rec.queue.empty():
            time.sleep(args.flush / 4)
        time.sleep(args.flush * 1.5)
        samples.append(rss_mb())
    rec.close()
    took = time.perf_counter() - start
    drops, rows = rec.counted()
    warm = samples[len(samples) // 10 :]
    hours = np.linspace(args.hours * 0.1, args.hours, len(warm))
    tenth = max(len(warm) // 10, 1)
    slope = float(np.polyfit(hours, warm, 1)[0]) if len(warm) > 1 else 0.0
    on_disk = sum(p.stat().st_size for p in (root / f"memory-{kind}").iterdir()) / 2**20
    return {
        "recorder": kind,
        "simulated_hours": args.hours,
        "requests": at,
        "rows": rows,
        "drops": drops,
        "seconds": round(took, 1),
        "rss_first_mb": round(warm[0], 1),
        "rss_last_mb": round(warm[-1], 1),
        "rss_max_mb": round(max(warm), 1),
        "rss_last_vs_first": round(warm[-1] / warm[0], 3),
        "rss_mean_first_tenth_mb": round(float(np.mean(warm[:tenth])), 1),
        "rss_mean_last_tenth_mb": round(float(np.mean(warm[-tenth:])), 1),
        "rss_last_tenth_vs_first_tenth": round(
            float(np.mean(warm[-tenth:]) / np.mean(warm[:tenth])), 3
        ),
        "slope_mb_per_hour": round(slope, 2),
        "on_disk_mb": round(on_disk, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s being simulated")
    parser.add_argument("--flush", type=float, default=0.02, help="the scaled flush (s)")
    parser.add_argument("--skip", choices=("speed", "memory"), default=None)
    parser.add_argument(
        "--recorders",
        nargs="+",
        choices=("shadow", "shadow-live", "split"),
        default=["shadow", "shadow-live", "split"],
    )
    args = parser.parse_args()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if args.skip != "speed":
            result["speed"] = speed(args, root)
            print(json.dumps(result["speed"], indent=2), flush=True)
        if args.skip != "memory":
            result["memory"] = [memory(kind, args, root) for kind in args.recorders]
            print(json.dumps(result["memory"], indent=2), flush=True)


if __name__ == "__main__":
    main()
