"""The local engine: a pass in this process."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from chaosml.data import DataSource, open_table
from chaosml.errors import InputError
from chaosml.slices.engines.base import WRONG_DATA, Closing, Job, Progress, add_rows, kind_of
from chaosml.slices.sums import Accumulator, Partial


class LocalEngine(Closing):
    """This process: the data streamed once in chunks, predictions cached per artifact and data."""

    name = "local"
    unit = "rows"

    def open(self, data: object) -> DataSource:
        if not isinstance(data, str | Path | pd.DataFrame):
            raise InputError(
                WRONG_DATA.format(
                    engine=self.name, reads="a path or a pandas DataFrame", kind=kind_of(data)
                )
            )
        return open_table(data)

    def run(self, job: Job, progress: Progress | None) -> Partial:
        table = job.table
        accumulator = Accumulator(job.plan)
        with contextlib.ExitStack() as stack:
            predictors = [
                stack.enter_context(v.predictor(table, job.label, job.positive))
                for v in job.versions
            ]
            for frame in table.chunks(job.columns, job.chunk_rows):
                add_rows(accumulator, frame, (table.name, job.label, job.positive), predictors)
                if progress is not None:
                    progress(accumulator.sums.rows, table.num_rows)
        return accumulator.sums
