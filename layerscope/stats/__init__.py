"""Statistics: URIEL distances between languages, gain tables over a baseline, the gain regression
(fitting, diagnostics, resampling), intervals and the noise judgement of deltas.

Data enters as tidy tables (probe metrics, task results, gains) and language codes, and leaves
as data frames and result data classes whose ``write`` writes tables. Nothing here draws: the
jobs hand these tables to :mod:`layerscope.show`.
"""

from .gains import GainsResult, compute_gains, read_results
from .regression import RegressionResult, fit_gain_regression
from .targets import gains_from_metrics, parse_target
from .typology import distance, distance_matrix, distances

__all__ = [
    "GainsResult",
    "RegressionResult",
    "compute_gains",
    "distance",
    "distance_matrix",
    "distances",
    "fit_gain_regression",
    "gains_from_metrics",
    "parse_target",
    "read_results",
]
