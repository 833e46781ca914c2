"""The tables of a fine-tuning job, their method labels, and where they are written.

- **per-seed (wide)**, the layout of the published AlignFreeze results: one row per
  (method, seed) with ``seed, model, task, method, finetuning_steps, realignment_steps,
  distinct_realignment_samples, repeated_realignment_samples, train_loss, realignment_loss,
  task_loss``, then ``final_eval_<lang>_<metric>`` per target language and metric, their mean
  over languages ``final_eval_avg_<metric>`` and, with source-language data,
  ``final_eval_same_<metric>``;
- **tidy**: one row per (method, seed, language, metric): ``seed, model, task, method, lang,
  metric, score`` (target languages only).

Scores are fractions in [0, 1]. ``layerscope gains`` reads both layouts (``--metric`` picks a
metric of the wide file; a tidy file with several metrics is read one metric at a time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import LayerscopeError
from .registry import Task

WIDE_FIXED = ["seed", "model", "task", "method", "finetuning_steps", "realignment_steps",
              "distinct_realignment_samples", "repeated_realignment_samples", "train_loss", "realignment_loss",
              "task_loss"]
TIDY_COLUMNS = ["seed", "model", "task", "method", "lang", "metric", "score"]
_ALIGNER_NAMES = {"dict": "dico", "eflomal": "eflomal", "embed": "embed"}


def aligner_name(pairs: Any) -> str:
    """Short name of a word-pair source as used in method names: ``dict:…`` -> ``dico``."""
    if isinstance(pairs, str):
        prefix = pairs.split(":", 1)[0].strip().lower()
        return _ALIGNER_NAMES.get(prefix, prefix or "pairs")
    name = str(getattr(pairs, "name", "") or type(pairs).__name__).lower()
    return _ALIGNER_NAMES.get(name, name)


def method_name(realign: str | None, frozen_blocks: Sequence[int], num_layers: int, pairs: Any, *,
                freeze_embeddings: bool = False) -> str:
    """The method label of the published results for a schedule and freeze policy.

    baseline · ``before_<aligner>`` (nothing frozen) · ``freeze_realign_unfreeze_<aligner>``
    (lower half) · ``freeze_realign_unfreeze_last_half_<aligner>`` (upper half) ·
    ``during_<aligner>`` · ``during_partial_freeze_front_<aligner>`` ·
    ``during_partial_freeze_back_<aligner>``; other policies spell out the frozen blocks.
    """
    if realign is None:
        return "baseline"
    aligner = aligner_name(pairs)
    half = num_layers // 2
    frozen = tuple(sorted(frozen_blocks))
    lower, upper = tuple(range(half)), tuple(range(half, num_layers))
    embeddings = freeze_embeddings
    if not embeddings:
        if realign == "before":
            named = {(): "before", lower: "freeze_realign_unfreeze", upper: "freeze_realign_unfreeze_last_half"}
        else:
            named = {(): "during", lower: "during_partial_freeze_front", upper: "during_partial_freeze_back"}
        if frozen in named:
            return f"{named[frozen]}_{aligner}"
    blocks = "-".join(map(str, frozen)) if frozen else "none"
    return f"{realign}_freeze_{blocks}{'_emb' if embeddings else ''}_{aligner}"


# --------------------------------------------------------------------------- result


@dataclass
class FinetuneResult:
    """Tables of a fine-tuning job (what the CLI writes) and where they were written.

    ``wide``: one row per (method, seed), columns ``seed, model, task, method, …,
    final_eval_<lang>_<metric>``. ``tidy``: one row per (method, seed, language, metric).
    ``reference``: per language, the majority-label score (pos, nli). ``histories``: loss
    histories per (method, seed). ``run``: configuration and provenance (``results.json``).
    """

    wide: pd.DataFrame
    tidy: pd.DataFrame
    run: dict[str, Any]
    histories: dict[tuple[str, int], Any] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self, metric: str | None = None) -> pd.DataFrame:
        """Mean and population std over seeds per method × language of ``metric`` (default:
        the task's primary metric)."""
        metric = metric or self.run["primary_metric"]
        frame = self.tidy[self.tidy["metric"] == metric]
        grouped = frame.groupby(["method", "lang"], sort=False)["score"]
        out = grouped.agg(n_seeds="count", mean="mean", std=lambda s: float(s.std(ddof=0))).reset_index()
        if self.reference:
            out["majority"] = out["lang"].map(self.reference)
        return out

    def format_summary(self, metric: str | None = None) -> str:
        table = self.summary(metric)
        metric = metric or self.run["primary_metric"]
        methods = list(dict.fromkeys(table["method"]))
        langs = list(dict.fromkeys(table["lang"]))
        header = ["lang", *methods] + (["majority"] if self.reference else [])
        rows = []
        by = table.set_index(["method", "lang"])
        for lang in langs:
            cells = [lang]
            for method in methods:
                if (method, lang) in by.index:
                    r = by.loc[(method, lang)]
                    cells.append(f"{100 * r['mean']:.1f}" + (f"±{100 * r['std']:.1f}" if r["n_seeds"] > 1 else ""))
                else:
                    cells.append("")
            if self.reference:
                ref = self.reference.get(lang)
                cells.append(f"{100 * ref:.1f}" if ref is not None else "")
            rows.append(cells)
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        seeds = ", ".join(map(str, self.run["config"]["seeds"]))
        lines = [f"{self.run['task']} · {metric} (×100, mean±std over seeds {seeds})",
                 "  ".join(h.ljust(w) for h, w in zip(header, widths)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)


def output_paths(output: str | os.PathLike) -> dict[str, Path]:
    """``results.csv`` -> the wide CSV, ``results.tidy.csv`` and ``results.json`` beside it."""
    path = Path(output)
    if path.suffix.lower() != ".csv":
        raise LayerscopeError("the output is a CSV file name, e.g. -o results.csv", source=path)
    return {"wide": path, "tidy": path.with_name(f"{path.stem}.tidy.csv"), "run": path.with_name(f"{path.stem}.json")}


def check_outputs(paths: dict[str, Path], force: bool) -> None:
    for path in paths.values():
        if path.is_dir():
            raise LayerscopeError("is a directory", source=path)
        if path.exists() and not force:
            raise LayerscopeError("exists; pass --force to replace it", source=path)
    from ..outputs import check_writable_location

    check_writable_location(paths["wide"])



def tables(rows: list[dict[str, Any]], task: Task) -> tuple[pd.DataFrame, pd.DataFrame]:
    wide = pd.DataFrame(rows)
    tidy_rows = []
    for row in rows:
        for column, value in row.items():
            if not column.startswith("final_eval_"):
                continue
            rest = column[len("final_eval_"):]
            for metric in task.metrics:
                if rest.endswith(f"_{metric}"):
                    lang = rest[: -len(metric) - 1]
                    break
            else:  # pragma: no cover - every score column ends with a task metric
                continue
            if lang in ("avg", "same"):
                continue
            tidy_rows.append({"seed": row["seed"], "model": row["model"], "task": row["task"],
                              "method": row["method"], "lang": lang, "metric": metric, "score": value})
    return wide, pd.DataFrame(tidy_rows, columns=TIDY_COLUMNS)


def write(result: FinetuneResult, paths: dict[str, Path]) -> None:
    """Write the three files together: a failure leaves none of them (never a partial set)."""
    import json

    from ..outputs import atomic_write_all

    run_text = json.dumps(result.run, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write_all({
        paths["wide"]: lambda tmp: result.wide.to_csv(tmp, index=False),
        paths["tidy"]: lambda tmp: result.tidy.to_csv(tmp, index=False),
        paths["run"]: lambda tmp: tmp.write_text(run_text, encoding="utf-8"),
    })

