"""The gains job: per-language gains of task results over a baseline, written with their heatmap.

The statistics (reading results, bands, counts, the paper table) are in
:mod:`layerscope.stats.gains`; this job hands out their result with a ``write`` that also draws
the heatmap (:mod:`layerscope.show.regression`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._callable import make_callable, promote
from .show.regression import gains_heatmap, save_figure
from .stats import gains as statistics
from .stats.gains import GainsResult


@dataclass
class GainsReport(GainsResult):
    """Gains as the gains job hands them out: ``write`` also draws the heatmap."""

    def write(self, directory: str | Path, *, figures: bool = True, settings: dict[str, Any] | None = None) -> list[Path]:
        """Write gains.csv, averages.csv, counts.csv, table.txt, gains.json and the heatmap."""
        written = super().write(directory, settings=settings)
        if figures:
            written += save_figure(gains_heatmap(self), Path(directory) / "figures", "gains_heatmap")
        return written


@functools.wraps(statistics.compute_gains, assigned=("__name__", "__qualname__", "__doc__"))
def compute_gains(*args: Any, **kwargs: Any) -> GainsReport:
    return promote(statistics.compute_gains(*args, **kwargs), GainsReport)


# ``layerscope.gains(...)`` is the public name of compute_gains; the submodule of the same name
# shadows the package attribute once imported, so the module itself is made callable.
make_callable(__name__, compute_gains)
