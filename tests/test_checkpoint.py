"""Checkpoints: bit-identical round trips, and untrusted files refused without running them."""

from __future__ import annotations

import pickle

import pytest
import torch

from layerscope.errors import LayerscopeError
from layerscope.models import checkpoint_from_encoder, load_encoder
from layerscope.models.checkpoint import load_checkpoint, read_weights_file, save_checkpoint, state_dict_hash

from conftest import make_encoder


def test_round_trip_is_bit_identical(tmp_path):
    encoder = make_encoder("bert")
    original = checkpoint_from_encoder(encoder, meta={"seed": 3, "languages": ["fr", "de"]})
    path = save_checkpoint(tmp_path / "a.pt", original)
    loaded = load_checkpoint(path)
    assert set(loaded.state_dict) == set(original.state_dict)
    for name, tensor in original.state_dict.items():
        assert loaded.state_dict[name].dtype == tensor.dtype
        assert torch.equal(loaded.state_dict[name], tensor), name
    assert loaded.meta == {"seed": 3, "languages": ["fr", "de"]}
    assert loaded.tokenizer_json == original.tokenizer_json
    assert loaded.content_hash() == original.content_hash()
    # loading it into a model and saving again changes nothing
    again = save_checkpoint(tmp_path / "b.pt", checkpoint_from_encoder(load_encoder(path), meta=loaded.meta))
    assert load_checkpoint(again).content_hash() == original.content_hash()
    # the file is plain tensors and types: loadable with weights_only=True
    assert torch.load(path, weights_only=True)["format"] == "layerscope-checkpoint"


def test_tokenizer_survives_round_trip(tiny_checkpoints):
    encoder = load_encoder(tiny_checkpoints["base"])
    reference = make_encoder("bert")
    text = "ew3x ew17x ew5x"
    assert encoder.tokenizer(text)["input_ids"] == reference.tokenizer(text)["input_ids"]


def test_content_hash_changes_with_weights(tiny_checkpoints):
    a = load_checkpoint(tiny_checkpoints["base"]).content_hash()
    b = load_checkpoint(tiny_checkpoints["perturbed"]).content_hash()
    assert a != b


class _Payload:
    """Unpickling this object would create a marker file: proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_and_payload_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    _Payload.marker = str(marker)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format": "layerscope-checkpoint", "state_dict": _Payload()}, handle)
    with pytest.raises(LayerscopeError) as info:
        load_checkpoint(path)
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message and "code" in message and "\n" not in message
    # the same for a torch.save'd pickle (zip container)
    path2 = tmp_path / "evil2.pt"
    torch.save({"x": _Payload()}, path2)
    with pytest.raises(LayerscopeError, match="arbitrary code"):
        read_weights_file(path2)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "empty file"),
        (b"PK\x03\x04garbage", "corrupt"),
        (b"not a pickle at all", "checkpoint"),
    ],
)
def test_broken_files_give_one_line_errors(tmp_path, content, fragment):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(LayerscopeError) as info:
        load_checkpoint(path)
    assert fragment in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_checkpoint(tiny_checkpoints, tmp_path):
    data = tiny_checkpoints["base"].read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LayerscopeError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_other_programs_format_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)
    with pytest.raises(LayerscopeError, match="not a layerscope checkpoint"):
        load_checkpoint(path)
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(LayerscopeError, match="found a list"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(LayerscopeError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_corrupt_safetensors_header(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes((10**6).to_bytes(8, "little") + b"{not json")
    with pytest.raises(LayerscopeError, match="corrupt safetensors"):
        read_weights_file(path)


def test_nan_weights_are_reported(tmp_path):
    encoder = make_encoder("bert")
    checkpoint = checkpoint_from_encoder(encoder)
    name = next(n for n in checkpoint.state_dict if n.endswith("weight"))
    checkpoint.state_dict[name][0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", checkpoint)
    with pytest.raises(LayerscopeError, match="NaN or Inf") as info:
        load_checkpoint(path)
    assert name in str(info.value)


def test_bare_state_dict_needs_model(tmp_path):
    encoder = make_encoder("bert")
    path = tmp_path / "bare.pt"
    torch.save(encoder.model.state_dict(), path)
    with pytest.raises(LayerscopeError, match="--model"):
        load_encoder(path)


def test_bare_weights_with_model_directory(tmp_path):
    """A .safetensors file and a prefixed state_dict load onto the architecture of --model."""
    from safetensors.torch import save_file

    encoder = make_encoder("bert")
    model_dir = tmp_path / "hf"
    encoder.model.save_pretrained(model_dir)
    encoder.tokenizer.save_pretrained(model_dir)
    changed = {k: v.clone() + 1.0 if v.is_floating_point() else v.clone() for k, v in encoder.model.state_dict().items()}
    save_file(changed, str(tmp_path / "w.safetensors"))
    loaded = load_encoder(tmp_path / "w.safetensors", model=str(model_dir))
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, changed[name]), name
    # a state_dict saved from a model with a head ("bert." prefix, extra head weights)
    prefixed = {f"bert.{k}": v for k, v in changed.items()}
    prefixed["cls.predictions.bias"] = torch.zeros(3)
    torch.save(prefixed, tmp_path / "head.pt")
    loaded = load_encoder(tmp_path / "head.pt", model=str(model_dir))
    assert torch.equal(loaded.model.embeddings.word_embeddings.weight, changed["embeddings.word_embeddings.weight"])
    # weights of another architecture are refused with the parameter named
    other = make_encoder("bert", width=48)
    torch.save(other.model.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(LayerscopeError, match="shape"):
        load_encoder(tmp_path / "wide.pt", model=str(model_dir))


def test_hf_directory_loads(tmp_path):
    encoder = make_encoder("distilbert")
    encoder.model.save_pretrained(tmp_path / "d")
    encoder.tokenizer.save_pretrained(tmp_path / "d")
    loaded = load_encoder(str(tmp_path / "d"))
    assert loaded.num_layers == 4 and loaded.block_paths[0] == "transformer.layer.0"
    # the hash identifies the weights: the same for the saved model, different once one weight moves
    assert loaded.source_hash == state_dict_hash(encoder.model.state_dict())
    with torch.no_grad():
        encoder.model.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert loaded.source_hash != state_dict_hash(encoder.model.state_dict())


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LayerscopeError, match="cannot load as a Hugging Face model"):
        load_encoder("no-such-org/no-such-model-xyz")
