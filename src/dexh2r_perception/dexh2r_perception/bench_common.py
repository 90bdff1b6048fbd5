"""Small pieces the perception benches share: scenario lists and summary statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from dexh2r_sim.scenario import Scenario


def summary_stats(values: Sequence[float | None], prefix: str) -> dict[str, float | None]:
    """{prefix_median, prefix_p95, prefix_mean} over the finite values (None when there are none)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if not len(v):
        return {f"{prefix}_median": None, f"{prefix}_p95": None, f"{prefix}_mean": None}
    return {
        f"{prefix}_median": float(np.median(v)),
        f"{prefix}_p95": float(np.percentile(v, 95)),
        f"{prefix}_mean": float(v.mean()),
    }


def scenario_list(scenarios: str | Path | Sequence[Scenario]) -> list[Scenario]:
    """A scenario file (a path, or relative to config/) or Scenario objects -> a list."""
    if isinstance(scenarios, (str, Path)):
        from dexh2r_core.paths import config_path
        from dexh2r_sim.scenario import load_scenarios

        path = Path(scenarios)
        return load_scenarios(path if path.exists() else config_path(str(scenarios)))
    return list(scenarios)
