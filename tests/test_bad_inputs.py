"""Bad inputs, faults and untrusted files, tried on every command (issue #8).

Every row of the tables below is one bad input, run through the CLI entry point
(``layerscope.cli.main``) of each command that reads that kind of input. The contract:

- exit code 2 and exactly one line on stderr, ``layerscope: error: ...``, naming the input;
- nothing written anywhere (the directory listings before and after are the same);
- an untrusted pickle is refused without running it (its payload would create a marker file);
- inputs that are usable with a caveat (empty lines, a 10,000-character line, a method with one
  seed, languages without typology data) succeed and say so instead of crashing.

Other files test the readers and jobs one by one; this file tries the whole matrix through the
commands, a SIGKILL in the middle of a realignment followed by ``--resume``, unwritable output
locations, determinism of realign → compare, and a hypothesis fuzz pass over the corpus and
results readers (success or a LayerscopeError naming the file; any other exception is a bug).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerscope.cli import main
from layerscope.errors import LayerscopeError

from conftest import TASK_FIXTURES, REPO_ROOT, make_encoder, synthetic_parallel, write_tsv

pytestmark = pytest.mark.usefixtures("one_thread")

TASKS = TASK_FIXTURES  # the committed fixtures and the PoS files built at test time
GAINS = Path(__file__).parent / "fixtures" / "gains"
POS_TRAIN = TASKS / "pos" / "en_handmade-train.conllu"
POS_EVAL = TASKS / "pos" / "fr_handmade-test.conllu"
# Languages with URIEL data, enough for a regression (at least 8 after exclusions).
REGRESSION_LANGS = ("fr", "de", "es", "it", "ru", "pl", "tr", "fi", "ja", "ar")


# --------------------------------------------------------------------------- helpers


def run_cli(capsys, argv: list[str]) -> tuple[int, list[str], str, list[warnings.WarningMessage]]:
    """Run ``layerscope -q ARGV`` in-process: exit code, stderr lines, stdout, and the warnings a
    user would see (pytest swallows warnings that would otherwise reach stderr)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["-q", *argv])
    out, err = capsys.readouterr()
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return code, err.strip().splitlines(), out, shown


def assert_refused(code: int, err: list[str], shown: list, names: str | Path) -> str:
    """Exit 2, one stderr line ``layerscope: error: ...`` naming ``names``, no warnings."""
    assert code == 2, err
    assert len(err) == 1, "stderr is not one line:\n" + "\n".join(err)
    assert err[0].startswith("layerscope: error: "), err[0]
    name = names.name if isinstance(names, Path) else names
    assert name in err[0], f"{name!r} not named in: {err[0]}"
    assert not shown, [str(w.message) for w in shown]
    return err[0]


def read_only_is_enforced(directory: Path) -> bool:
    """Whether a 0o500 directory stops this process writing (not for root with CAP_DAC_OVERRIDE)."""
    probe = directory / "read-only-probe"
    probe.mkdir(mode=0o500)
    try:
        (probe / "x").write_text("x")
    except PermissionError:
        return True
    finally:
        probe.chmod(0o700)
        shutil.rmtree(probe)
    return False


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (files and directories), relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


@dataclass
class World:
    """Good inputs every test starts from; bad inputs are derived from them."""

    root: Path
    base: Path  # a tiny BERT as a layerscope checkpoint
    encoder: object
    corpus: Path  # TSV, en/fr/de/ja, 20 sentences
    muse: Path  # dictionaries en-fr, en-de for the corpus
    hf_dir: Path  # the same model as a Hugging Face directory
    marker: Path  # created if an untrusted pickle ever runs


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    import transformers.utils.logging as hf_logging

    from layerscope.models import save_checkpoint
    from layerscope.models import checkpoint_from_encoder

    # Loading an HF directory draws a progress bar unless transformers was imported after
    # `layerscope -q` set its environment; in one test process it was imported long before.
    progress_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    root = tmp_path_factory.mktemp("bad_inputs")
    columns = synthetic_parallel(20)
    texts = [s for sentences in columns.values() for s in sentences]
    texts += POS_TRAIN.read_text(encoding="utf-8").split("\n") + POS_EVAL.read_text(encoding="utf-8").split("\n")
    encoder = make_encoder("bert", layers=2, width=32, texts=texts)
    base = save_checkpoint(root / "base.pt", checkpoint_from_encoder(encoder, meta={"name": "base"}))
    corpus = write_tsv(root / "corpus.tsv", columns)
    muse = root / "muse"
    muse.mkdir()
    # synthetic_parallel renames word i as e{i}x (en), fa{i}le (fr), dz{i}en (de)
    for lang, (prefix, suffix) in {"fr": ("fa", "le"), "de": ("dz", "en")}.items():
        (muse / f"en-{lang}.txt").write_text("".join(f"e{i}x {prefix}{i}{suffix}\n" for i in range(60)),
                                             encoding="utf-8")
    hf_dir = root / "hf"
    encoder.model.save_pretrained(hf_dir)
    encoder.tokenizer.save_pretrained(hf_dir)
    yield World(root, base, encoder, corpus, muse, hf_dir, root / "PAYLOAD_RAN")
    if progress_was_on:
        hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------- untrusted checkpoints


class _Payload:
    """Unpickling this object calls ``func(*args)``: each variant would create the marker file."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _payloads(marker: Path) -> dict[str, _Payload]:
    return {
        "open": _Payload(open, str(marker), "w"),
        "exec": _Payload(exec, f"open({str(marker)!r}, 'w').close()"),
        "os.system": _Payload(os.system, f"touch '{marker}'"),
    }


def _good_payload(w: World) -> dict:
    from layerscope.models import checkpoint_from_encoder

    payload = checkpoint_from_encoder(w.encoder, meta={"name": "variant"}).to_payload()
    payload["state_dict"] = {k: v.clone() for k, v in payload["state_dict"].items()}
    return payload


def _edited(edit: Callable[[dict, World], None]) -> Callable[[World, Path], None]:
    """A builder that saves the good checkpoint payload after ``edit`` changed it."""

    def build(w: World, path: Path) -> None:
        payload = _good_payload(w)
        edit(payload, w)
        torch.save(payload, path)

    return build


def _first_weight(payload: dict) -> str:
    return next(k for k in payload["state_dict"] if k.endswith("weight"))


def _set_first(value: float) -> Callable[[dict, World], None]:
    def edit(payload: dict, w: World) -> None:
        payload["state_dict"][_first_weight(payload)][0, 0] = value

    return edit


def _safetensors_header(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _good_safetensors(w: World) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in w.encoder.model.state_dict().items()})


def _safetensors_cut(w: World, path: Path) -> None:
    data = _good_safetensors(w)
    (header_length,) = struct.unpack("<Q", data[:8])
    path.write_bytes(data[: 8 + header_length + 64])


def _safetensors_nan(w: World, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.clone().contiguous() for k, v in w.encoder.model.state_dict().items()}
    state["embeddings.word_embeddings.weight"][3, 3] = float("nan")
    save_file(state, str(path))


def _hf_copy(edit: Callable[[Path, World], None]) -> Callable[[World, Path], None]:
    def build(w: World, path: Path) -> None:
        shutil.copytree(w.hf_dir, path)
        edit(path, w)

    return build


def _hf_nan(path: Path, w: World) -> None:
    from safetensors.torch import save_file

    state = {k: v.clone().contiguous() for k, v in w.encoder.model.state_dict().items()}
    state["encoder.layer.1.output.dense.weight"][0, 0] = float("inf")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


def _wider_weights(payload: dict, w: World) -> None:
    payload["state_dict"] = make_encoder("bert", layers=2, width=48).model.state_dict()


def _missing_parameter(payload: dict, w: World) -> None:
    del payload["state_dict"]["encoder.layer.0.attention.self.query.weight"]


def _integer_weights(payload: dict, w: World) -> None:
    name = "embeddings.word_embeddings.weight"
    payload["state_dict"][name] = (payload["state_dict"][name] * 100).long()


def _pickle_into(payload_name: str, container: str) -> Callable[[World, Path], None]:
    def build(w: World, path: Path) -> None:
        evil = _payloads(w.marker)[payload_name]
        if container == "raw":
            path.write_bytes(pickle.dumps({"format": "layerscope-checkpoint", "state_dict": evil}))
        else:  # inside a torch.save zip that otherwise looks like a layerscope checkpoint
            payload = _good_payload(w)
            payload["meta"] = {"name": evil}
            torch.save(payload, path)

    return build


# name -> builder(world, path): each writes one bad checkpoint (or directory) at ``path``
BAD_CHECKPOINTS: dict[str, Callable[[World, Path], None]] = {
    "pickle-payload-open": _pickle_into("open", "raw"),
    "pickle-payload-exec": _pickle_into("exec", "raw"),
    "pickle-payload-os-system": _pickle_into("os.system", "raw"),
    "torch-zip-payload-open": _pickle_into("open", "zip"),
    "torch-zip-payload-os-system": _pickle_into("os.system", "zip"),
    "truncated-half": lambda w, p: p.write_bytes(w.base.read_bytes()[: w.base.stat().st_size // 2]),
    "truncated-100-bytes": lambda w, p: p.write_bytes(w.base.read_bytes()[:100]),
    "empty-file": lambda w, p: p.write_bytes(b""),
    "text-file": lambda w, p: p.write_text("hello world\n"),
    "random-bytes": lambda w, p: p.write_bytes(random.Random(0).randbytes(4096)),
    "other-program-training-state": lambda w, p: torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, p),
    "other-program-list": lambda w, p: torch.save([1, 2, 3], p),
    "other-program-empty-dict": lambda w, p: torch.save({}, p),
    "safetensors-header-length-too-big": lambda w, p: p.write_bytes((10**6).to_bytes(8, "little") + b"{not json"),
    "safetensors-header-not-json": lambda w, p: p.write_bytes((9).to_bytes(8, "little") + b"{not json"),
    "safetensors-header-too-small": lambda w, p: p.write_bytes(b"\x00\x01\x02"),
    "safetensors-header-a-list": lambda w, p: p.write_bytes(_safetensors_header([1, 2, 3])),
    "safetensors-unknown-dtype": lambda w, p: p.write_bytes(
        _safetensors_header({"w": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)),
    "safetensors-shape-overflow": lambda w, p: p.write_bytes(
        _safetensors_header({"w": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 4]}}, b"\0" * 4)),
    "safetensors-data-cut": _safetensors_cut,
    "safetensors-nan": _safetensors_nan,
    "nan-weight": _edited(_set_first(float("nan"))),
    "inf-weight": _edited(_set_first(float("inf"))),
    "minus-inf-weight": _edited(_set_first(float("-inf"))),
    "mismatched-architecture": _edited(_wider_weights),
    "missing-parameter": _edited(_missing_parameter),
    "integer-weights": _edited(_integer_weights),
    "weight-not-a-tensor": _edited(lambda pl, w: pl["state_dict"].update({_first_weight(pl): "oops"})),
    "future-version": _edited(lambda pl, w: pl.update(version=99)),
    "config-not-a-dict": _edited(lambda pl, w: pl.update(config=[1, 2])),
    "config-without-model-type": _edited(lambda pl, w: pl["config"].pop("model_type")),
    "config-unknown-model-type": _edited(lambda pl, w: pl["config"].update(model_type="nosuchmodel")),
    "config-value-wrong-type": _edited(lambda pl, w: pl["config"].update(hidden_size="wide")),
    "config-cannot-build": _edited(lambda pl, w: pl["config"].update(num_attention_heads=5)),
    "config-without-blocks": _edited(lambda pl, w: pl["config"].update(num_hidden_layers=-3)),
    "tokenizer-corrupt-json": _edited(lambda pl, w: pl.update(tokenizer="{broken json")),
    "tokenizer-bad-settings": _edited(lambda pl, w: pl.update(tokenizer_config={"pad_token": 5})),
    "tokenizer-settings-a-list": _edited(lambda pl, w: pl.update(tokenizer_config=[1])),
    "tokenizer-missing": _edited(lambda pl, w: pl.update(tokenizer=None, tokenizer_name=None)),
    "meta-not-a-dict": _edited(lambda pl, w: pl.update(meta="hello")),
    "bare-state-dict-without-model": lambda w, p: torch.save(w.encoder.model.state_dict(), p),
    "directory-named-like-a-file": lambda w, p: p.mkdir(),
    "missing-file": lambda w, p: None,
    "hf-dir-corrupt-config": _hf_copy(lambda d, w: (d / "config.json").write_text("{broken")),
    "hf-dir-corrupt-weights": _hf_copy(lambda d, w: (d / "model.safetensors").write_bytes(b"\0" * 20)),
    "hf-dir-inf-weights": _hf_copy(_hf_nan),
}


def _bad_name(kind: str) -> str:
    if kind.startswith("safetensors"):
        return f"{kind}.safetensors"
    return kind if kind.startswith("hf-dir") else f"{kind}.pt"


@pytest.fixture(scope="module")
def bad_checkpoints(world) -> dict[str, Path]:
    directory = world.root / "bad-checkpoints"
    directory.mkdir()
    paths = {}
    for kind, build in BAD_CHECKPOINTS.items():
        path = directory / _bad_name(kind)
        build(world, path)
        paths[kind] = path
    assert not world.marker.exists()
    return paths


def checkpoint_argv(command: str, w: World, source: Path, out: Path) -> list[str]:
    """The command line of ``command`` reading ``source`` as its (first) model."""
    compare_options = ["--corpus", f"tsv:{w.corpus}", "--no-figures", "--no-regression", "--device", "cpu",
                       "-o", str(out / "run")]
    return {
        "compare": ["compare", str(source), str(w.base), *compare_options],
        "compare-realigned": ["compare", str(w.base), str(source), *compare_options],
        "realign": ["realign", str(source), "--parallel", f"tsv:{w.corpus}", "--pairs", f"dict:{w.muse}",
                    "--langs", "fr,de", "--steps", "1", "--batch-size", "2", "--device", "cpu",
                    "-o", str(out / "realigned.pt")],
        "finetune": ["finetune", str(source), "--task", "pos", "--train", str(POS_TRAIN), "--eval", str(POS_EVAL),
                     "--steps", "1", "--seeds", "1", "--device", "cpu", "-o", str(out / "results.csv")],
        "snapshot": ["snapshot", str(source), str(out / "snapshot.pt")],
        "info": ["info", str(source)],
    }[command]


CHECKPOINT_COMMANDS = ("compare", "compare-realigned", "realign", "finetune", "snapshot", "info")


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
@pytest.mark.parametrize("command", CHECKPOINT_COMMANDS)
def test_bad_checkpoint_is_refused_by_every_command(world, bad_checkpoints, command, kind, tmp_path, capsys):
    bad = bad_checkpoints[kind]
    inputs = tree(world.root)
    code, err, _, shown = run_cli(capsys, checkpoint_argv(command, world, bad, tmp_path))
    assert_refused(code, err, shown, bad)
    assert not world.marker.exists(), "an untrusted pickle ran its payload"
    assert tree(tmp_path) == set(), "a refused command left files behind"
    assert tree(world.root) == inputs


def test_pickle_payload_refused_by_the_real_command_line(world, bad_checkpoints, tmp_path):
    """The same through ``python -m layerscope`` (stderr as a user sees it, warnings included)."""
    bad = bad_checkpoints["pickle-payload-open"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "layerscope", "info", str(bad)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"layerscope: error: {bad}: refused to load"), lines
    assert "pickles can run code" in lines[0]
    assert not world.marker.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", ["overflowing-weights", "deeper-model"])
def test_compare_never_puts_nan_into_metrics(world, case, tmp_path, capsys):
    """Finite weights whose activations overflow, and a model of another depth: refused, with no
    metrics.csv (NaN is never written as a metric)."""
    from layerscope.models import save_checkpoint
    from layerscope.models import checkpoint_from_encoder

    other = tmp_path / f"{case}.pt"
    if case == "overflowing-weights":
        payload = _good_payload(world)
        payload["state_dict"]["embeddings.word_embeddings.weight"].mul_(1e30)
        torch.save(payload, other)
    else:
        save_checkpoint(other, checkpoint_from_encoder(make_encoder("bert", layers=3, width=32)))
    out = tmp_path / "run"
    code, err, _, shown = run_cli(capsys, ["compare", str(world.base), str(other), "--corpus", f"tsv:{world.corpus}",
                                           "--no-figures", "--no-regression", "--device", "cpu", "-o", str(out)])
    message = assert_refused(code, err, shown, other)
    assert ("NaN or Inf" in message) if case == "overflowing-weights" else ("blocks" in message)
    assert not out.exists()


# --------------------------------------------------------------------------- corpora


_FLORES = {"en": "eng_Latn", "fr": "fra_Latn", "de": "deu_Latn", "ja": "jpn_Jpan"}


def _rows(columns: dict[str, list[str]], langs=("en", "fr", "de")) -> list[str]:
    return ["\t".join(columns[lang][i] for lang in langs) for i in range(len(columns["en"]))]


def _tsv(text: str | bytes) -> Callable[[Path, dict], tuple[str, list[str], str]]:
    def build(d: Path, columns: dict) -> tuple[str, list[str], str]:
        path = d / "corpus.tsv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return f"tsv:{path}", [], "corpus.tsv"

    return build


def _flores(columns_edit: Callable[[dict], dict], *, name: str = "flores") -> Callable:
    def build(d: Path, columns: dict) -> tuple[str, list[str], str]:
        directory = d / name
        directory.mkdir()
        for lang, sentences in columns_edit({k: list(v) for k, v in columns.items()}).items():
            (directory / f"{_FLORES.get(lang, lang)}.devtest").write_text("\n".join(sentences) + "\n", encoding="utf-8")
        return f"flores:{directory}", [], name

    return build


def _flores_bad_utf8(d: Path, columns: dict) -> tuple[str, list[str], str]:
    spec, _, _ = _flores(lambda c: c)(d, columns)
    path = d / "flores" / "fra_Latn.devtest"
    path.write_bytes(_bad_utf8(path.read_text(encoding="utf-8")))
    return spec, [], path.name


def _with_langs(langs: str, named: str = "--langs") -> Callable:
    def build(d: Path, columns: dict) -> tuple[str, list[str], str]:
        path = write_tsv(d / "corpus.tsv", {k: columns[k] for k in ("en", "fr", "de")})
        return f"tsv:{path}", ["--langs", langs], named

    return build


def _tatoeba_unequal(d: Path, columns: dict) -> tuple[str, list[str], str]:
    directory = d / "tatoeba"
    directory.mkdir()
    (directory / "tatoeba.fra-eng.fra").write_text("\n".join(columns["fr"]) + "\n", encoding="utf-8")
    (directory / "tatoeba.fra-eng.eng").write_text("\n".join(columns["en"][:-1]) + "\n", encoding="utf-8")
    return f"tatoeba:{directory}", [], "tatoeba.fra-eng.fra"


def _pud(en: str, fr: str) -> Callable:
    def build(d: Path, columns: dict) -> tuple[str, list[str], str]:
        directory = d / "pud"
        directory.mkdir()
        (directory / "en_pud-ud-test.conllu").write_text(en, encoding="utf-8")
        (directory / "fr_pud-ud-test.conllu").write_text(fr, encoding="utf-8")
        return f"pud:{directory}", [], "pud-ud-test.conllu"

    return build


def _bad_utf8(text: str) -> bytes:
    """``text`` as UTF-8 with one byte that no UTF-8 text holds (0xff) in its first "fa"."""
    return text.encode("utf-8").replace(b"fa", b"f\xff", 1)


_TOKEN = "1\thi\t_\tX\t_\t_\t0\troot\t_\t_\n"
_HEADER = "en\tfr\tde\n"


def _long_cell_row(columns: dict) -> list[str]:
    rows = _rows(columns)
    rows[3] = "\t".join([columns["en"][3], "x" * 10_000, columns["de"][3]])
    return rows


# name -> (builder(dir, columns) -> (spec, extra args, text the error must name), commands)
BAD_CORPORA: dict[str, tuple[Callable, tuple[str, ...]]] = {
    "unequal-sentence-counts-flores": (_flores(lambda c: {**c, "fr": c["fr"][:-2]}), ("compare", "realign")),
    "unequal-sentence-counts-tatoeba": (_tatoeba_unequal, ("compare", "realign")),
    "ragged-tsv-row": (lambda d, c: _tsv(_HEADER + "\n".join(_rows(c)[:5]) + "\nonly one cell\n")(d, c),
                       ("compare", "realign")),
    "fewer-sentences-than-the-metrics-need": (lambda d, c: _tsv(_HEADER + "\n".join(_rows(c)[:5]) + "\n")(d, c),
                                              ("compare",)),
    "header-only": (_tsv(_HEADER), ("compare", "realign")),
    "empty-file": (_tsv(""), ("compare", "realign")),
    "invalid-utf8-tsv": (lambda d, c: _tsv(_bad_utf8(_HEADER + "\n".join(_rows(c)) + "\n"))(d, c),
                         ("compare", "realign")),
    "invalid-utf8-flores": (lambda d, c: _flores_bad_utf8(d, c), ("compare", "realign")),
    "unknown-language-in-header": (lambda d, c: _tsv("en\txx\tde\n" + "\n".join(_rows(c)) + "\n")(d, c),
                                   ("compare", "realign")),
    "duplicate-language-in-header": (lambda d, c: _tsv("en\tfr\tfra\n" + "\n".join(_rows(c)) + "\n")(d, c),
                                     ("compare", "realign")),
    "ambiguous-codes-in-header": (lambda d, c: _tsv("en\tnb\tnn\n" + "\n".join(_rows(c)) + "\n")(d, c),
                                  ("compare", "realign")),
    "ambiguous-files-in-flores": (_flores(lambda c: {"en": c["en"], "zho_Hans": c["ja"], "zho_Hant": c["ja"]},
                                          name="flores-zh"), ("compare", "realign")),
    "pivot-missing": (lambda d, c: _tsv("fr\tde\n" + "\n".join(_rows(c, ("fr", "de"))) + "\n")(d, c),
                      ("compare", "realign")),
    "unknown-language-requested": (_with_langs("fr,xx"), ("compare", "realign")),
    "duplicate-language-requested": (_with_langs("fr,fra"), ("compare", "realign")),
    "absent-language-requested": (_with_langs("ko", named="corpus.tsv"), ("compare", "realign")),
    "only-the-pivot-requested": (_with_langs("en", named="corpus.tsv"), ("compare", "realign")),
    "directory-given-as-tsv": (lambda d, c: (f"tsv:{d}", [], d.name), ("compare", "realign")),
    "missing-directory": (lambda d, c: (f"flores:{d / 'nope'}", [], "nope"), ("compare", "realign")),
    "file-given-as-directory": (lambda d, c: (f"flores:{write_tsv(d / 'c.tsv', c)}", [], "c.tsv"),
                                ("compare", "realign")),
    "directory-without-language-files": (lambda d, c: (f"flores:{d}", [], d.name), ("compare", "realign")),
    "unknown-corpus-kind": (lambda d, c: ("florse:/x", [], "florse:/x"), ("compare", "realign")),
    "pud-sentence-without-id": (_pud(f"# sent_id = a\n# text = hi\n{_TOKEN}\n", f"# text = salut\n{_TOKEN}\n"),
                                ("compare", "realign")),
    "pud-token-line-with-3-fields": (_pud("# sent_id = a\n1\thi\t_\n\n", f"# sent_id = a\n{_TOKEN}\n"),
                                     ("compare", "realign")),
    "pud-duplicate-sent-id": (_pud(f"# sent_id = a\n{_TOKEN}\n# sent_id = a\n{_TOKEN}\n", f"# sent_id = a\n{_TOKEN}\n"),
                              ("compare", "realign")),
}

BAD_CORPUS_CASES = [(name, command) for name, (_, commands) in BAD_CORPORA.items() for command in commands]


def corpus_argv(command: str, w: World, spec: str, extra: list[str], out: Path) -> list[str]:
    if command == "compare":
        return ["compare", str(w.base), str(w.base), "--corpus", spec, *extra, "--no-figures", "--no-regression",
                "--device", "cpu", "-o", str(out / "run")]
    return ["realign", str(w.base), "--parallel", spec, *extra, "--pairs", f"dict:{w.muse}", "--steps", "1",
            "--batch-size", "2", "--device", "cpu", "-o", str(out / "realigned.pt")]


@pytest.mark.parametrize("name, command", BAD_CORPUS_CASES, ids=[f"{c}-{n}" for n, c in BAD_CORPUS_CASES])
def test_bad_corpus_is_refused(world, name, command, tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    spec, extra, named = BAD_CORPORA[name][0](inputs, synthetic_parallel(20))
    code, err, _, shown = run_cli(capsys, corpus_argv(command, world, spec, extra, out))
    assert_refused(code, err, shown, named)
    assert tree(out) == set()


@pytest.mark.parametrize("command", ["compare", "realign"])
@pytest.mark.parametrize("case", ["empty-lines", "10000-character-line"])
def test_usable_corpus_flaws_are_warned_about(world, case, command, tmp_path, capsys):
    """Empty lines are dropped with their translations and a 10,000-character sentence is cut to
    2,000, each with a warning naming the file; the run goes on."""
    columns = synthetic_parallel(20)
    if case == "empty-lines":
        rows = _rows(columns)
        rows.insert(4, "\t\t")  # empty cells
        rows.insert(9, "")  # a blank line
        rows[12] = "\t".join([columns["en"][10], "", columns["de"][10]])
        rows.append("")  # a trailing blank line, as editors leave them
    else:
        rows = _long_cell_row(columns)
    path = tmp_path / "corpus.tsv"
    path.write_text(_HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    code, err, _, _ = run_cli(capsys, corpus_argv(command, world, f"tsv:{path}", [], out))
    assert code == 0, err
    assert len(err) == 1 and "corpus.tsv" in err[0], err
    assert ("skipped" in err[0]) if case == "empty-lines" else ("cut to 2000" in err[0])
    assert (out / "run" / "metrics.csv").is_file() if command == "compare" else (out / "realigned.pt").is_file()


def test_long_cell_is_cut_without_breaking_the_columns(tmp_path):
    """A long sentence in the middle column of a TSV is cut by itself: the columns after it survive."""
    from layerscope.corpora import MAX_CHARS, read_corpus

    columns = synthetic_parallel(10)
    path = tmp_path / "c.tsv"
    path.write_text(_HEADER + "\n".join(_long_cell_row(columns)) + "\n", encoding="utf-8")
    corpus = read_corpus(f"tsv:{path}")
    assert len(corpus.targets["fr"][3]) == MAX_CHARS
    assert corpus.targets["de"][3] == columns["de"][3]


# --------------------------------------------------------------------------- results tables


def _tidy(langs=("fr", "de", "ja", "ar"), seeds=(1, 2, 3), methods=("baseline", "m1")) -> str:
    """A tidy results table with made-up scores."""
    rng = random.Random(0)
    rows = ["seed,method,lang,score"]
    rows += [f"{s},{m},{lang},{rng.uniform(0.3, 0.9):.4f}" for s in seeds for m in methods for lang in langs]
    return "\n".join(rows) + "\n"


_TIDY = (GAINS / "tidy_small.csv").read_text(encoding="utf-8")
_WIDE = (GAINS / "wide_small.csv").read_text(encoding="utf-8")


def _drop_column(text: str, index: int) -> str:
    return "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != index) for line in text.splitlines()) + "\n"


# name -> file content (str or bytes); every one is refused by gains and regress
BAD_RESULTS: dict[str, str | bytes] = {
    "missing-column-seed": _drop_column(_TIDY, 0),
    "missing-column-score": _drop_column(_TIDY, 5),
    "missing-column-method-wide": _drop_column(_WIDE, 3),
    "non-numeric-score": _TIDY.replace("0.8", "n.a.", 1),
    "non-numeric-score-wide": _WIDE.replace("0.80", "eighty", 1),
    "boolean-score": _TIDY.replace("0.8", "True", 1),
    "infinite-score": _TIDY.replace("0.8", "inf", 1),
    "overflowing-score": _TIDY.replace("0.8", "1e400", 1),
    "empty-seed": _TIDY.replace("1,toy", ",toy", 1),
    "duplicate-rows": _TIDY + _TIDY.splitlines()[1] + "\n",
    "empty-file": "",
    "header-only": "seed,method,lang,score\n",
    "neither-layout": "a,b\n1,2\n",
    "semicolon-separated": _TIDY.replace(",", ";"),
    "ragged-rows": _TIDY + "1,2,3,4,5,6,7,8\n",
    "invalid-utf8": _TIDY.encode().replace(b"baseline", b"basel\xffne", 1),
    "binary-garbage": bytes(range(256)) * 4,
}


@pytest.mark.parametrize("command", ["gains", "regress"])
@pytest.mark.parametrize("name", list(BAD_RESULTS))
def test_bad_results_table_is_refused(name, command, tmp_path, capsys):
    path = tmp_path / f"{name}.csv"
    content = BAD_RESULTS[name]
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    out = tmp_path / "out"
    argv = [command, str(path), "-o", str(out), "--no-figures"]
    if command == "regress":
        argv += ["--permutations", "5", "--bootstrap", "5"]
    code, err, _, shown = run_cli(capsys, argv)
    assert_refused(code, err, shown, path)
    assert not out.exists() and tree(tmp_path) == {path.name}


@pytest.mark.parametrize("argv_tail, fragment", [
    (["--baseline", "nope"], "baseline method 'nope'"),
    (["--method", "m9"], "method 'm9' not in the results"),
    (["--metric", "bleu"], "no scores for metric 'bleu'"),
], ids=["unknown-baseline", "unknown-method", "unknown-metric"])
@pytest.mark.parametrize("command", ["gains", "regress"])
def test_results_options_that_match_nothing(command, argv_tail, fragment, tmp_path, capsys):
    """The error names the option's value and the file it was looked for in."""
    argv = [command, str(GAINS / "wide_small.csv"), *argv_tail, "-o", str(tmp_path / "out"), "--no-figures"]
    code, err, _, shown = run_cli(capsys, argv)
    message = assert_refused(code, err, shown, argv_tail[1])
    assert fragment in message and "wide_small.csv" in message
    assert tree(tmp_path) == set()


def test_single_seed_method_is_reported_not_a_crash(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text(_tidy(seeds=(1, 2, 3), methods=("baseline",)) + _tidy(seeds=(7,), methods=("m1",)).split("\n", 1)[1],
                    encoding="utf-8")
    code, err, out, _ = run_cli(capsys, ["gains", str(path), "--no-figures"])
    assert code == 0, err
    assert "single seed" in out and "±n/a" in out


def test_empty_score_cells_are_reported(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text(_TIDY.replace("0.8", "", 1), encoding="utf-8")
    code, err, out, _ = run_cli(capsys, ["gains", str(path), "--no-figures"])
    assert code == 0, err
    assert "1 empty score(s)" in out


def test_languages_without_typology_are_excluded_and_reported(tmp_path, capsys):
    """sk has no URIEL syntax features, xx and qqq are no languages: regress drops and names them."""
    path = tmp_path / "r.csv"
    path.write_text(_tidy(langs=(*REGRESSION_LANGS, "sk", "xx", "qqq")), encoding="utf-8")
    code, err, out, _ = run_cli(capsys, ["regress", str(path), "--features", "syntactic,genetic",
                                         "--permutations", "5", "--bootstrap", "5", "-o", str(tmp_path / "reg"),
                                         "--no-figures"])
    assert code == 0, err
    excluded = next(line for line in out.splitlines() if line.startswith("excluded:"))
    assert all(f"{lang}:" in excluded for lang in ("sk", "xx", "qqq"))
    assert json.loads((tmp_path / "reg" / "settings.json").read_text())["excluded"].keys() >= {"sk", "xx", "qqq"}


@pytest.mark.parametrize("cell", ["n.a.", "inf"])
def test_gains_table_with_bad_delta_is_refused_by_regress(cell, tmp_path, capsys):
    """A gains.csv row whose delta is not a finite number is an error, never a silently dropped row."""
    rows = ["lang,method,delta,baseline_mean"] + [f"{lang},m1,{0.1 * i:.2f},50" for i, lang in enumerate(REGRESSION_LANGS)]
    rows[3] = f"{REGRESSION_LANGS[2]},m1,{cell},50"
    path = tmp_path / "gains.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    code, err, _, shown = run_cli(capsys, ["regress", str(path), "--features", "genetic", "--permutations", "5",
                                           "--bootstrap", "5", "-o", str(tmp_path / "reg")])
    assert "delta" in assert_refused(code, err, shown, path)
    assert tree(tmp_path) == {"gains.csv"}


def _run_dir(tmp_path: Path, metrics: str, run_json: str | None = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(metrics, encoding="utf-8")
    if run_json is not None:
        (run / "run.json").write_text(run_json, encoding="utf-8")
    return run


_METRICS_HEAD = "model,metric,layer,lang,value\n"


@pytest.mark.parametrize("metrics, run_json, named", [
    ("model,metric,layer,lang\nbase,cka,0,fr\n", None, "metrics.csv"),
    (_METRICS_HEAD + "base,retrieval,x,fr,0.5\n", None, "metrics.csv"),
    (_METRICS_HEAD + "base,retrieval,0,fr,0.5\nrealigned,retrieval,0,fr,oops\n", None, "metrics.csv"),
    (_METRICS_HEAD + "base,retrieval,,fr,0.5\n", None, "metrics.csv"),
    (_METRICS_HEAD + "base,retrieval,0,fr,inf\n", None, "metrics.csv"),
    (_METRICS_HEAD, None, "metrics.csv"),
    (_METRICS_HEAD + "base,retrieval,0,fr,\nrealigned,retrieval,0,fr,\n", None, "metrics.csv"),
    (_METRICS_HEAD + "base,retrieval,0,fr,0.5\n", "{bad json", "run.json"),
    (_METRICS_HEAD + "base,retrieval,0,fr,0.5\n", "[1, 2]", "run.json"),
], ids=["missing-value-column", "non-numeric-layer", "non-numeric-value", "empty-layer", "infinite-value",
        "no-rows", "no-values", "run-json-not-json", "run-json-a-list"])
def test_bad_run_directory_is_refused_by_regress(metrics, run_json, named, tmp_path, capsys):
    run = _run_dir(tmp_path, metrics, run_json)
    code, err, _, shown = run_cli(capsys, ["regress", str(run), "--permutations", "5", "--bootstrap", "5"])
    assert_refused(code, err, shown, named)
    assert not (run / "regression").exists()


# --------------------------------------------------------------------------- typology


@pytest.mark.parametrize("argv, named", [
    (["en", "xx"], "'xx'"),
    (["xx", "fr"], "'xx'"),
    (["en", ""], "''"),
    (["en", "fr", "--pivot", "qq"], "'qq'"),
    (["en", "xx", "--matrix"], "'xx'"),
    (["en", "fr", "--kinds", ""], "distance types"),
    (["en", "fr", "--digits", "-3"], "--digits"),
    (["en", "fr", "--feature-table", "FT:lang,a,b\nen,1,2\nfr,1,x\n"], "features.csv"),
    (["en", "fr", "--feature-table", "FT:lang,a\nen,1\nen,2\nfr,3\n"], "features.csv"),
    (["en", "fr", "--feature-table", b"FT:\xff\xfe\x00"], "features.csv"),
    (["en", "fr", "--feature-table", "MISSING"], "missing.csv"),
], ids=["unknown-target", "unknown-pivot", "empty-code", "unknown-pivot-option", "unknown-in-matrix",
        "no-kinds", "negative-digits", "non-numeric-feature", "duplicate-feature-language",
        "invalid-utf8-features", "missing-feature-table"])
def test_typology_refuses_unknown_languages_and_bad_tables(argv, named, tmp_path, capsys):
    argv = list(argv)
    for i, arg in enumerate(argv):
        if isinstance(arg, bytes) or (isinstance(arg, str) and arg.startswith("FT:")):
            path = tmp_path / "features.csv"
            path.write_bytes(arg[3:] if isinstance(arg, bytes) else arg[3:].encode())
            argv[i] = str(path)
        elif arg == "MISSING":
            argv[i] = str(tmp_path / "missing.csv")
    code, err, _, shown = run_cli(capsys, ["typology", *argv])
    assert_refused(code, err, shown, named)


def test_typology_reports_missing_data_and_merges_duplicates(capsys):
    code, err, out, _ = run_cli(capsys, ["typology", "en", "fr", "fra", "sk", "--kinds", "syntactic,genetic"])
    assert code == 0, err
    rows = [line.split()[0] for line in out.splitlines()[3:] if line and not line.startswith("missing")]
    assert rows == ["fr", "sk"]  # fra is fr: one row
    assert any(line.startswith("missing: sk") for line in out.splitlines())


# --------------------------------------------------------------------------- unwritable outputs


@pytest.fixture(scope="module")
def results_with_languages(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("results") / "results.csv"
    path.write_text(_tidy(langs=REGRESSION_LANGS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gains_run(results_with_languages, tmp_path_factory) -> Path:
    """A gains run directory (input of `layerscope report`)."""
    out = tmp_path_factory.mktemp("gains") / "gains"
    assert main(["-q", "gains", str(results_with_languages), "--no-figures", "-o", str(out)]) == 0
    return out


def writing_argv(command: str, w: World, results: Path, out: Path) -> list[str]:
    """The command line of ``command`` writing to ``out`` (a file or a directory, as it writes)."""
    return {
        "compare": ["compare", str(w.base), str(w.base), "--corpus", f"tsv:{w.corpus}", "--no-figures",
                    "--no-regression", "--device", "cpu", "-o", str(out)],
        "realign": ["realign", str(w.base), "--parallel", f"tsv:{w.corpus}", "--pairs", f"dict:{w.muse}",
                    "--langs", "fr,de", "--steps", "1", "--batch-size", "2", "--device", "cpu", "-o", str(out)],
        "finetune": ["finetune", str(w.base), "--task", "pos", "--train", str(POS_TRAIN), "--eval", str(POS_EVAL),
                     "--steps", "1", "--seeds", "1", "--device", "cpu", "-o", str(out)],
        "snapshot": ["snapshot", str(w.base), str(out)],
        "gains": ["gains", str(results), "--no-figures", "-o", str(out)],
        "regress": ["regress", str(results), "--features", "genetic", "--permutations", "5", "--bootstrap", "5",
                    "--no-figures", "-o", str(out)],
        "typology": ["typology", "en", "fr", "de", "--kinds", "genetic", "--csv", str(out)],
    }[command]


OUTPUT_NAMES = {"compare": "run", "realign": "r.pt", "finetune": "results.csv", "snapshot": "s.pt", "gains": "g",
                "regress": "reg", "typology": "d.csv"}
WRITING_COMMANDS = tuple(OUTPUT_NAMES)


@pytest.mark.parametrize("where", ["under-a-file", "two-below-a-file", "read-only-directory"])
@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_unwritable_output_location(world, results_with_languages, command, where, tmp_path, capsys):
    """A location nobody can write to (a path through a regular file fails even for root; a
    0o500 directory only for other users): one line naming it, exit 2, nothing written."""
    if where == "read-only-directory" and not read_only_is_enforced(tmp_path):
        pytest.skip("this user (root) writes into read-only directories")
    blocker = tmp_path / "blocker"
    if where == "read-only-directory":
        blocker.mkdir(mode=0o500)
        out = blocker / OUTPUT_NAMES[command]
    else:
        blocker.write_text("a regular file\n")
        out = blocker / OUTPUT_NAMES[command] if where == "under-a-file" else blocker / "sub" / OUTPUT_NAMES[command]
    before = tree(tmp_path)
    try:
        code, err, _, shown = run_cli(capsys, writing_argv(command, world, results_with_languages, out))
        assert_refused(code, err, shown, blocker)
        assert tree(tmp_path) == before, "partial files left behind"
    finally:
        blocker.chmod(0o700)


@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_output_of_the_wrong_kind_is_refused(world, results_with_languages, command, tmp_path, capsys):
    """A directory where a file goes (or a file where a run directory goes) stays untouched."""
    out = tmp_path / OUTPUT_NAMES[command]
    if command in ("compare", "gains", "regress"):
        out.write_text("not a directory\n")
    else:
        out.mkdir()
        (out / "keep").write_text("precious\n")
    before = tree(tmp_path)
    code, err, _, shown = run_cli(capsys, writing_argv(command, world, results_with_languages, out))
    assert_refused(code, err, shown, out)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["compare", "realign", "finetune", "snapshot", "gains", "regress", "typology"])
def test_failed_run_creates_no_directories(world, command, tmp_path, capsys):
    """An output under directories that do not exist yet: a run that fails on its input leaves
    none of them behind (they are created only when there is something to write)."""
    bad, empty = tmp_path / "bad.csv", tmp_path / "empty.pt"
    bad.write_text("a,b\n1,2\n")
    empty.write_bytes(b"")
    out = tmp_path / "new" / "sub" / OUTPUT_NAMES[command]
    argv = writing_argv(command, world, bad, out)
    named = bad
    if command in ("compare", "realign", "finetune", "snapshot"):
        argv[argv.index(str(world.base))] = named = empty  # an unreadable model
        argv = [str(a) for a in argv]
    elif command == "typology":
        argv[argv.index("fr")] = named = "xx"  # an unknown language
    code, err, _, shown = run_cli(capsys, argv)
    assert_refused(code, err, shown, named)
    assert tree(tmp_path) == {"bad.csv", "empty.pt"}


def test_files_written_together_appear_together(tmp_path):
    """atomic_write_all (finetune's three tables): a failing writer leaves none of the files."""
    from layerscope.outputs import atomic_write_all

    def fails(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write_all({tmp_path / "a.csv": lambda tmp: tmp.write_text("a"), tmp_path / "b.json": fails})
    assert tree(tmp_path) == set()
    atomic_write_all({tmp_path / "a.csv": lambda tmp: tmp.write_text("a"),
                      tmp_path / "b.json": lambda tmp: tmp.write_text("b")})
    assert tree(tmp_path) == {"a.csv", "b.json"} and (tmp_path / "b.json").read_text() == "b"


def test_existing_snapshot_is_not_replaced_without_force(world, tmp_path, capsys):
    out = tmp_path / "s.pt"
    out.write_bytes(b"precious")
    code, err, _, shown = run_cli(capsys, ["snapshot", str(world.base), str(out)])
    assert "--force" in assert_refused(code, err, shown, out)
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("where", ["report-html-is-a-directory", "read-only-run-directory", "missing-run-directory",
                                   "run-json-a-list"])
def test_report_refuses_what_it_cannot_write_or_read(gains_run, where, tmp_path, capsys):
    if where == "read-only-run-directory" and not read_only_is_enforced(tmp_path):
        pytest.skip("this user (root) writes into read-only directories")
    run = tmp_path / "run"
    shutil.copytree(gains_run, run)
    (run / "report.html").unlink()
    named = run
    if where == "report-html-is-a-directory":
        (run / "report.html").mkdir()
        named = run / "report.html"
    elif where == "read-only-run-directory":
        run.chmod(0o500)
    elif where == "missing-run-directory":
        shutil.rmtree(run)
    else:
        (run / "run.json").write_text("[1, 2]")
        named = run / "run.json"
    before = tree(tmp_path)
    try:
        code, err, _, shown = run_cli(capsys, ["report", str(run)])
        assert_refused(code, err, shown, named)
        assert tree(tmp_path) == before
    finally:
        if run.exists():
            run.chmod(0o700)


# --------------------------------------------------------------------------- SIGKILL, resume, determinism

REALIGN_STEPS = 60
CHECKPOINT_EVERY = 4


def realign_argv(w: World, out: Path, *extra: str) -> list[str]:
    return ["realign", str(w.base), "--parallel", f"tsv:{w.corpus}", "--pairs", f"dict:{w.muse}", "--langs", "fr,de",
            "--freeze", "lower", "--steps", str(REALIGN_STEPS), "--batch-size", "4", "--lr", "1e-3", "--seed", "3",
            "--device", "cpu", "-o", str(out), *extra]


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "realigned.pt"
    assert main(["-q", *realign_argv(world, out)]) == 0
    return out


def test_sigkill_then_resume_reaches_the_uninterrupted_weights(world, uninterrupted, tmp_path, capsys):
    from layerscope.realign.job import partial_path

    out = tmp_path / "realigned.pt"
    partial = partial_path(out)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "layerscope", "-q",
               *realign_argv(world, out, "--checkpoint-every", str(CHECKPOINT_EVERY))]
    process = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not partial.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"realignment ended before it could be killed: {stderr}"
    assert partial.exists() and not out.exists()
    killed_at = torch.load(partial, weights_only=True)["meta"]["steps_done"]
    assert 0 < killed_at < REALIGN_STEPS

    code, err, _, _ = run_cli(capsys, realign_argv(world, out, "--checkpoint-every", str(CHECKPOINT_EVERY),
                                                   "--resume"))
    assert code == 0, err
    assert not partial.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["realigned.pt"], "partial or temporary files left behind"
    resumed, reference = state(out), state(uninterrupted)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    meta = torch.load(out, weights_only=True)["meta"]
    assert meta["resumed_from_step"] >= killed_at and meta["steps"] == REALIGN_STEPS


@pytest.mark.parametrize("partial_content", ["truncated", "other-program"])
def test_resume_from_a_broken_partial_state_is_refused(world, uninterrupted, partial_content, tmp_path, capsys):
    from layerscope.realign.job import partial_path

    out = tmp_path / "realigned.pt"
    partial = partial_path(out)
    if partial_content == "truncated":
        partial.write_bytes(uninterrupted.read_bytes()[:1000])
    else:
        torch.save({"epoch": 3}, partial)
    before = tree(tmp_path)
    code, err, _, shown = run_cli(capsys, realign_argv(world, out, "--resume"))
    assert_refused(code, err, shown, partial)
    assert tree(tmp_path) == before


def test_unwritable_activation_cache(world, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file\n")
    out = tmp_path / "run"
    code, err, _, shown = run_cli(capsys, ["compare", str(world.base), str(world.base), "--corpus",
                                           f"tsv:{world.corpus}", "--no-figures", "--no-regression", "--device", "cpu",
                                           "--cache-dir", str(blocker / "cache"), "-o", str(out)])
    assert_refused(code, err, shown, blocker)
    assert tree(tmp_path) == {"blocker"}


def test_realign_then_compare_is_bit_identical(world, uninterrupted, tmp_path, capsys):
    """The same realignment twice, then the same comparison of each: identical weights and a
    byte-identical metrics.csv on CPU."""
    again = tmp_path / "again.pt"
    assert main(["-q", *realign_argv(world, again)]) == 0
    first, second = state(uninterrupted), state(again)
    assert all(torch.equal(first[k], second[k]) for k in first)
    tables = []
    for name, realigned in (("a", uninterrupted), ("b", again)):
        out = tmp_path / name
        code, err, _, _ = run_cli(capsys, ["compare", str(world.base), str(realigned), "--corpus", f"tsv:{world.corpus}",
                                           "--no-figures", "--no-regression", "--device", "cpu", "--seed", "5",
                                           "-o", str(out)])
        assert code == 0, err
        tables.append((out / "metrics.csv").read_bytes())
    assert tables[0] == tables[1]


# --------------------------------------------------------------------------- fuzzing the readers
#
# Random bytes, random text and structured-but-wrong content written to a file: a reader either
# returns something sound or raises a one-line LayerscopeError naming the file. Anything else
# (a traceback from pandas, csv, json, int(), a KeyError) is a bug.

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_CODES = ["en", "fr", "de", "ja", "fra_Latn", "eng_Latn", "deu", "xx", "nb", "nn", "", "FR", "zho_Hans", " en"]
_CELL = st.one_of(st.text(max_size=24), st.sampled_from(["", " ", '"', "x" * 2100, "\r", "\x00", "é", "\ufeff", "#"]))


def _lines(strategy, *, max_size: int = 14) -> st.SearchStrategy[bytes]:
    newline = st.sampled_from(["\n", "\r\n", ""])
    return st.tuples(st.lists(strategy, max_size=max_size), newline).map(
        lambda parts: (parts[1] or "\n").join(parts[0]).encode("utf-8") + parts[1].encode())


def _content(structured: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Raw bytes, arbitrary text, or content shaped like the format (the most useful third)."""
    return st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8")), structured)


def _tsv_lines() -> st.SearchStrategy[bytes]:
    header = st.lists(st.sampled_from(_CODES), min_size=1, max_size=4).map("\t".join)
    row = st.lists(_CELL, max_size=5).map("\t".join)
    return st.tuples(header, _lines(row)).map(lambda p: p[0].encode() + b"\n" + p[1])


_SENTENCE_FILE = _content(_lines(_CELL))


def _conllu_lines() -> st.SearchStrategy[bytes]:
    line = st.one_of(
        st.sampled_from(["# sent_id = a", "# sent_id = b", "# sent_id =", "# text = hello there", "# text =", "#",
                         "", "", "1\tw\t_\tX\t_\t_\t0\troot\t_\t_", "2-3\tau\t_\t_\t_\t_\t_\t_\t_\t_",
                         "1.1\tx\t_\t_\t_\t_\t_\t_\t_\t_", "1\tw\t_"]),
        st.lists(_CELL, min_size=1, max_size=11).map("\t".join),
    )
    return _lines(line, max_size=20)


def _reads_or_names(read: Callable[[], object], named: Path):
    """``read()``'s result, or None after a LayerscopeError that names ``named`` in one line."""
    try:
        return read()
    except LayerscopeError as exc:
        assert str(named) in str(exc), f"error does not name {named}: {exc}"
        assert "\n" not in str(exc)
        return None


def _check_corpus(corpus) -> None:
    from layerscope.corpora import MAX_CHARS

    for lang, targets in corpus.targets.items():
        pivots = corpus.pivot_sentences[lang]
        assert len(pivots) == len(targets)  # possibly 0: compare and realign refuse that themselves
        assert all(0 < len(s) <= MAX_CHARS and s.strip() == s for s in [*pivots, *targets])


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


@FUZZ
@given(data=_content(_tsv_lines()))
def test_fuzz_tsv_corpus(fuzz_dir, data):
    from layerscope.corpora import read_corpus

    path = fuzz_dir / "fuzz.tsv"
    path.write_bytes(data)
    corpus = _reads_or_names(lambda: read_corpus(f"tsv:{path}"), path)
    if corpus is not None:
        _check_corpus(corpus)


_FLORES_NAMES = ["eng_Latn.devtest", "fra_Latn.devtest", "deu_Latn.devtest", "fr.txt", "xx.txt", "zho_Hans.devtest",
                 "zho_Hant.devtest", "README.md", ".hidden", "eng_Latn.dev"]
_TATOEBA_NAMES = ["tatoeba.fra-eng.fra", "tatoeba.fra-eng.eng", "tatoeba.deu-eng.deu", "tatoeba.deu-eng.eng",
                  "tatoeba.xyz-eng.xyz", "tatoeba.xyz-eng.eng", "tatoeba.fra-deu.fra"]
_PUD_NAMES = ["en_pud-ud-test.conllu", "fr_pud-ud-test.conllu", "de_pud-ud-test.conllu", "xx_pud-ud-test.conllu"]


@pytest.mark.parametrize("kind, names, content", [
    ("flores", _FLORES_NAMES, _SENTENCE_FILE),
    ("tatoeba", _TATOEBA_NAMES, _SENTENCE_FILE),
    ("pud", _PUD_NAMES, _content(_conllu_lines())),
])
def test_fuzz_corpus_directories(fuzz_dir, kind, names, content):
    from layerscope.corpora import read_corpus

    @FUZZ
    @given(files=st.dictionaries(st.sampled_from(names), content, max_size=4))
    def run(files):
        directory = _fresh(fuzz_dir / kind)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        corpus = _reads_or_names(lambda: read_corpus(f"{kind}:{directory}"), directory)
        if corpus is not None:
            _check_corpus(corpus)

    run()


_COLUMNS = ["seed", "method", "lang", "score", "model", "task", "metric", "final_eval_fr_accuracy",
            "final_eval_de_accuracy", "eval_ja_f1", "final_eval_avg_accuracy", "value", "layer", "delta",
            "baseline_mean", "a", "", " seed"]
_VALUES = st.one_of(
    st.sampled_from(["1", "2", "3", "0.5", "0.9", "-1", "nan", "inf", "-inf", "1e400", "", "NA", "x", "fr", "de",
                     "xx", "baseline", "m1", "base", "realigned", "delta", "retrieval", "cka", "True", '"', "'",
                     '"a,b"', "1.0.0", " 2 "]),
    st.integers(-3, 12).map(str),
    st.floats().map(repr),
    st.text(max_size=6),
)


def _csv_lines() -> st.SearchStrategy[bytes]:
    header = st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=7).map(",".join)
    row = st.lists(_VALUES, max_size=8).map(",".join)
    return st.tuples(header, _lines(row, max_size=16)).map(lambda p: p[0].encode() + b"\n" + p[1])


def _regression_metrics(path: Path) -> None:
    from layerscope.regression import _read_csv
    from layerscope.stats.targets import check_metrics_table, gains_from_metrics

    frame = check_metrics_table(_read_csv(path), path)
    for target in ("retrieval@last", "cka@mean", "retrieval@1"):
        _reads_or_names(lambda: gains_from_metrics(frame, pivot="en", target=target, source=path), path)


def _results_readers() -> dict[str, Callable[[Path], object]]:
    from layerscope.stats import typology
    from layerscope.gains import compute_gains
    from layerscope.stats.gains import read_results
    from layerscope.corpora import read_user_csv

    return {
        "read_user_csv": lambda p: read_user_csv(p, what="results file"),
        "read_results": read_results,
        "compute_gains": lambda p: compute_gains(p, round_digits=1).paper_table(),
        "feature_table": typology.read_feature_table,
        "run_metrics": _regression_metrics,
    }


@pytest.mark.parametrize("reader", ["read_user_csv", "read_results", "compute_gains", "feature_table",
                                    "run_metrics"])
def test_fuzz_results_readers(fuzz_dir, reader):
    read = _results_readers()[reader]

    @FUZZ
    @given(data=_content(_csv_lines()))
    def run(data):
        path = fuzz_dir / f"{reader}.csv"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # numpy warnings on inf/NaN would reach users
            _reads_or_names(lambda: read(path), path)

    run()


def test_atomic_writes_get_the_permissions_of_a_plain_file(tmp_path):
    """Temporary files are private; the file that replaces the destination must not be."""
    from layerscope.outputs import atomic_write_text

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (written.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
