"""Per-language gains of a method over a baseline, from per-seed task results.

Two layouts are read:

- **per-seed (wide)**, as in the published AlignFreeze results: one row per (seed, method),
  columns ``seed``, ``method``, optionally ``model`` and ``task``, and one
  ``final_eval_<lang>_<metric>`` column per language (``eval_<lang>_<metric>`` when a file has
  no ``final_eval_`` columns). ``avg`` and ``same`` are summaries, not languages, and are skipped.
- **tidy**: columns ``seed, method, lang, score`` (optionally ``model``, ``task``).

Per (model, task, method, language): mean and population standard deviation over seeds
(undefined, NaN, with a single seed), the difference to the baseline's mean, and where the mean
falls against the baseline's one-standard-deviation band: ``above`` if
``mean > baseline mean + baseline std``, ``below`` if ``mean < baseline mean − baseline std``,
else ``within`` (``undefined`` when the baseline has a single seed). Scores in [0, 1] are shown
in points (×100).

Two conventions decide the band; both are always computed, ``convention`` picks the one that
``band`` and the counts use:

- ``published`` (default), as the published AlignFreeze notebook counts: means and stds rounded
  to ``round_digits`` (default 1, i.e. 0.1 point, as numpy/pandas round) and then compared as
  floats, so the float sum decides exact ties (62.3 + 0.3 = 62.599999999999994 < 62.6: above).
- ``exact``: the unrounded means and stds.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .. import outputs, provenance
from ..corpora import languages
from ..corpora.tables import numeric_column, read_user_csv
from ..errors import LayerscopeError

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("avg", "same")
METRIC_PREFERENCE = ("f1", "accuracy", "em")
KEYS = ["model", "task", "method"]
TIDY_COLUMNS = ["model", "task", "method", "seed", "lang", "score"]
_WIDE = re.compile(r"^(final_eval|eval)_([a-z]{2,3}(?:-[a-z]+)?|avg|same)_([a-z0-9_]+)$")


# ---------------------------------------------------------------------------------------------
# reading


def _canonical(code: str) -> str:
    return languages.normalize(code) if languages.is_known(code) else str(code).strip().lower()


def _require(frame: pd.DataFrame, columns: Iterable[str], source: object, layout: str) -> None:
    for column in columns:
        if column not in frame.columns:
            raise LayerscopeError(f"missing column {column!r} ({layout} layout needs "
                                  f"{', '.join(columns)})", source=source)


def _labels(frame: pd.DataFrame, source: object) -> tuple[pd.Series, pd.Series]:
    stem = Path(str(source)).stem if source is not None else "results"
    model = frame["model"].astype(str) if "model" in frame.columns else pd.Series(stem, index=frame.index)
    task = frame["task"].astype(str) if "task" in frame.columns else pd.Series("", index=frame.index)
    return model, task


def wide_metrics(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Metric -> languages available in a per-seed (wide) table."""
    prefix = "final_eval" if any(str(c).startswith("final_eval_") for c in frame.columns) else "eval"
    out: dict[str, list[str]] = {}
    for column in frame.columns:
        match = _WIDE.match(str(column))
        if match and match.group(1) == prefix and match.group(2) not in SUMMARY_COLUMNS:
            out.setdefault(match.group(3), []).append(match.group(2))
    return out


def _from_wide(frame: pd.DataFrame, source: object, metric: str | None) -> tuple[pd.DataFrame, str]:
    _require(frame, ["seed", "method"], source, "per-seed")
    available = wide_metrics(frame)
    if not available:
        raise LayerscopeError("no score columns: expected final_eval_<lang>_<metric> columns", source=source)
    if metric is None:
        if len(available) == 1:
            metric = next(iter(available))
        else:
            metric = next((m for m in METRIC_PREFERENCE if m in available), sorted(available)[0])
            log.info("%s: scores %s chosen among %s (use --metric to choose)", source, metric,
                     ", ".join(sorted(available)))
    if metric not in available:
        raise LayerscopeError(f"no scores for metric {metric!r}: available are {', '.join(sorted(available))}",
                              source=source)
    prefix = "final_eval" if any(str(c).startswith("final_eval_") for c in frame.columns) else "eval"
    model, task = _labels(frame, source)
    parts = []
    for lang in available[metric]:
        column = f"{prefix}_{lang}_{metric}"
        parts.append(pd.DataFrame({"model": model, "task": task, "method": frame["method"].astype(str),
                                   "seed": frame["seed"], "lang": _canonical(lang),
                                   "score": numeric_column(frame, column, source)}))
    return pd.concat(parts, ignore_index=True), metric


def _from_tidy(frame: pd.DataFrame, source: object) -> pd.DataFrame:
    _require(frame, ["seed", "method", "lang", "score"], source, "tidy")
    model, task = _labels(frame, source)
    return pd.DataFrame({"model": model, "task": task, "method": frame["method"].astype(str),
                         "seed": frame["seed"], "lang": [_canonical(c) for c in frame["lang"].astype(str)],
                         "score": numeric_column(frame, "score", source)})


def read_results(path: str | Path | pd.DataFrame, *, metric: str | None = None,
                 source: object | None = None) -> pd.DataFrame:
    """Task results in either layout -> tidy ``model, task, method, seed, lang, score``.

    ``metric`` picks the score columns of a per-seed file (default: the only one, else
    f1, accuracy, em in that order). Errors name the file and the column.
    """
    if isinstance(path, pd.DataFrame):
        frame = path
        source = source or "results table"
    else:
        source = Path(path)
        frame = read_user_csv(source, what="results file")
    frame = frame.rename(columns={c: str(c).strip() for c in frame.columns})
    repeated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise LayerscopeError(f"column {repeated[0]!r} appears more than once", source=source)
    if {"lang", "score"} <= set(frame.columns):
        chosen = metric or "score"
        if "metric" in frame.columns:
            available = sorted({str(m) for m in frame["metric"].dropna().unique()})
            if metric is None:
                chosen = next((m for m in METRIC_PREFERENCE if m in available), available[0] if available else "score")
                if len(available) > 1:
                    log.info("%s: scores %s chosen among %s (use --metric to choose)", source, chosen,
                             ", ".join(available))
            elif metric not in available:
                raise LayerscopeError(f"no scores for metric {metric!r}: available are {', '.join(available)}",
                                      source=source)
            frame = frame[frame["metric"].astype(str) == chosen]
        tidy = _from_tidy(frame, source)
        tidy.attrs["metric"] = chosen
    elif any(_WIDE.match(str(c)) for c in frame.columns):
        tidy, chosen = _from_wide(frame, source, metric)
        tidy.attrs["metric"] = chosen
    else:
        raise LayerscopeError(
            "neither layout: expected columns seed, method, lang, score (tidy) or seed, method, "
            "final_eval_<lang>_<metric> (per-seed)", source=source)
    if tidy["seed"].isna().any():
        raise LayerscopeError("column 'seed' has empty values", source=source)
    duplicated = tidy.duplicated(["model", "task", "method", "seed", "lang"])
    if duplicated.any():
        row = tidy[duplicated].iloc[0]
        raise LayerscopeError(f"duplicate result for method {row['method']!r}, seed {row['seed']}, "
                              f"language {row['lang']!r}", source=source)
    tidy.attrs["source"] = str(source)
    return tidy


# ---------------------------------------------------------------------------------------------
# gains


@dataclass
class GainsResult:
    """Per-language gains over a baseline and the below / within / above counts.

    ``table``: one row per (model, task, method, lang) with ``n_seeds, mean, std,
    baseline_n_seeds, baseline_mean, baseline_std, delta``, the ``*_rounded`` statistics, and
    ``band_published``, ``band_exact`` and ``band`` (the one of ``convention``).
    ``averages``: per (model, task, method) the mean over languages, seed by seed, then
    mean ± std over seeds. ``counts``: per (model, task, method) the numbers of languages
    below / within / above the baseline band under ``convention`` and, suffixed
    ``_published`` / ``_exact``, under each convention. Scores are in ``unit``.
    """

    table: pd.DataFrame
    averages: pd.DataFrame
    counts: pd.DataFrame
    baseline: str
    methods: list[str]
    metric: str
    unit: str
    round_digits: int = 1
    convention: str = "published"
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def paper_table(self) -> str:
        return format_paper_table(self)

    def write(self, directory: str | Path, *, settings: dict[str, Any] | None = None) -> list[Path]:
        """Write gains.csv, averages.csv, counts.csv, table.txt and gains.json (the heatmap is drawn
        by the gains job, :class:`layerscope.gains.GainsReport`)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, frame in (("gains.csv", self.table), ("averages.csv", self.averages), ("counts.csv", self.counts)):
            written.append(outputs.atomic_write(directory / name,
                                                lambda tmp, f=frame: f.to_csv(tmp, index=False, float_format="%.6g")))
        written.append(outputs.atomic_write_text(directory / "table.txt", self.paper_table() + "\n"))
        meta = {"baseline": self.baseline, "methods": self.methods, "metric": self.metric, "unit": self.unit,
                "convention": self.convention, "round_digits": self.round_digits,
                "band": "baseline mean ± baseline population std over seeds",
                "sources": self.sources, "notes": self.notes, "versions": provenance.versions(),
                **(settings or {})}
        written.append(outputs.atomic_write_json(directory / "gains.json", meta))
        return written


def _select_methods(available: Sequence[str], baseline: str, methods: Sequence[str] | str | None,
                    source: object | None = None) -> list[str]:
    """The methods to compare with ``baseline`` (names or shell patterns); errors name ``source``."""
    if baseline not in available:
        near = difflib.get_close_matches(baseline, available, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise LayerscopeError(f"baseline method {baseline!r} not in the results: methods are "
                              f"{', '.join(available)}{hint}", source=source)
    if methods is None:
        return [m for m in available if m != baseline]
    patterns = [p.strip() for p in (methods.split(",") if isinstance(methods, str) else methods) if p.strip()]
    chosen: list[str] = []
    for pattern in patterns:
        matches = [m for m in available if fnmatch.fnmatchcase(m, pattern)] if any(ch in pattern for ch in "*?[") \
            else [pattern] if pattern in available else []
        if not matches:
            near = difflib.get_close_matches(pattern, available, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise LayerscopeError(f"method {pattern!r} not in the results: methods are {', '.join(available)}{hint}",
                                  source=source)
        chosen += [m for m in matches if m not in chosen and m != baseline]
    if not chosen:
        raise LayerscopeError(f"no method to compare with the baseline {baseline!r}", source=source)
    return chosen


def _std(values: pd.Series) -> float:
    return float(np.std(values.to_numpy(dtype=float), ddof=0)) if len(values) > 1 else math.nan


def _band(mean, low_ref, std_ref) -> np.ndarray:
    mean, low_ref, std_ref = (np.asarray(v, dtype=float) for v in (mean, low_ref, std_ref))
    out = np.where(mean > low_ref + std_ref, "above", np.where(mean < low_ref - std_ref, "below", "within"))
    return np.where(np.isnan(mean) | np.isnan(std_ref) | np.isnan(low_ref), "undefined", out).astype(object)


CONVENTIONS = ("published", "exact")


def published_round(values, digits: int) -> np.ndarray:
    """Values rounded to ``digits`` decimals as numpy/pandas ``round`` does (NaN kept).

    The result is compared as floats afterwards, as the published notebook did, so that a sum
    such as 62.3 + 0.3 = 62.599999999999994 decides a tie at the band's edge."""
    return np.round(np.asarray(values, dtype=float), digits)


def compute_gains(
    results: str | Path | pd.DataFrame | Sequence[str | Path | pd.DataFrame],
    *,
    baseline: str = "baseline",
    methods: Sequence[str] | str | None = None,
    metric: str | None = None,
    scale: float | str = "auto",
    round_digits: int | None = None,
    convention: str = "published",
    langs: Sequence[str] | None = None,
    exclude_langs: Sequence[str] | None = None,
) -> GainsResult:
    """Per-language mean ± std over seeds, difference to the baseline, band counts.

    ``results``: one or several files or DataFrames in the per-seed or tidy layout (see the
    module docstring). ``methods``: names or shell patterns (``freeze_realign_unfreeze_*``);
    default all but the baseline. ``scale``: multiply scores by this; ``"auto"`` = 100 when all
    scores lie in [0, 1] (points), else 1. ``convention``: ``published`` (default: means and
    stds rounded to ``round_digits`` decimals, default 1, then compared as floats) or ``exact``
    (unrounded); both are in the table and the counts, ``band`` follows ``convention``.
    ``langs`` keeps only these languages, ``exclude_langs`` leaves these out (e.g. the source
    language of a zero-shot experiment); the averages are over the languages kept.
    """
    if convention not in CONVENTIONS:
        raise LayerscopeError(f"unknown band convention {convention!r}: use one of {', '.join(CONVENTIONS)}")
    digits = 1 if round_digits is None else int(round_digits)
    items = list(results) if isinstance(results, (list, tuple)) else [results]
    if not items:
        raise LayerscopeError("no results given")
    frames = [read_results(item, metric=metric) for item in items]
    tidy = pd.concat(frames, ignore_index=True)
    sources = ", ".join(str(f.attrs.get("source", "results table")) for f in frames)
    tidy = _select_langs(tidy, langs, exclude_langs, sources)
    metrics_used = sorted({f.attrs.get("metric", "score") for f in frames})
    notes: list[str] = []
    missing = int(tidy["score"].isna().sum())
    if missing:
        notes.append(f"{missing} empty score(s) (blank, NA or nan cells) left out")
        log.info("%s: %d empty score(s) left out", sources, missing)
    tidy = tidy.dropna(subset=["score"])
    if tidy.empty:
        raise LayerscopeError("the results hold no scores", source=sources)
    if scale == "auto":
        factor = 100.0 if tidy["score"].between(0.0, 1.0).all() else 1.0
    else:
        factor = float(scale)
    tidy = tidy.assign(score=tidy["score"] * factor)
    unit = "points (×100)" if factor == 100.0 else ("score" if factor == 1.0 else f"score × {factor:g}")
    chosen = _select_methods(list(dict.fromkeys(tidy["method"])), baseline, methods, source=sources)

    def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
        grouped = frame.groupby(KEYS + ["lang"], sort=False)["score"]
        return grouped.agg(n_seeds="count", mean="mean", std=_std).reset_index()

    stats = aggregate(tidy[tidy["method"].isin([baseline, *chosen])])
    base = stats[stats["method"] == baseline].drop(columns="method").rename(
        columns={"n_seeds": "baseline_n_seeds", "mean": "baseline_mean", "std": "baseline_std"})
    table = stats[stats["method"].isin(chosen)].merge(base, on=["model", "task", "lang"], how="left")
    if table["baseline_mean"].isna().any():
        lacking = table[table["baseline_mean"].isna()]
        notes.append("no baseline result for " + ", ".join(sorted(set(
            f"{r.model}/{r.lang}" for r in lacking.itertuples()))) + ": left out")
        table = table.dropna(subset=["baseline_mean"])
    table["delta"] = table["mean"] - table["baseline_mean"]
    for column in ("mean", "std", "baseline_mean", "baseline_std"):
        table[f"{column}_rounded"] = published_round(table[column], digits)
    table["delta_rounded"] = published_round(table["mean_rounded"] - table["baseline_mean_rounded"], digits)
    table["band_published"] = _band(table["mean_rounded"], table["baseline_mean_rounded"],
                                    table["baseline_std_rounded"])
    table["band_exact"] = _band(table["mean"], table["baseline_mean"], table["baseline_std"])
    table["band"] = table[f"band_{convention}"]
    for (model, method), group in stats.groupby(["model", "method"], sort=False):
        if (group["n_seeds"] < 2).any():
            what = "the baseline" if method == baseline else f"method {method!r}"
            notes.append(f"{model}: {what} has a single seed for {int((group['n_seeds'] < 2).sum())} "
                         "language(s): its std is undefined" +
                         ("; the band comparison is undefined there" if method == baseline else ""))
    order = {m: i for i, m in enumerate([baseline, *chosen])}
    lang_order = {c: i for i, c in enumerate(languages.family_order(table["lang"].unique()))}
    table = table.sort_values(["model", "task"], kind="stable")
    table = table.assign(_m=table["method"].map(order), _l=table["lang"].map(lang_order))
    table = table.sort_values(["model", "task", "_m", "_l"], kind="stable").drop(columns=["_m", "_l"])
    table = table.reset_index(drop=True)

    averages = _averages(tidy[tidy["method"].isin([baseline, *chosen])], order)
    counts = _counts(table)
    return GainsResult(table=table, averages=averages, counts=counts, baseline=baseline, methods=chosen,
                       metric=",".join(metrics_used), unit=unit, round_digits=digits, convention=convention,
                       notes=notes,
                       sources=[str(f.attrs.get("source", "")) for f in frames])


def _select_langs(tidy: pd.DataFrame, langs: Sequence[str] | None, exclude: Sequence[str] | None,
                  sources: str) -> pd.DataFrame:
    """The rows of the languages asked for; a language named that the results lack is an error."""
    langs = None if langs is None else [_canonical(code) for code in langs]
    exclude = [_canonical(code) for code in exclude or ()]
    present = set(tidy["lang"])
    for option, chosen in (("langs", langs), ("exclude_langs", exclude)):
        unknown = sorted(set(chosen or ()) - present)
        if unknown:
            raise LayerscopeError(f"{option}: no results for {', '.join(unknown)} "
                                  f"(the results have {', '.join(sorted(present))})", source=sources)
    keep = tidy["lang"].isin(langs) if langs is not None else pd.Series(True, index=tidy.index)
    if exclude:
        keep &= ~tidy["lang"].isin(exclude)
    if not keep.any():
        raise LayerscopeError("no language left after langs / exclude_langs", source=sources)
    return tidy[keep]


def _averages(tidy: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    per_seed = tidy.groupby(KEYS + ["seed"], sort=False)["score"].mean().reset_index()
    out = per_seed.groupby(KEYS, sort=False)["score"].agg(n_seeds="count", mean="mean", std=_std).reset_index()
    out = out.assign(_m=out["method"].map(order)).sort_values(["model", "task", "_m"]).drop(columns="_m")
    return out.reset_index(drop=True)


def _counts(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (model, task, method), group in table.groupby(KEYS, sort=False):
        row = {"model": model, "task": task, "method": method, "n_languages": len(group),
               "mean_delta": float(group["delta"].mean())}
        for suffix in ("", "_published", "_exact"):
            for band in ("below", "within", "above", "undefined"):
                row[band + suffix] = int((group["band" + suffix] == band).sum())
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# text


def _cell(mean: float, std: float, band: str | None = None) -> str:
    text = f"{mean:.1f}" + (f"±{std:.1f}" if not math.isnan(std) else "±n/a")
    return text + {"above": " +", "below": " -"}.get(band or "", "  ")


def shorten_labels(values: Iterable[str]) -> dict[str, str]:
    """Each distinct value without the prefix and suffix (cut at - or _) that all of them share.

    ``freeze_realign_unfreeze_dico`` / ``..._awesome`` -> ``dico`` / ``awesome``;
    ``bert-base-multilingual-cased`` / ``distilbert-base-...`` -> ``bert`` / ``distilbert``.
    A single value, or values that would become empty, are kept whole.
    """
    names = sorted({str(v) for v in values})
    if len(names) < 2:
        return {n: n for n in names}

    def cut(common: str, at_end: bool) -> str:
        cuts = [i for i, ch in enumerate(common) if ch in "-_"]
        if not cuts:
            return ""
        return common[cuts[0]:] if at_end else common[: cuts[-1] + 1]

    prefix = cut(os.path.commonprefix(names), at_end=False)
    suffix = cut(os.path.commonprefix([n[::-1] for n in names])[::-1], at_end=True)
    if any(len(n) <= len(prefix) + len(suffix) for n in names):
        return {n: n for n in names}
    return {n: n[len(prefix): len(n) - len(suffix)] for n in names}


def _common_prefix(names: Sequence[str]) -> str:
    """The longest common ``_``-delimited prefix of several method names ('' if none useful)."""
    if len(names) < 2:
        return ""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""
    return prefix if len(prefix) >= 4 and all(len(n) > len(prefix) for n in names) else ""


def format_paper_table(result: GainsResult) -> str:
    """Languages × methods, ``mean±std`` per cell, ``+``/``-`` outside the baseline band."""
    blocks = []
    prefix = _common_prefix(result.methods)
    shown = "_rounded" if result.convention == "published" else ""  # the values the band compared
    for (model, task), block in result.table.groupby(["model", "task"], sort=False):
        methods = [m for m in result.methods if m in set(block["method"])]
        langs = list(dict.fromkeys(block["lang"]))
        header = ["lang", result.baseline, *[m[len(prefix):] for m in methods]]
        rows = []
        by = block.set_index(["method", "lang"])
        for lang in langs:
            first = by.loc[(methods[0], lang)] if (methods[0], lang) in by.index else None
            cells = [lang, _cell(first["baseline_mean" + shown], first["baseline_std" + shown])
                     if first is not None else ""]
            for method in methods:
                if (method, lang) in by.index:
                    r = by.loc[(method, lang)]
                    cells.append(_cell(r["mean" + shown], r["std" + shown], r["band"]))
                else:
                    cells.append("")
            rows.append(cells)
        avg = result.averages[(result.averages["model"] == model) & (result.averages["task"] == task)].set_index("method")
        rows.append(["avg", *[_cell(avg.loc[m, "mean"], avg.loc[m, "std"]) if m in avg.index else ""
                              for m in [result.baseline, *methods]]])
        counts = result.counts[(result.counts["model"] == model) & (result.counts["task"] == task)].set_index("method")
        for convention in (result.convention, *[c for c in CONVENTIONS if c != result.convention]):
            rows.append([f"-/=/+ {convention}", "", *[
                "/".join(str(counts.loc[m, f"{band}_{convention}"]) for band in ("below", "within", "above"))
                for m in methods]])
        if (counts["undefined"] > 0).any():
            rows.append(["undefined", "", *[str(counts.loc[m, "undefined"]) for m in methods]])
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        title = f"{model}" + (f" · {task}" if task else "") + f" · {result.metric} ({result.unit})"
        if prefix:
            title += f" · methods {prefix}*"
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths))]
        lines.append("  ".join("-" * w for w in widths))
        for i, row in enumerate(rows):
            if i == len(langs):
                lines.append("  ".join("-" * w for w in widths))
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
        blocks.append("\n".join(line.rstrip() for line in lines))
    legend = (f"mean±std over seeds (population std); + / -: mean above / below the {result.baseline} "
              f"mean ± its std ({result.convention} convention); -/=/+: languages below / within / above; "
              f"published: means and stds rounded to {result.round_digits} decimal(s), then compared as "
              "floats (as the published AlignFreeze counts); exact: unrounded")
    text = "\n\n".join(blocks) + "\n\n" + legend
    if result.notes:
        text += "\n" + "\n".join(f"note: {n}" for n in result.notes)
    return text
