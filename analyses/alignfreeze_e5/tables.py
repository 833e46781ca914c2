"""Markdown tables for docs/alignfreeze-e5.md from the outputs of analyses/alignfreeze_e5/run.sh.

    python analyses/alignfreeze_e5/tables.py analyses/alignfreeze_e5/runs --published ../shared/data/alignfreeze_results

Prints, from ``RUNS/gains`` and ``RUNS/gains-exact`` (``layerscope gains``) and the sweep's run
directories:

- the below / within / above counts of each method, with means and stds rounded to 0.1 point as
  published and exact, and the average over languages;
- the per-language table: baseline mean ± std, each method's Δ and band; the same Δ with a 95 %
  Welch t interval over seeds (beyond the noise of the seeds or not);
- the same counts for the published mBERT and DistilmBERT PoS results (dictionary aligner) on the
  languages both experiments evaluate (``layerscope gains --langs``, written under
  ``RUNS/published/``);
- compute: seconds per run (realignment + fine-tuning + evaluation), in all.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd


def _real_model_tables():
    """analyses/real_model/tables.py, whose Markdown writer these tables share."""
    path = Path(__file__).resolve().parents[1] / "real_model" / "tables.py"
    spec = importlib.util.spec_from_file_location("real_model_tables", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


markdown = _real_model_tables().markdown

METHODS = {"before_dico": "full (none frozen)", "freeze_realign_unfreeze_dico": "lower half frozen (AlignFreeze)",
           "freeze_realign_unfreeze_last_half_dico": "upper half frozen"}
PUBLISHED = {"mBERT": "bert-base-multilingual-cased__opus100__udpos.csv",
             "DistilmBERT": "distilbert-base-multilingual-cased__opus100__udpos.csv"}
SIGN = {"above": "+", "below": "−", "within": ""}


def counts_table(counts: pd.DataFrame, label: str) -> pd.DataFrame:
    """One row per method: below / within / above (published rounding and exact), mean Δ."""
    rows = {}
    for _, row in counts.iterrows():
        rows[f"{label} {METHODS.get(row['method'], row['method'])}"] = {
            "languages": int(row["n_languages"]),
            "below / within / above (0.1-point rounding)":
                f"{row['below_published']} / {row['within_published']} / {row['above_published']}",
            "exact": f"{row['below_exact']} / {row['within_exact']} / {row['above_exact']}",
            "mean Δ (points)": round(float(row["mean_delta"]), 2)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model · method"
    return table


def per_language(gains: pd.DataFrame, realigned: set[str]) -> pd.DataFrame:
    """Baseline mean ± std and each method's Δ with its band sign, one row per language."""
    first = gains[gains["method"] == next(iter(METHODS))].set_index("lang")
    table = pd.DataFrame(index=first.index)
    table["realigned on"] = ["yes" if lang in realigned else "no" for lang in table.index]
    table["baseline"] = [f"{m:.1f} ± {s:.1f}" for m, s in zip(first["baseline_mean"], first["baseline_std"])]
    for method, name in METHODS.items():
        rows = gains[gains["method"] == method].set_index("lang").reindex(table.index)
        table[f"Δ {name}"] = [f"{d:+.1f} ± {s:.1f} {SIGN.get(b, '?')}".strip()
                              for d, s, b in zip(rows["delta"], rows["std"], rows["band_published"])]
    table.index.name = "lang"
    return table.sort_values("baseline", key=lambda col: col.str.split(" ").str[0].astype(float), ascending=False)


def welch_intervals(results: pd.DataFrame, langs: list[str]) -> pd.DataFrame:
    """Each method's difference to the baseline per language with a 95 % Welch t interval over
    seeds (scipy), ``*`` where it excludes 0: the band counts say whether a mean leaves the
    baseline's mean ± std, this says whether the difference is beyond the noise of the seeds."""
    from scipy import stats

    base = results[results["method"] == "baseline"]
    table = pd.DataFrame(index=pd.Index(langs, name="lang"))
    for method, name in METHODS.items():
        rows = results[results["method"] == method]
        cells = []
        for lang in langs:
            column = f"final_eval_{lang}_accuracy"
            x, y = rows[column] * 100, base[column] * 100
            test = stats.ttest_ind(x, y, equal_var=False)
            interval = test.confidence_interval(0.95)
            beyond = interval.low > 0 or interval.high < 0
            cells.append(f"{x.mean() - y.mean():+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]{'*' if beyond else ''}")
        table[f"Δ {name}"] = cells
    return table


def published_counts(published_dir: Path, langs: set[str], out: Path) -> tuple[pd.DataFrame, list[str]]:
    """``layerscope gains --langs`` on the published PoS files: the dictionary methods, on the
    languages of ``langs`` that they evaluate."""
    tables, shared = [], set()
    for label, name in PUBLISHED.items():
        columns = pd.read_csv(published_dir / name, nrows=0).columns
        evaluated = {c.split("_")[2] for c in columns if c.startswith("final_eval_") and c.endswith("_accuracy")}
        common = sorted(langs & evaluated)
        shared |= set(common)
        target = out / f"gains-{label}"
        subprocess.run([sys.executable, "-m", "layerscope", "-q", "gains", str(published_dir / name),
                        "--method", ",".join(METHODS), "--langs", ",".join(common), "--no-figures", "--force",
                        "-o", str(target)], check=True, stdout=subprocess.DEVNULL)
        tables.append(counts_table(pd.read_csv(target / "counts.csv"), label))
    return pd.concat(tables), sorted(shared)


def layerwise_per_language(layerwise: Path, layers: tuple[int, ...] = (2, 9, 10)) -> pd.DataFrame:
    """Δ retrieval (realigned − base) per language at a few layers under each policy, ``*`` where
    its paired-bootstrap interval excludes 0, from the compare runs of the layer-wise step."""
    columns = {}
    for policy in ("none", "lower", "upper"):
        metrics = pd.read_csv(layerwise / f"compare-{policy}" / "metrics.csv")
        delta = metrics[(metrics["model"] == "delta") & (metrics["metric"] == "retrieval")]
        for layer in layers:
            rows = delta[delta["layer"] == layer].set_index("lang")
            moved = (rows["ci_low"] > 0) | (rows["ci_high"] < 0)
            columns[f"{policy} @{layer}"] = [f"{v:+.3f}{'*' if m else ''}" for v, m in zip(rows["value"], moved)]
            index = rows.index
    table = pd.DataFrame(columns, index=index)
    table.index.name = "lang"
    return table


def compute_seconds(runs: Path) -> pd.DataFrame:
    """Wall seconds of every sweep run (its results.json), by method and seed."""
    rows = []
    for path in sorted((runs / "runs").glob("*/results.json")):
        record = json.loads(path.read_text())
        rows.append({"method": record["run"]["method"], "seed": record["run"]["seed"], "seconds": record["seconds"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="the runs/ directory of run.sh")
    parser.add_argument("--published", type=Path, help="the published AlignFreeze results directory")
    args = parser.parse_args(argv)
    config = (Path(__file__).parent / "e5-small.toml").read_text()
    realigned = set(config.split('realign_langs = "')[1].split('"')[0].split(","))

    gains = pd.read_csv(args.runs / "gains" / "gains.csv")
    counts = pd.read_csv(args.runs / "gains" / "counts.csv")
    averages = pd.read_csv(args.runs / "gains" / "averages.csv")
    print("## Counts: languages below / within / above the baseline's mean ± std\n")
    print(markdown(counts_table(counts, "e5-small")))
    print("\n## Average over languages (points)\n")
    print(markdown(averages.set_index("method")[["n_seeds", "mean", "std"]].round(2)))
    print("\n## Per language: baseline mean ± std over seeds, each method's Δ ± its std (band: + above, − below)\n")
    print(markdown(per_language(gains, realigned)))
    results = pd.read_csv(Path(__file__).parent / "results.csv")
    welch = welch_intervals(results, list(per_language(gains, realigned).index))
    print("\n## Δ per language with a 95% Welch interval over the seeds (* = excludes 0)\n")
    print(markdown(welch))
    beyond = {column: (welch[column].str.endswith("*").sum()) for column in welch.columns}
    print("\nbeyond the interval: " + ", ".join(f"{column}: {count}" for column, count in beyond.items()))
    if args.published is not None:
        langs = set(gains["lang"]) - {"en"}
        table, shared = published_counts(args.published, langs, args.runs / "published")
        print(f"\n## Published PoS results (dictionary aligner, 5 seeds) on the {len(shared)} languages both "
              f"evaluate: {', '.join(shared)}\n")
        print(markdown(table))
        ours = gains[gains["lang"].isin(shared)]
        sub = ours.groupby("method")["band_published"].value_counts().unstack(fill_value=0)
        sub = sub.reindex(columns=["below", "within", "above"], fill_value=0)
        sub.index = [f"e5-small {METHODS[m]}" for m in sub.index]
        sub.index.name = f"e5-small on the same {len(shared)} languages"
        print()
        print(markdown(sub))
    if (args.runs / "layerwise" / "compare-none" / "metrics.csv").exists():
        print("\n## Δ retrieval with English per language (FLORES devtest, 300 sentences; * = beyond the "
              "paired-bootstrap 95% interval)\n")
        print(markdown(layerwise_per_language(args.runs / "layerwise")))
    seconds = compute_seconds(args.runs)
    if not seconds.empty:
        print("\n## Compute (wall seconds per run, 2 CPU cores)\n")
        print(markdown(seconds.pivot_table(index="method", columns="seed", values="seconds").round(0)))
        print(f"\nsweep total: {seconds['seconds'].sum() / 3600:.2f} h over {len(seconds)} runs")
    layerwise = args.runs / "layerwise" / "run.json"
    if layerwise.exists():
        print(f"layerwise realign + compare: {json.loads(layerwise.read_text())['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
