"""layerscope typology: URIEL distances between languages."""

from __future__ import annotations

import argparse

from ._common import add_typology_options

HELP = "URIEL typological distances (syntactic, phonological, inventory, featural, genetic, geographic)"
DESCRIPTION = """\
Print URIEL distances from a pivot language to target languages, computed from the features
that PyPI lang2vec ships, as URIEL defines them: angular distance 2·arccos(cos)/π between
feature vectors (max over sources, missing as 0) for syntactic, phonological, inventory and
featural; genetic = 1 − shared Glottolog ancestors / (ancestors of the target + 1) (asymmetric:
the target's depth; genetic_sym uses the deeper of the two); geographic = great-circle
distance / (π·6371 km). The first language is the pivot unless --pivot is given. Missing
typological data is reported under the table, never guessed."""
EPILOG = """\
examples:
  layerscope typology en fr ja ar
  layerscope typology --pivot en fr de zh cmn --kinds syntactic,genetic,genetic_sym
  layerscope typology en fr ja ar --matrix --kinds syntactic
  layerscope typology en fr ja --feature-table my_features.csv --kinds syntactic,custom
  layerscope typology en fr ja ar --csv distances.csv
  layerscope typology en ar zh no fa lv --codes published   # arb, cmn, nob, fas, lav as published
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("langs", nargs="+", metavar="LANG", help="ISO 639-1/639-3 or FLORES codes")
    parser.add_argument("--pivot", metavar="LANG", help="pivot language (default: the first LANG)")
    parser.add_argument("--kinds", default="syntactic,phonological,inventory,featural,genetic,geographic",
                        help="comma-separated distance types (also genetic_sym, custom)")
    parser.add_argument("--source", default="lang2vec", choices=["lang2vec", "urielplus"],
                        help="where distances come from (default: lang2vec)")
    parser.add_argument("--feature-table", metavar="CSV",
                        help="per-language features (a lang column + numeric columns) for the 'custom' distance")
    add_typology_options(parser)
    parser.add_argument("--matrix", action="store_true", help="all pairs of LANGs, one matrix per distance type")
    parser.add_argument("--digits", type=int, default=4, help="decimals shown (default: 4)")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV")


def run(args: argparse.Namespace) -> int:
    from ..errors import LayerscopeError
    from .. import outputs
    from ..stats import typology

    if not 0 <= args.digits <= 12:
        raise LayerscopeError(f"--digits must be between 0 and 12, not {args.digits}")
    kinds = typology.check_kinds(args.kinds)
    if args.feature_table and "custom" not in kinds:
        kinds = (*kinds, "custom")
    if args.matrix:
        if "custom" in kinds:
            raise LayerscopeError("--matrix does not support the custom distance")
        blocks = []
        frames = []
        for kind in kinds:
            matrix = typology.distance_matrix(args.langs, kind, source=args.source, codes=args.codes,
                                              missing_as=args.missing_as)
            blocks.append(f"{kind} (row → column)\n" + matrix.to_string(float_format=lambda v: f"{v:.{args.digits}f}",
                                                                       na_rep="n/a"))
            frames.append(matrix.assign(kind=kind).reset_index())
        used = ", ".join(f"{typology.label(c)}={typology.uriel_code(c, args.codes) or 'not in URIEL'}"
                         for c in dict.fromkeys(args.langs))
        print(f"URIEL codes ({args.codes}): {used}\n")
        print("\n\n".join(blocks))
        if args.csv:
            import pandas as pd

            table = pd.concat(frames, ignore_index=True)
            outputs.atomic_write(args.csv, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
        return 0
    pivot = args.pivot or args.langs[0]
    targets = args.langs if args.pivot else args.langs[1:]
    if not targets:
        raise LayerscopeError("give a pivot and at least one target language, e.g. layerscope typology en fr ja")
    table = typology.distances(pivot, targets, kinds, source=args.source, feature_table=args.feature_table,
                               codes=args.codes, missing_as=args.missing_as)
    note = "; genetic normalised by the target's lineage depth" if args.source == "lang2vec" else ""
    note += f"; codes {args.codes}" + ("; missing features as URIEL does" if args.missing_as == "uriel" else "")
    print(f"distances from {typology.label(pivot)} ({typology.uriel_code(pivot, args.codes) or 'not in URIEL'}), "
          f"source {args.source}{note}")
    print(table.to_string(float_format=lambda v: f"{v:.{args.digits}f}", na_rep="n/a"))
    notes = typology.missing(pivot, table, source=args.source, feature_table=args.feature_table, codes=args.codes,
                             missing_as=args.missing_as)
    for line in notes:
        print(f"missing: {line}")
    if args.csv:
        outputs.atomic_write(args.csv, lambda tmp: table.to_csv(tmp, float_format="%.6g"))
    return 0
