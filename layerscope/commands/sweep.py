"""layerscope sweep: run a grid of realignment + fine-tuning experiments through submitit."""

from __future__ import annotations

import argparse

HELP = "run a grid (models × tasks × freeze policies × aligners × seeds) locally or on SLURM, then gather"
DESCRIPTION = """\
Expand the grid of a sweep file (TOML): models × tasks × (baseline + schedules × freeze
policies × aligners) × seeds. One run realigns a model with one freeze policy on the word pairs
of one aligner (or not at all: the baseline), fine-tunes it on the task with one seed and
evaluates it zero-shot on every evaluation language. Runs whose results.csv exists are done and
skipped; the others are submitted through submitit (slurm on a cluster, local on one machine,
debug in this process). When they have ended, every run's table is gathered into
OUTPUT/results.csv (the per-seed layout that 'layerscope gains' and 'layerscope regress' read)
and OUTPUT/results.tidy.csv. See docs/sweep.md for the file format."""
EPILOG = """\
examples:
  layerscope sweep study.toml --dry-run                    # the grid, which runs are done / pending
  layerscope sweep study.toml --executor local             # run the pending runs on this machine
  layerscope sweep study.toml --executor slurm --no-wait   # submit a job array and return
  layerscope sweep study.toml --gather-only                # stack the finished runs' results
  layerscope sweep study.toml --seeds 31 --executor local  # every method of seed 31 first
  layerscope gains runs/study/results.csv --method 'freeze_realign_unfreeze_*'

exit status: 0 when every run of the grid is done, 1 when some failed (their logs are listed),
2 for a bad sweep file.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG.toml", help="sweep configuration (see docs/sweep.md)")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and which runs are done; run nothing")
    parser.add_argument("--executor", choices=["local", "slurm", "debug"],
                        help="where runs go (default: executor.kind of the file, else local)")
    parser.add_argument("-o", "--output", metavar="DIR", help="output directory (default: sweep.output of the file)")
    parser.add_argument("--no-wait", action="store_true", help="slurm: return once the job array is submitted")
    parser.add_argument("--gather-only", action="store_true", help="submit nothing; gather the finished runs")
    parser.add_argument("--seeds", metavar="S,S,...", type=_seed_list,
                        help="only these seeds of the file (e.g. every method of one seed first)")


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import LayerscopeError
    from ..sweep import sweep

    if args.dry_run and (args.no_wait or args.gather_only):
        raise LayerscopeError("--dry-run runs nothing; leave out --no-wait and --gather-only")
    if args.no_wait and args.gather_only:
        raise LayerscopeError("--no-wait and --gather-only exclude each other")
    result = sweep(args.config, executor=args.executor, output=args.output, dry_run=args.dry_run,
                   wait=not args.no_wait, gather_only=args.gather_only, seeds=args.seeds)
    if args.dry_run:
        print(result.format_grid())
        from ..sweep import missing_inputs

        for key, path in missing_inputs(result.config):
            print(f"warning: {key}: no such file or directory yet: {path}", file=sys.stderr)
        return 0
    if args.no_wait:
        pending = len(result.runs) - len(result.done_before)
        print(f"submitted {pending} runs; {len(result.done_before)} were done already. Gather later with:\n"
              f"  layerscope sweep {args.config} --gather-only")
        return 0
    skipped = len(result.done_before)
    finished = sum(o.ok for o in result.outcomes)
    print(f"{len(result.runs)} runs: {skipped} done before, {finished} finished now, {len(result.failed)} failed")
    for outcome in result.failed:
        print(f"  failed {outcome.run_id}: {outcome.error}" + (f" (log: {outcome.log})" if outcome.log else ""))
    gathered = result.gathered
    if gathered is None:
        print("no finished run to gather yet")
    else:
        print(f"wrote {gathered.paths['wide']} ({len(gathered.wide)} rows) and {gathered.paths['tidy']}")
        for key, path in gathered.paths.items():
            if key.startswith("task:"):
                print(f"  per task: {path}")
        if gathered.missing:
            print(f"{len(gathered.missing)} runs of the grid have no results yet")
        else:
            print(f"next: layerscope gains {gathered.paths['wide']}")
    return 1 if result.failed or (gathered is not None and gathered.missing) or gathered is None else 0
