"""Where does each freeze policy move cross-lingual alignment, and how far does each layer drift?

Realigns one base model three times — nothing frozen, lower half frozen (AlignFreeze),
upper half frozen — with the same word pairs, steps and seed, compares each against the base on
held-out parallel sentences, and draws one figure: per layer, the change in cross-lingual
retrieval and CKA under each policy, and the drift of each layer from the base.

    # here, on the demo model and the embedded corpus (106 s on 2 CPU threads)
    python analyses/layerwise_alignfreeze/run.py --demo -o runs/layerwise

    # a real model on a GPU machine (see README.md)
    python analyses/layerwise_alignfreeze/run.py --base xlm-roberta-base \\
        --parallel tatoeba:data/tatoeba_challenge --pairs dict:data/muse --langs fr,de,ru,zh,ja,ar,hi,tr \\
        --corpus flores:data/flores200/devtest --steps 2000 --device cuda -o runs/layerwise-xlmr
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the checkout's layerscope, even next to an older installed one

POLICIES = ("none", "lower", "upper")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true",
                        help="build the demo's base model and use the embedded corpus and dictionaries")
    parser.add_argument("--base", help="base model: checkpoint, HF directory or hub id")
    parser.add_argument("--parallel", help="realignment corpus spec (tatoeba:DIR, tsv:FILE, ...)")
    parser.add_argument("--pairs", help="pair source: dict:DIR, eflomal or embed[:LAYER]")
    parser.add_argument("--corpus", help="evaluation corpus spec for compare (flores:DIR, ...)")
    parser.add_argument("--langs", help="target languages, e.g. fr,de,ja")
    parser.add_argument("--compare-langs", help="languages for compare (default: --langs; 'all' = every language "
                                                  "of the evaluation corpus)")
    parser.add_argument("--precision", default="auto", help="forward-pass precision: auto, fp32 or bf16")
    parser.add_argument("--kernels", default="auto", choices=["auto", "fast", "torch"],
                        help="realignment training kernels (layerscope.kernels; auto: fast on a CPU)")
    parser.add_argument("--steps", type=int, help="realignment steps (demo: 200)")
    parser.add_argument("--lr", type=float, help="realignment learning rate (demo: 3e-4; default: layerscope's)")
    parser.add_argument("--layer", type=int, help="realignment layer (negative from the end: -2 = hidden_states[L-1], "
                                                  "the published setting; default: layerscope's)")
    parser.add_argument("--limit", type=int, help="sentences per language for compare")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("-o", "--output", required=True, help="output directory (must not exist, or --force)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if not args.demo and not all([args.base, args.parallel, args.pairs, args.corpus]):
        parser.error("give --demo, or all of --base, --parallel, --pairs and --corpus")
    return args


def demo_inputs(seed: int):
    """The demo's base model and the embedded corpus split into realignment and held-out parts."""
    from layerscope._resources import data_file
    from layerscope.corpora import read_corpus
    from layerscope.demo import DemoSettings, build_base

    settings = DemoSettings.for_model("toy", seed=seed)
    train, held_out = read_corpus("sample").split(settings.held_out)
    return (build_base(settings), train, f"dict:{data_file('sample', 'dict')}", held_out,
            settings.realign_steps, settings.realign_lr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pandas as pd

    from layerscope import outputs
    from layerscope.models import save_checkpoint
    from layerscope.compare import compare
    from layerscope.models import checkpoint_from_encoder, load_encoder
    from layerscope.show.heatmaps import save_figure
    from layerscope.show.policies import fixed_layers, policies_figure, policy_profile
    from layerscope.provenance import versions
    from layerscope.realign import realign

    started = time.perf_counter()
    output = Path(args.output)
    with outputs.staged_directory(output, force=args.force) as staging:
        if args.demo:
            base, parallel, pairs, corpus, steps, lr = demo_inputs(args.seed)
            steps, lr = args.steps or steps, args.lr or lr
        else:
            base = load_encoder(args.base, device=args.device)
            parallel, pairs, corpus, steps, lr = args.parallel, args.pairs, args.corpus, args.steps, args.lr
        base_path = staging / "base.pt"
        save_checkpoint(base_path, checkpoint_from_encoder(base, meta={"name": "base"}))
        profiles, fixed, runs = {}, {}, {}
        # The three compares share the base model: its activations are extracted once.
        activations = Path(tempfile.mkdtemp(prefix="layerwise-activations-"))
        for policy in POLICIES:
            result = realign(base, parallel=parallel, pairs=pairs,  # realign works on a copy
                             langs=args.langs, freeze=policy, steps=steps, lr=lr, layer=args.layer, seed=args.seed,
                             device=args.device,
                             precision=args.precision, kernels=args.kernels)
            path = staging / f"realigned-{policy}.pt"
            save_checkpoint(path, result.checkpoint)
            compare_langs = None if args.compare_langs == "all" else (args.compare_langs or args.langs)
            comparison = compare(base_path, path, corpus=corpus, langs=compare_langs, limit=args.limit,
                                 precision=args.precision,
                                 output_dir=staging / f"compare-{policy}", device=args.device, seed=args.seed,
                                 regression=False, cache_dir=activations)
            profiles[policy] = policy_profile(comparison.metrics)
            fixed[policy] = fixed_layers(result.policy.frozen_blocks, result.policy.freeze_embeddings)
            runs[policy] = {"first_loss": result.history[0], "final_loss": result.history[-1],
                            "frozen_blocks": list(result.policy.frozen_blocks),
                            "pair_counts": result.pair_counts, "checkpoint_hash": result.checkpoint.content_hash()}
        shutil.rmtree(activations, ignore_errors=True)
        table = pd.concat([p.assign(policy=policy) for policy, p in profiles.items()], ignore_index=True)
        outputs.atomic_write_text(staging / "layerwise.csv", table.to_csv(index=False, float_format="%.6g"))
        name = "demo model" if args.demo else str(args.base)
        figure = policies_figure(profiles, fixed, title=f"Freeze policies on the {name}: {steps} realignment steps, "
                                                         f"seed {args.seed}")
        save_figure(figure, staging, "layerwise_alignfreeze")
        record = {"command": [sys.executable, *sys.argv], "args": vars(args), "steps": steps, "lr": lr,
                  "runs": runs, "versions": versions(), "seconds": round(time.perf_counter() - started, 1)}
        outputs.atomic_write_text(staging / "run.json", json.dumps(record, indent=2, default=str) + "\n")
    print(table.pivot_table(index="layer", columns=["quantity", "policy"], values="mean").round(3).to_string())
    print(f"wrote {output}/layerwise_alignfreeze.png, layerwise.csv, run.json, compare-*/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
