"""The estimators of the gain regression: OLS with HC3 standard errors and a mixed model with a
random intercept per language, in the scikit-learn style (``fit`` then trailing-underscore results)."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

def _pinv_parts(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(A = (XᵀX)⁻¹Xᵀ of shape (p, n), leverages h of shape (n,), rank)."""
    A = np.linalg.pinv(X)
    h = np.einsum("ij,ji->i", X, A)
    return A, h, int(np.linalg.matrix_rank(X))


def _ols_hc3(X: np.ndarray, Y: np.ndarray, A: np.ndarray | None = None, h: np.ndarray | None = None):
    """Coefficients (p, m), HC3 standard errors (p, m) and R² (m,) for each column of Y."""
    if A is None or h is None:
        A, h, _ = _pinv_parts(X)
    Y2 = Y.reshape(len(Y), -1)
    B = A @ Y2
    E = Y2 - X @ B
    scale = np.maximum(1.0 - h, 1e-12) ** 2
    se = np.sqrt((A ** 2) @ (E ** 2 / scale[:, None]))
    centred = Y2 - Y2.mean(axis=0)
    sst = (centred ** 2).sum(axis=0)
    r2 = 1.0 - (E ** 2).sum(axis=0) / np.where(sst > 0, sst, np.nan)
    return B, se, r2


# ---------------------------------------------------------------------------------------------
# estimators


class OLSRegression:
    """OLS with heteroscedasticity-robust (HC3 by default) errors, via statsmodels.

    Parameters are stored by ``__init__``; ``fit(X, y)`` with X of shape (n, p) (include the
    intercept column yourself) returns self and sets ``coef_``, ``bse_``, ``conf_int_`` (p, 2),
    ``pvalues_``, ``rsquared_``, ``rsquared_adj_``, ``n_obs_`` and ``feature_names_``.
    """

    def __init__(self, cov_type: str = "HC3", alpha: float = 0.05) -> None:
        self.cov_type = cov_type
        self.alpha = alpha

    def fit(self, X, y, feature_names: Sequence[str] | None = None) -> "OLSRegression":
        import statsmodels.api as sm

        X, y = _check_xy(X, y)
        result = sm.OLS(y, X).fit(cov_type=self.cov_type)
        self.coef_ = np.asarray(result.params, dtype=float)
        self.bse_ = np.asarray(result.bse, dtype=float)
        self.conf_int_ = np.asarray(result.conf_int(alpha=self.alpha), dtype=float)
        self.pvalues_ = np.asarray(result.pvalues, dtype=float)
        self.rsquared_ = float(result.rsquared)
        self.rsquared_adj_ = float(result.rsquared_adj)
        self.n_obs_ = int(result.nobs)
        self.feature_names_ = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(X.shape[1])]
        return self

    def predict(self, X) -> np.ndarray:
        return np.asarray(X, dtype=float) @ self.coef_


class MixedRegression:
    """Linear mixed model with a random intercept per group (language), via statsmodels MixedLM.

    ``fit(X, y, groups)`` returns self and sets ``coef_``, ``bse_``, ``conf_int_``, ``pvalues_``
    (fixed effects), ``group_var_`` (random-intercept variance), ``scale_`` (residual variance),
    ``converged_`` and ``feature_names_``.
    """

    def __init__(self, reml: bool = True, alpha: float = 0.05) -> None:
        self.reml = reml
        self.alpha = alpha

    def fit(self, X, y, groups, feature_names: Sequence[str] | None = None) -> "MixedRegression":
        import statsmodels.api as sm
        from statsmodels.tools.sm_exceptions import ConvergenceWarning

        X, y = _check_xy(X, y)
        groups = np.asarray(groups)
        if groups.shape != (len(y),):
            raise ValueError(f"groups must have shape ({len(y)},), got {groups.shape}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            result = sm.MixedLM(y, X, groups=groups).fit(reml=self.reml)
        k = X.shape[1]
        self.coef_ = np.asarray(result.fe_params, dtype=float)
        self.bse_ = np.asarray(result.bse_fe, dtype=float)
        self.conf_int_ = np.asarray(result.conf_int(alpha=self.alpha), dtype=float)[:k]
        self.pvalues_ = np.asarray(result.pvalues, dtype=float)[:k]
        self.group_var_ = float(np.asarray(result.cov_re).ravel()[0])
        self.scale_ = float(result.scale)
        self.converged_ = bool(result.converged) and not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        self.feature_names_ = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(k)]
        return self


def _check_xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"X must have shape (n, p) and y shape (n,), got {X.shape} and {y.shape}")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise ValueError("X and y must be finite")
    return X, y
