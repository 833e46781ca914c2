"""Every speed and memory benchmark in one run, and one table of ratios against the targets.

Runs, one after another (each prints its own detailed table as it goes):

- compare_speed.py: compare against its floor (the bare forward passes) and the activation cache;
- peer_torch_cka.py: the same job done with torch-cka, and CKA agreement on the same features;
- scaling.py: time and peak memory of the metric stage as sentences and layers grow;
- train_speed.py (with ``--model``, multilingual-e5-small): training steps against their floor
  (the embeddings frozen) and end-to-end realignment with the touched-rows Adam against the dense one.

    python benchmarks/run_all.py                # the sizes the targets are stated for (hours on a CPU)
    python benchmarks/run_all.py --quick        # small sizes: minutes, to check that everything runs

Needs FLORES-200 under ../shared/data (or $LAYERSCOPE_TEST_DATA) and `pip install torch-cka --no-deps`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SIZES = {
    "full": {
        "compare_speed.py": [],
        "peer_torch_cka.py": ["--sentences", "200", "--langs", "3"],
        "scaling.py": [],
    },
    "quick": {
        "compare_speed.py": ["--sentences", "40", "--langs", "2", "--layers", "2", "--width", "128", "--heads", "2"],
        "peer_torch_cka.py": ["--sentences", "64", "--langs", "1", "--layers", "2", "--width", "128", "--heads", "2"],
        "scaling.py": ["--sizes", "1000,3000", "--layers", "4", "--layer-sentences", "2000", "--width", "128"],
    },
}


def run(script: str, arguments: list[str], directory: Path) -> dict:
    target = directory / f"{script}.json"
    done = subprocess.run([sys.executable, str(HERE / script), *arguments, "--json", str(target)])
    if done.returncode != 0:
        raise SystemExit(f"{script} failed (exit {done.returncode})")
    return json.loads(target.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check that everything runs")
    parser.add_argument("--model", help="multilingual-e5-small for train_speed.py (skipped without it)")
    args = parser.parse_args()
    sizes = dict(SIZES["quick" if args.quick else "full"])
    if args.model:
        sizes["train_speed.py"] = ["--model", args.model, *(["--quick"] if args.quick else [])]
    with tempfile.TemporaryDirectory() as tmp:
        figures = {script: run(script, arguments, Path(tmp)) for script, arguments in sizes.items()}
    speed, peer, scaling = figures["compare_speed.py"], figures["peer_torch_cka.py"], figures["scaling.py"]
    rows = [
        ("compare / bare forward passes", f"{speed['floor_ratio']:.2f}×", "≤ 1.15×", speed["size"]),
        ("cold / warm-cache compare", f"{speed['cache_speedup']:.1f}×", "≥ 5×", speed["size"]),
        ("torch-cka / layerscope, whole job (CPU time)", f"{peer['whole_job_speedup']:.1f}×", "≥ 2×", peer["size"]),
        ("torch-cka / layerscope, metric stage, same token features", f"{peer['metric_same_features_speedup']:.2f}×",
         "", peer["size"]),
        ("torch-cka / layerscope, metric stage, each its own", f"{peer['metric_own_speedup']:.1f}×", "", peer["size"]),
        ("CKA agreement with torch-cka's estimator (float64)", f"{peer['agreement_float64']:.1e}", "≤ 1e-4",
         peer["size"]),
        ("streaming CKA peak memory, largest / smallest n", f"{scaling['streaming_peak_growth']:.2f}×", "bounded",
         scaling["sizes"]),
        ("streaming CKA vs float64 reference", f"{scaling['agreement']:.1e}", "≤ 1e-6", "2000 × 4 layers"),
    ]
    if "train_speed.py" in figures:
        train = figures["train_speed.py"]
        rows += [
            ("realignment step / floor (embeddings frozen)", f"{train['realignment_rows_over_floor']:.2f}×",
             "≤ 1.15×", "e5-small"),
            ("fine-tuning step / floor (embeddings frozen)", f"{train['fine-tuning_rows_over_floor']:.2f}×",
             "≤ 1.15×", "e5-small"),
            ("realign end to end, dense Adam / touched rows", f"{train['end_to_end_speedup']:.2f}×", "≥ 1.4×",
             "e5-small"),
        ]
    print("\n| measurement | ratio | target | size |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
