"""Resampling over languages: permutation p-values (within model/task/method blocks) and
percentile bootstrap intervals, all rows of a language moved together."""

from __future__ import annotations

import numpy as np

from .fitting import _ols_hc3, _pinv_parts

def permutation_indices(langs: np.ndarray, blocks: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, rows) indices that permute the target across languages (see the module docstring)."""
    lang_ids, lang_codes = np.unique(langs, return_inverse=True)
    block_ids, block_codes = np.unique(blocks, return_inverse=True)
    cell = np.full((len(lang_ids), len(block_ids)), -1)
    cell[lang_codes, block_codes] = np.arange(len(langs))
    counts = np.zeros_like(cell)
    np.add.at(counts, (lang_codes, block_codes), 1)
    balanced = bool((counts == 1).all())
    out = np.empty((n, len(langs)), dtype=np.int64)
    for i in range(n):
        if balanced:
            perm = rng.permutation(len(lang_ids))
            out[i] = cell[perm[lang_codes], block_codes]
        else:
            index = np.arange(len(langs))
            for b in range(len(block_ids)):
                rows = np.flatnonzero(block_codes == b)
                index[rows] = rows[rng.permutation(len(rows))]
            out[i] = index
    return out


def permutation_test(X: np.ndarray, y: np.ndarray, langs: np.ndarray, blocks: np.ndarray, *,
                     n_permutations: int, seed: int) -> tuple[float, np.ndarray]:
    """Permutation p-values: (p for R², p per column for |t| with HC3 errors)."""
    rng = np.random.default_rng(seed)
    A, h, _ = _pinv_parts(X)
    B, se, r2 = _ols_hc3(X, y[:, None], A, h)
    t_obs = np.abs(B[:, 0] / se[:, 0])
    index = permutation_indices(langs, blocks, n_permutations, rng)
    exceed_r2 = 0
    exceed_t = np.zeros(X.shape[1])
    for start in range(0, n_permutations, 500):
        Y = y[index[start:start + 500]].T  # (n, chunk)
        Bp, sep, r2p = _ols_hc3(X, Y, A, h)
        exceed_r2 += int((r2p >= r2[0] - 1e-12).sum())
        exceed_t += (np.abs(Bp / sep) >= t_obs[:, None] - 1e-12).sum(axis=1)
    return (1 + exceed_r2) / (1 + n_permutations), (1 + exceed_t) / (1 + n_permutations)


def bootstrap_ci(X: np.ndarray, y: np.ndarray, langs: np.ndarray, *, n_bootstrap: int, seed: int,
                 alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray, int]:
    """Percentile CIs of the OLS coefficients, resampling languages with replacement.

    Replicates whose design is rank-deficient are skipped; returns (low, high, n_used).
    """
    rng = np.random.default_rng(seed)
    unique = list(dict.fromkeys(langs))
    rows_of = [np.flatnonzero(langs == lang) for lang in unique]
    p = X.shape[1]
    draws = []
    for _ in range(n_bootstrap):
        pick = rng.integers(0, len(unique), len(unique))
        rows = np.concatenate([rows_of[i] for i in pick])
        Xb = X[rows]
        if np.linalg.matrix_rank(Xb) < p:
            continue
        draws.append(np.linalg.lstsq(Xb, y[rows], rcond=None)[0])
    if not draws:
        return np.full(p, np.nan), np.full(p, np.nan), 0
    draws = np.array(draws)
    low, high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return low, high, len(draws)
