"""The installed ``layerscope`` console script, run as a new user runs it.

Everything else calls ``cli.main`` in-process or ``python -m layerscope``; a console script runs
with its own ``bin/`` first on ``sys.path``, where packages' scripts (lang2vec's
``bin/lang2vec.py``) shadow the packages of the same name. CI (``.ci/run``) installs the package
non-editable into ``.venv`` and runs pytest with that venv's Python, so the script under test is
``Path(sys.executable).parent / "layerscope"``. These tests skip when there is no such script,
when it was installed from another checkout, or when the installed copy is older than this one
(reinstall with ``pip install .``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd
import pytest

from conftest import REPO_ROOT, make_encoder

SCRIPT = Path(sys.executable).parent / ("layerscope.exe" if os.name == "nt" else "layerscope")


def _why_not_installed() -> str | None:
    """Why the console script beside this Python cannot stand for this checkout (None if it can)."""
    if not SCRIPT.is_file():
        return f"no installed console script {SCRIPT} (CI installs the package with pip install '.[test]')"
    try:
        dist = metadata.distribution("layerscope")
    except metadata.PackageNotFoundError:
        return "layerscope is not installed in this Python's environment"
    origin = json.loads(dist.read_text("direct_url.json") or "{}")
    url = origin.get("url", "")
    source = Path(unquote(urlparse(url).path)) if url.startswith("file:") else None
    if source is None or source.resolve() != REPO_ROOT.resolve():
        return f"the installed layerscope comes from {url or 'a package index'}, not this checkout {REPO_ROOT}"
    if origin.get("dir_info", {}).get("editable"):
        return None
    for file in dist.files or ():
        if file.parts[0] == "layerscope" and file.suffix == ".py":
            if Path(dist.locate_file(file)).read_bytes() != (REPO_ROOT / Path(*file.parts)).read_bytes():
                return f"the installed copy of {file} differs from this checkout: reinstall (pip install .)"
    return None


REASON = _why_not_installed()
pytestmark = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def run_script(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """The console script in a clean environment: no PYTHONPATH, run outside the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LAYERSCOPE_QUIET"] = "1"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_typology_finds_lang2vec(tmp_path):
    result = run_script("typology", "en", "fr", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lang2vec package" not in result.stdout + result.stderr
    row = next(line.split() for line in result.stdout.splitlines() if line.startswith("fr "))
    # fr vs en in lang2vec 1.1.2: distances in [0, 1], France and England a few hundred km apart
    distances = [float(v) for v in row[2:]]
    assert len(distances) == 6 and all(0 <= d <= 1 for d in distances)
    assert distances[-1] < 0.05


def test_every_subcommand_has_help(tmp_path):
    from layerscope.cli import COMMANDS

    for name in COMMANDS:
        result = run_script(name, "--help", cwd=tmp_path)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.startswith(f"usage: layerscope {name}"), name
        assert "examples:" in result.stdout, name


@pytest.fixture(scope="module")
def sample_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A tiny BERT whose tokenizer knows the embedded corpus, and a copy with its top block moved."""
    import torch

    from layerscope.models import save_checkpoint
    from layerscope.corpora import read_corpus
    from layerscope.models import checkpoint_from_encoder

    corpus = read_corpus("sample")
    texts = list(corpus.pivot_sentences[corpus.languages[0]]) + [s for ss in corpus.targets.values() for s in ss]
    directory = tmp_path_factory.mktemp("installed")
    encoder = make_encoder("bert", layers=2, width=32, texts=texts)
    save_checkpoint(directory / "base.pt", checkpoint_from_encoder(encoder, meta={"name": "base"}))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in encoder.model.named_parameters():
            if name.startswith("encoder.layer.1."):
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
    save_checkpoint(directory / "realigned.pt", checkpoint_from_encoder(encoder, meta={"name": "moved"}))
    return {"base": directory / "base.pt", "realigned": directory / "realigned.pt", "dir": directory}


def test_compare_runs_the_gain_regression(sample_checkpoints):
    """The regression step of ``layerscope demo``'s compares: 11 languages of the embedded corpus."""
    cwd = sample_checkpoints["dir"]
    result = run_script("compare", "base.pt", "realigned.pt", "--corpus", "sample", "--no-figures",
                        "-o", "run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "regression skipped" not in result.stderr, result.stderr
    run = cwd / "run"
    assert (run / "regression" / "summary.txt").is_file() and (run / "regression" / "coefficients.csv").is_file()
    data = pd.read_csv(run / "regression" / "data.csv")
    assert len(data) >= 8  # the regression's minimum, from typology of the corpus' languages
    assert "regression/" in result.stdout and (run / "report.html").is_file()
