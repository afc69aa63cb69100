"""Type aliases shared across chaosml."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
# Columns of equal length: a request's rows (object arrays) or a whole frame's (typed arrays).
Table = dict[str, npt.NDArray[Any]]
