"""How the metric stage scales: time and peak memory as sentences and layers grow.

For each size the CKA of every layer of one language against the same layer of another is
computed two ways, each in a fresh process so that its peak memory (max RSS above the process's
own baseline) is its alone:

- full: the (L, n, d) activations of both languages in memory, :func:`cka_per_layer`
  (debiased linear CKA in its O(n·d²) feature-space form);
- streaming: :class:`MinibatchCKA` fed batches of ``--batch`` sentences as they would come
  out of the model, never holding more than one batch; its state is (L, L).

Activations are synthetic: per layer a shared random signal (the "translation" part) plus
language-specific noise, generated batch by batch from a seed, so both ways see the same numbers.

Agreement, in float64: streaming over k batches against an independent reference that forms
each batch's Gram matrices of centred features explicitly and sums the unbiased HSIC terms
(Song et al. 2012),
and streaming with a single batch against the full computation.

    python benchmarks/scaling.py                       # n = 1k, 10k, 100k; L = 4, 13, 25
    python benchmarks/scaling.py --sizes 1000,10000 --layers 4,13
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def batches(n: int, layers: int, width: int, batch: int, seed: int, dtype=np.float32):
    """Yield (a, b) of shape (L, m, d): language a and b of the same m sentences."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((layers, width, width)).astype(dtype) / np.sqrt(width)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        shared = rng.standard_normal((m, width)).astype(dtype)
        a = np.stack([shared @ mixing[l] + (0.5 + 0.1 * l) * rng.standard_normal((m, width)).astype(dtype)
                      for l in range(layers)])
        b = np.stack([shared @ mixing[l] + (0.5 + 0.1 * l) * rng.standard_normal((m, width)).astype(dtype)
                      for l in range(layers)])
        yield a, b


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def measure(mode: str, n: int, layers: int, width: int, batch: int, seed: int) -> dict:
    """Run one measurement in this process and return time and peak memory above the baseline."""
    import torch

    from layerscope.probes import MinibatchCKA, cka_per_layer

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    baseline = max_rss_mib()
    start = time.perf_counter()
    if mode == "full":
        parts = list(batches(n, layers, width, batch, seed))
        a = np.concatenate([p[0] for p in parts], axis=1)
        b = np.concatenate([p[1] for p in parts], axis=1)
        del parts
        values = cka_per_layer(a, b).tolist()
    else:
        cka = MinibatchCKA(layers, layers)
        for a, b in batches(n, layers, width, batch, seed):
            cka.update(a, b)
        values = torch.diagonal(cka.compute()).tolist()
    seconds = time.perf_counter() - start
    return {"mode": mode, "n": n, "layers": layers, "seconds": seconds,
            "peak_mib": max(0.0, max_rss_mib() - baseline), "values": values}


def in_subprocess(mode: str, n: int, layers: int, width: int, batch: int, seed: int) -> dict:
    command = [sys.executable, __file__, "--one", json.dumps([mode, n, layers, width, batch, seed])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def reference_minibatch(n: int, layers: int, width: int, batch: int, seed: int) -> np.ndarray:
    """Σ over batches of HSIC_u from explicit Gram matrices, float64, numpy only: (L,) CKA per layer."""
    def hsic_u(k: np.ndarray, l: np.ndarray) -> float:
        m = k.shape[0]
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0.0)
        np.fill_diagonal(l, 0.0)
        term = np.sum(k * l) + k.sum() * l.sum() / ((m - 1) * (m - 2)) - 2.0 * (k.sum(0) @ l.sum(0)) / (m - 2)
        return term / (m * (m - 3))

    cross = np.zeros(layers)
    self_a = np.zeros(layers)
    self_b = np.zeros(layers)
    for a, b in batches(n, layers, width, batch, seed, dtype=np.float64):
        for layer in range(layers):
            x, y = a[layer].astype(np.float64), b[layer].astype(np.float64)
            x, y = x - x.mean(0), y - y.mean(0)  # HSIC_u is translation-invariant; centring avoids cancellation
            k, l = x @ x.T, y @ y.T
            cross[layer] += hsic_u(k, l)
            self_a[layer] += hsic_u(k, k)
            self_b[layer] += hsic_u(l, l)
    return cross / np.sqrt(self_a * self_b)


def agreement(width: int, seed: int) -> tuple[float, float]:
    """(streaming vs explicit-Gram reference, one-batch streaming vs full): max abs differences."""
    import torch

    from layerscope.probes import MinibatchCKA, cka_per_layer

    n, layers, batch = 2000, 4, 250
    streamed = MinibatchCKA(layers, layers)
    for a, b in batches(n, layers, width, batch, seed, dtype=np.float64):
        streamed.update(a, b)
    ref = reference_minibatch(n, layers, width, batch, seed)
    vs_reference = float(np.max(np.abs(torch.diagonal(streamed.compute()).numpy() - ref)))
    (a, b), = list(batches(n, layers, width, n, seed, dtype=np.float64))
    one = torch.diagonal(MinibatchCKA(layers, layers).update(a, b).compute()).numpy()
    vs_full = float(np.max(np.abs(one - cka_per_layer(a, b).numpy())))
    return vs_reference, vs_full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="sentences, comma-separated")
    parser.add_argument("--layers", default="4,13,25", help="layer counts (at --layer-sentences), comma-separated")
    parser.add_argument("--layer-sentences", type=int, default=10000)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--batch", type=int, default=1000, help="sentences per streamed batch")
    parser.add_argument("--full-limit-gib", type=float, default=6.0,
                        help="skip the full computation when its activations alone would exceed this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the key figures here (for run_all.py)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*json.loads(args.one))))
        return

    sizes = [int(x) for x in args.sizes.split(",")]
    layer_counts = [int(x) for x in args.layers.split(",")]
    grid = [(n, 13) for n in sizes] + [(args.layer_sentences, layers) for layers in layer_counts
                                       if (args.layer_sentences, layers) not in [(n, 13) for n in sizes]]
    print(f"width {args.width}, streamed batches of {args.batch}, {os.environ.get('OMP_NUM_THREADS', 'all')} "
          f"threads; peak memory = max RSS above the process's baseline\n")
    peaks: dict[int, float] = {}
    print("| sentences | layers | full: s | full: peak MiB | streaming: s | streaming: peak MiB | "
          "streaming / full time | max abs Δ CKA (streaming vs full) |")
    print("|---|---|---|---|---|---|---|---|")
    for n, layers in grid:
        streaming = in_subprocess("streaming", n, layers, args.width, args.batch, args.seed)
        if layers == 13:
            peaks[n] = streaming["peak_mib"]
        activations_gib = 2 * layers * n * args.width * 4 / 2**30
        if activations_gib <= args.full_limit_gib:
            full = in_subprocess("full", n, layers, args.width, args.batch, args.seed)
            delta = max(abs(x - y) for x, y in zip(full["values"], streaming["values"]))
            full_cells = f"{full['seconds']:.1f} | {full['peak_mib']:.0f}"
            ratio = f"{streaming['seconds'] / full['seconds']:.2f}"
            diff = f"{delta:.1e}"
        else:
            full_cells = f"skipped ({activations_gib:.0f} GiB of activations) | –"
            ratio = diff = "–"
        print(f"| {n} | {layers} | {full_cells} | {streaming['seconds']:.1f} | {streaming['peak_mib']:.0f} | "
              f"{ratio} | {diff} |", flush=True)
    vs_reference, vs_full = agreement(64, args.seed)
    print(f"\nfloat64 agreement (n = 2000, 4 layers, width 64): streaming over 8 batches vs explicit-Gram "
          f"reference {vs_reference:.1e}; streaming with one batch vs full debiased CKA {vs_full:.1e} "
          "(target ≤ 1e-6)")
    if args.json:
        args.json.write_text(json.dumps({
            "streaming_peak_growth": max(peaks.values()) / max(min(peaks.values()), 1.0),
            "sizes": f"{min(peaks)}–{max(peaks)} sentences", "agreement": max(vs_reference, vs_full)}))
    print("The streaming and full values differ by more than rounding when there are several batches: the "
          "minibatch estimator sums per-batch HSIC terms (Nguyen et al. 2021), a different finite-sample "
          "estimate of the same population CKA; the column above shows by how much.")


if __name__ == "__main__":
    main()
