"""Markdown tables for docs/real-model.md from the run directory of analyses/real_model/run.sh.

    python analyses/real_model/tables.py runs/real-model

Prints: the base model's retrieval and debiased CKA with English per layer (mean and range over
languages, and per language at a few layers, languages ordered by family), and for each freeze
policy per layer the mean change over the realigned languages and over the others, with how many
languages moved beyond their 95% interval (retrieval: paired bootstrap over sentences) up or down.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

POLICIES = ("none", "lower", "upper")


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (index first), without the optional tabulate package."""
    header = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        cells = [str(index)] + ["" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def base_profile(metrics: pd.DataFrame) -> str:
    rows = []
    for metric in ("retrieval", "cka"):
        base = metrics[(metrics["model"] == "base") & (metrics["metric"] == metric)]
        stats = base.groupby("layer")["value"].agg(["mean", "min", "max"])
        rows.append(stats.rename(columns=lambda c: f"{metric} {c}"))
    table = pd.concat(rows, axis=1).round(3)
    return markdown(table)


def per_language(metrics: pd.DataFrame, metric: str, layers: list[int]) -> str:
    from layerscope.corpora import languages

    base = metrics[(metrics["model"] == "base") & (metrics["metric"] == metric)]
    wide = base.pivot_table(index="lang", columns="layer", values="value")[layers]
    order = [lang for lang in languages.family_order(list(wide.index)) if lang in wide.index]
    wide = wide.loc[order].round(3)
    wide.columns = [f"layer {layer}" for layer in wide.columns]
    return markdown(wide)


def policy_table(metrics: pd.DataFrame, realigned_langs: set[str]) -> str:
    delta = metrics[metrics["model"] == "delta"]
    out = []
    for metric in ("retrieval", "cka"):
        rows = delta[delta["metric"] == metric].copy()
        rows["group"] = rows["lang"].map(lambda lang: "realigned" if lang in realigned_langs else "other")
        mean = rows.pivot_table(index="layer", columns="group", values="value", aggfunc="mean")
        mean.columns = [f"Δ{metric} {group}" for group in mean.columns]
        out.append(mean)
        if metric == "retrieval":
            up = rows[rows["ci_low"] > 0].groupby("layer").size()
            down = rows[rows["ci_high"] < 0].groupby("layer").size()
            out.append(pd.DataFrame({"retrieval up / down beyond CI": [
                f"{int(up.get(layer, 0))} / {int(down.get(layer, 0))}" for layer in mean.index]}, index=mean.index))
    drift = metrics[(metrics["model"] == "drift") & (metrics["metric"] == "drift_cka")]
    out.append(drift.groupby("layer")["value"].mean().rename("drift CKA (mean)").to_frame())
    weights = metrics[(metrics["model"] == "drift") & (metrics["metric"] == "weight_change")]
    out.append(weights.set_index("layer")["value"].rename("weight change").to_frame())
    return pd.concat(out, axis=1).round(4).pipe(markdown)


def main(argv: list[str]) -> int:
    run = Path(argv[0])
    record = json.loads((run / "run.json").read_text())
    realigned_langs = {lang.strip() for lang in str(record["args"]["langs"]).split(",")}
    first = pd.read_csv(run / f"compare-{POLICIES[0]}" / "metrics.csv")
    n_langs = first[first["model"] == "base"]["lang"].nunique()
    print(f"## Base model: {n_langs} languages, mean / min / max over languages\n")
    print(base_profile(first))
    for metric in ("retrieval", "cka"):
        print(f"\n## Base model, {metric} per language (family order)\n")
        print(per_language(first, metric, [0, 3, 6, 8, 9, 10, 12]))
    for policy in POLICIES:
        metrics = pd.read_csv(run / f"compare-{policy}" / "metrics.csv")
        info = record["runs"][policy]
        print(f"\n## Policy {policy}: frozen blocks {info['frozen_blocks'] or 'none'}, loss "
              f"{info['first_loss']:.3f} → {info['final_loss']:.3f}\n")
        print(policy_table(metrics, realigned_langs))
    print(f"\nrealigned languages: {', '.join(sorted(realigned_langs))}; total {record['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
