"""Where compare spends its time: one compare run under pyinstrument (pip install pyinstrument).

Same models and corpus as compare_speed.py; prints the call tree (frames under 2 % hidden) and
writes the full HTML profile next to it.

    python benchmarks/profile_compare.py --sentences 100 --langs 3 --html /tmp/compare-profile.html
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _data import add_size_options, read_flores  # noqa: E402
from compare_speed import build_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_size_options(parser, sentences=100, langs=3)
    parser.add_argument("--html", type=Path, help="also write the interactive profile here")
    args = parser.parse_args()
    from pyinstrument import Profiler

    from layerscope import progress
    from layerscope.compare import compare

    progress.set_enabled(False)
    corpus = read_flores(args.sentences, args.langs)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoints = build_checkpoints(corpus, tmp, layers=args.layers, width=args.width, heads=args.heads)
        profiler = Profiler(interval=0.005)
        with profiler:
            compare(*checkpoints, corpus=corpus, output_dir=tmp / "run", device="cpu", regression=False)
    print(profiler.output_text(unicode=True, color=False, show_all=False, time="percent_of_total"))
    if args.html:
        args.html.write_text(profiler.output_html(), encoding="utf-8")


if __name__ == "__main__":
    main()
