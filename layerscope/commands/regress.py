"""layerscope regress: regress realignment gains on typological distance."""

from __future__ import annotations

import argparse

from ._common import add_typology_options, command_line

HELP = "regress realignment gains on typology (OLS/HC3, LOLO R², permutation, bootstrap, mixed model)"
DESCRIPTION = """\
INPUT is a compare run directory (the gain of a probe metric, realigned − base, at a layer), a
gains table (gains.csv of layerscope gains) or per-seed task results (gains are computed against
--baseline). Predictors are URIEL distances from the pivot (layerscope typology), the baseline
score ('baseline') and optional per-language covariates. Fits OLS on standardized predictors
with HC3 errors, VIFs, leave-one-language-out R² against the mean predictor, a permutation
p-value (the gain permuted across languages), bootstrap CIs over languages, Spearman
correlations with Holm correction, and a mixed model with a random intercept per language when
languages have several rows (several models, tasks or methods). Writes summary.txt,
coefficients.csv, data.csv, spearman.csv, lolo.csv, mixed.csv, settings.json and figures to
RUN_DIR/regression/ for a run (where compare writes its default regression: pass -o DIR to
keep both, or --force to replace it), or to -o DIR."""
EPILOG = """\
examples:
  layerscope regress runs/xlmr-front/ --target retrieval@last --features syntactic,genetic,geographic --force
  layerscope regress runs/xlmr-front/ --target cka@mean --formula "gain ~ syntactic + baseline" -o reg-cka/
  layerscope regress gains/gains.csv --method freeze_realign_unfreeze_dico -o gains/regression
  layerscope regress mbert_udpos.csv distilmbert_udpos.csv --method 'freeze_realign_unfreeze_*' -o reg/
  layerscope regress runs/x/ --covariates pretraining_size.csv --formula "gain ~ syntactic + log_tokens" -o reg-size/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="compare run directory, gains.csv or results CSV")
    parser.add_argument("--target", metavar="METRIC@LAYER",
                        help="for runs: metric and layer (int, last or mean); default retrieval@last")
    parser.add_argument("--features", default="syntactic,genetic,geographic",
                        help="distance types used as predictors (default: syntactic,genetic,geographic)")
    parser.add_argument("--formula", help='statsmodels formula, e.g. "gain ~ syntactic + genetic + baseline"')
    parser.add_argument("--pivot", help="pivot language (default: the run's pivot, else en)")
    parser.add_argument("--baseline", default="baseline", help="baseline method of task results (default: baseline)")
    parser.add_argument("--method", action="append", metavar="NAME",
                        help="method(s) of task results or gains tables; names, comma lists or patterns")
    parser.add_argument("--metric", help="score columns of per-seed task results (default: f1, accuracy, em)")
    parser.add_argument("--covariates", metavar="CSV", help="per-language covariates (lang column + numeric columns)")
    parser.add_argument("--feature-table", metavar="CSV", help="per-language features for the 'custom' distance")
    parser.add_argument("--source", default="lang2vec", choices=["lang2vec", "urielplus"],
                        help="typology source (default: lang2vec)")
    add_typology_options(parser)
    parser.add_argument("--permutations", type=int, default=2000, help="permutations (default: 2000)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap samples (default: 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed for permutations and bootstrap (default: 0)")
    parser.add_argument("--no-figures", action="store_true", help="skip figures")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="directory to write (default: RUN_DIR/regression for one run; none otherwise)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import LayerscopeError
    from ..outputs import check_output_dir, staged_directory
    from ..regression import regress

    if args.permutations < 0 or args.bootstrap < 0:
        raise LayerscopeError("--permutations and --bootstrap must be >= 0")
    output = args.output
    if output is None and len(args.inputs) == 1 and Path(args.inputs[0]).is_dir():
        output = str(Path(args.inputs[0]) / "regression")
    if output:  # refused before the fit, not after it
        check_output_dir(output, force=args.force)
    methods = None
    if args.method:
        methods = [m.strip() for spec in args.method for m in spec.split(",") if m.strip()]
    result = regress(
        args.inputs,
        target=args.target,
        features=args.features,
        formula=args.formula,
        pivot=args.pivot,
        baseline=args.baseline,
        methods=methods,
        metric=args.metric,
        covariates=args.covariates,
        feature_table=args.feature_table,
        source=args.source,
        codes=args.codes,
        missing_as=args.missing_as,
        seed=args.seed,
        n_permutations=args.permutations,
        n_bootstrap=args.bootstrap,
    )
    print(result.summary_text())
    if output:
        result.settings["command"] = command_line()
        with staged_directory(output, force=args.force) as staging:
            result.write(staging, figures=not args.no_figures)
            from ..show.report import write_report

            write_report(staging, name=Path(output).name)
        print(f"\nwrote {output}/: summary.txt, coefficients.csv, data.csv, spearman.csv, lolo.csv"
              + (", mixed.csv" if result.mixed is not None else "") + ", settings.json"
              + ("" if args.no_figures else ", figures (PNG + SVG)") + ", report.html")
    else:
        print("\n(pass -o DIR to write the tables and figures)")
    return 0
