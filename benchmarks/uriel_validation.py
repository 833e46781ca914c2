"""Validate layerscope.stats.typology against published full-precision URIEL distances.

Reference: ``uriel_reference/langrank_el.csv`` (477 language pairs of the LangRank study, with
URIEL's genetic, syntactic, featural, phonological, inventory and geographic distances at four
decimals). For every pair, layerscope computes the same six distances from lang2vec 1.1.2's
features (``distance(task_lang, transfer_lang, kind)``; genetic normalised by the transfer
language, as in the table) and the script prints, per distance type, the share of pairs within
0.01 of the reference and the Spearman correlation:

- **all pairs**: every pair where layerscope has a value (NaN = the language has no features of
  that type in lang2vec 1.1.2; those pairs count as not within 0.01);
- **comparable pairs**: leaving out (a) pairs where lang2vec 1.1.2 has no features for a
  language and (b) pairs with a transfer language that the reference's URIEL version did not
  have (ara, aze, fas, msa, orm, swa, uzb: their geographic distance is 1.0 to everything and
  their typological distances are one constant per task language);
- **reference convention**: all pairs again, after imitating how the reference fills a language
  without data (an all-ones feature vector, geographic and genetic distance 1.0); this shows
  that the remaining differences are conventions, not formulas.

Run: ``python benchmarks/uriel_validation.py`` (reads ``$LAYERSCOPE_TEST_DATA`` or
``../shared/data``; exits 0 with a message when the data is absent).
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from layerscope.stats import typology  # noqa: E402
from _data import find_data_dir  # noqa: E402

KINDS = ("syntactic", "phonological", "inventory", "featural", "genetic", "geographic")
TOLERANCE = 0.01


def absent_in_reference(reference: pd.DataFrame) -> set[str]:
    """Transfer languages the reference's URIEL lacked: geographic distance 1.0 to every task language."""
    by_lang = reference.groupby("transfer_lang")["geographic"]
    return {lang for lang, values in by_lang if (values == 1.0).all()}


def reference_convention(task: str, transfer: str, kind: str, absent: set[str]) -> float:
    """Our distance computed with the reference's fill for languages without data."""
    if kind in ("genetic", "geographic"):
        return 1.0 if transfer in absent else typology.distance(task, transfer, kind)

    def vector(code: str) -> np.ndarray:
        v = typology.feature_vector(code, kind)
        return np.ones_like(v) if code in absent or not v.any() else v

    return typology.angular_distance(vector(task), vector(transfer))


def summarize(ours: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> tuple[int, float, float, float]:
    ok = mask & np.isfinite(ours)
    within = float(np.mean(np.abs(ours[mask] - ref[mask]) <= TOLERANCE)) if mask.any() else math.nan
    rho = float(spearmanr(ours[ok], ref[ok]).statistic) if ok.sum() > 2 else math.nan
    worst = float(np.nanmax(np.abs(ours[ok] - ref[ok]))) if ok.any() else math.nan
    return int(mask.sum()), within, rho, worst


def main() -> int:
    directory = find_data_dir("uriel_reference/langrank_el.csv")
    if directory is None:
        print("uriel_reference/langrank_el.csv not found (set LAYERSCOPE_TEST_DATA); nothing to validate")
        return 0
    reference = pd.read_csv(directory / "uriel_reference" / "langrank_el.csv")
    absent = absent_in_reference(reference)
    pairs = list(zip(reference["task_lang"], reference["transfer_lang"]))
    print(f"{len(pairs)} pairs, {reference['task_lang'].nunique()} task languages, "
          f"{reference['transfer_lang'].nunique()} transfer languages; lang2vec 1.1.2 features")
    print(f"transfer languages missing from the reference's URIEL version: {', '.join(sorted(absent))}\n")
    header = (f"{'distance':<13} {'all: n':>6} {'≤0.01':>6} {'rho':>6}   {'comparable: n':>13} {'≤0.01':>6} "
              f"{'rho':>7} {'max|Δ|':>7}   {'ref. convention ≤0.01':>21} {'rho':>6}")
    print(header)
    print("-" * len(header))
    notes = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind in KINDS:
            ours = np.array([typology.distance(a, b, kind) for a, b in pairs])
            ref = reference[kind].to_numpy(float)
            undefined = ~np.isfinite(ours)
            mask_all = np.ones(len(pairs), bool)
            comparable = ~undefined & ~reference["transfer_lang"].isin(absent).to_numpy()
            emulated = np.array([reference_convention(a, b, kind, absent) for a, b in pairs])
            n_all, within_all, rho_all, _ = summarize(ours, ref, mask_all)
            n_cmp, within_cmp, rho_cmp, worst = summarize(ours, ref, comparable)
            _, within_emu, rho_emu, _ = summarize(emulated, ref, mask_all)
            print(f"{kind:<13} {n_all:>6} {within_all:>6.3f} {rho_all:>6.3f}   {n_cmp:>13} {within_cmp:>6.3f} "
                  f"{rho_cmp:>7.4f} {worst:>7.4f}   {within_emu:>21.3f} {rho_emu:>6.3f}")
            notes[kind] = (undefined, comparable & (np.abs(ours - ref) > TOLERANCE))
    print()
    langs = sorted(set(reference["task_lang"]) | set(reference["transfer_lang"]))
    for kind, (undefined, off) in notes.items():
        if kind in ("syntactic", "phonological", "inventory", "featural"):
            lacking = [c for c in langs if not typology.feature_vector(c, kind).any()]
            if lacking:
                print(f"no {kind} features in lang2vec 1.1.2 ({len(lacking)}): {', '.join(lacking)}")
    print("\ncomparable pairs off by more than 0.01, by language involved:")
    for kind, (undefined, off) in notes.items():
        counts = pd.concat([reference.loc[off, "task_lang"], reference.loc[off, "transfer_lang"]]).value_counts()
        counts = counts[counts >= 2] if len(counts) else counts
        print(f"  {kind:<13} {int(off.sum()):>3} pairs" + (": " + ", ".join(f"{k} {v}" for k, v in counts.items())
                                                         if off.any() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
