"""layerscope demo, quick mode: the whole workflow, and AlignFreeze leaves the lower half alone."""

from __future__ import annotations

import pandas as pd
import torch

from layerscope.checkpoint import load_checkpoint
from layerscope.cli import main


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--quick", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "open " in printed and "report.html" in printed
    for name in ("base.pt", "realigned-full.pt", "realigned-lower.pt"):
        assert (out / name).is_file()
    for run in ("compare-full", "compare-lower"):
        for name in ("metrics.csv", "run.json", "report.html", "figures/heatmap_cka.png"):
            assert (out / run / name).is_file(), f"{run}/{name}"

    base = load_checkpoint(out / "base.pt").state_dict
    lower = load_checkpoint(out / "realigned-lower.pt")
    full = load_checkpoint(out / "realigned-full.pt").state_dict
    blocks = lower.meta.get("num_layers") or 4
    for name, tensor in base.items():
        if not name.startswith("encoder.layer."):
            continue
        index = int(name.split(".")[2])
        if index < blocks // 2:
            assert torch.equal(lower.state_dict[name], tensor), f"{name} changed although frozen"
    changed_upper = [n for n in base if n.startswith(f"encoder.layer.{blocks - 1}.") and not torch.equal(lower.state_dict[n], base[n])]
    assert changed_upper, "the upper half was not trained"
    assert any(not torch.equal(full[n], base[n]) for n in base if n.startswith("encoder.layer.0."))

    weights = pd.read_csv(out / "compare-lower" / "metrics.csv").query("metric == 'weight_change'").set_index("layer")["value"]
    assert weights[1] == 0 and weights[2] == 0 and weights[3] > 0 and weights[4] > 0
