"""layerscope gains: per-language gains of methods over a baseline, from per-seed results."""

from __future__ import annotations

import argparse

from ._common import add_output, command_line

HELP = "per-language gains over a baseline (mean ± std over seeds, below/within/above counts)"
DESCRIPTION = """\
Read task results (the per-seed layout of the published AlignFreeze results, with
final_eval_<lang>_<metric> columns, or a tidy seed,method,lang,score table) and report per
language and method the mean ± population std over seeds, the difference to the baseline, and
how many languages fall below / within / above the baseline's mean ± std band. Scores in [0, 1]
are shown in points (×100). By default the bands follow the published AlignFreeze counts:
means and stds rounded to 0.1 point (--round) and then compared as floats, so that a file of
the published results gives the published counts; --convention exact compares the unrounded
values. Both counts are printed, the chosen one first. With -o, writes gains.csv,
averages.csv, counts.csv, table.txt, gains.json and figures/gains_heatmap.{png,svg}."""
EPILOG = """\
examples:
  layerscope gains results.csv --baseline baseline --method freeze_realign_unfreeze_dico
  layerscope gains mbert_udpos.csv distilmbert_udpos.csv --method 'freeze_realign_unfreeze_*' -o gains/
  layerscope gains wikiann.csv --metric f1 --method before_dico,freeze_realign_unfreeze_dico
  layerscope gains tidy.csv --baseline base --method realigned     # columns seed,method,lang,score
  layerscope gains results.csv --exclude-langs en                   # zero-shot targets only
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS.csv", help="per-seed or tidy results, one or more")
    parser.add_argument("--baseline", default="baseline", help="the baseline method (default: baseline)")
    parser.add_argument("--method", action="append", metavar="NAME",
                        help="method(s) to compare: names, comma lists or shell patterns; repeatable "
                             "(default: every method but the baseline)")
    parser.add_argument("--metric", help="score columns of a per-seed file (default: the only one, else f1, "
                                         "accuracy, em)")
    parser.add_argument("--scale", default="auto",
                        help="multiply scores by this; auto = 100 when all lie in [0, 1] (default: auto)")
    parser.add_argument("--convention", choices=("published", "exact"), default="published",
                        help="band comparison: published = means and stds rounded to --round decimals, then "
                             "compared as floats, as the published counts; exact = unrounded (default: published)")
    parser.add_argument("--round", dest="round_digits", type=int, default=1, metavar="DIGITS",
                        help="decimals of the published convention's rounding (default: 1, i.e. 0.1 point)")
    parser.add_argument("--langs", help="only these languages, e.g. ar,ja,zh (default: every language of the results)")
    parser.add_argument("--exclude-langs", metavar="LANGS",
                        help="leave these languages out, e.g. en, the source language of zero-shot transfer")
    parser.add_argument("--no-figures", action="store_true", help="skip the heatmap")
    add_output(parser, what="output directory")


def _codes(text: str | None) -> list[str] | None:
    return None if text is None else [code.strip() for code in text.split(",") if code.strip()]


def run(args: argparse.Namespace) -> int:
    from ..errors import LayerscopeError
    from ..gains import compute_gains
    from pathlib import Path

    from ..outputs import staged_directory

    methods = None
    if args.method:
        methods = [m.strip() for spec in args.method for m in spec.split(",") if m.strip()]
    scale: float | str = args.scale
    if scale != "auto":
        try:
            scale = float(scale)
        except ValueError:
            raise LayerscopeError(f"--scale must be a number or 'auto', not {args.scale!r}") from None
    if not 0 <= args.round_digits <= 6:
        raise LayerscopeError("--round must be between 0 and 6")
    result = compute_gains(args.results, baseline=args.baseline, methods=methods, metric=args.metric,
                           scale=scale, round_digits=args.round_digits,
                           convention=args.convention, langs=_codes(args.langs),
                           exclude_langs=_codes(args.exclude_langs))
    print(result.paper_table())
    if args.output:
        with staged_directory(args.output, force=args.force) as staging:
            result.write(staging, figures=not args.no_figures, settings={"command": command_line()})
            from ..show.report import write_report

            write_report(staging, name=Path(args.output).name)
        print(f"\nwrote {args.output}/: gains.csv, averages.csv, counts.csv, table.txt, gains.json"
              + ("" if args.no_figures else ", figures/gains_heatmap.png") + ", report.html")
    return 0
