"""Encoders: the ordered blocks on every architecture, layer semantics, freeze policies."""

from __future__ import annotations

import pytest
import torch

from layerscope.errors import LayerscopeError
from layerscope.models import apply_freeze, parse_freeze_policy
from layerscope.models.encoder import find_blocks, group_parameters

from conftest import make_encoder

EXPECTED_BLOCKS = {
    "bert": "encoder.layer",
    "distilbert": "transformer.layer",
    "xlm-roberta": "encoder.layer",
    "gpt2": "h",
    "llama": "layers",
}


@pytest.mark.parametrize("arch", list(EXPECTED_BLOCKS))
def test_blocks_found_and_groups_partition_parameters(arch):
    encoder = make_encoder(arch, layers=3)
    assert encoder.block_paths == [f"{EXPECTED_BLOCKS[arch]}.{i}" for i in range(3)]
    groups = encoder.parameter_groups()
    names = [n for n, _ in encoder.model.named_parameters()]
    flat = [n for group in groups.values() for n in group]
    assert sorted(flat) == sorted(names)  # every parameter in exactly one group
    assert len(set(flat)) == len(flat)
    assert groups["embeddings"], "embeddings must be found"
    for i in range(3):
        assert groups[f"block.{i}"] and all(n.startswith(encoder.block_paths[i] + ".") for n in groups[f"block.{i}"])


def test_generic_fallback_finds_longest_uniform_modulelist():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(5, 2)
            self.stack = torch.nn.ModuleList([Block() for _ in range(5)])
            self.heads = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU()])

    assert find_blocks(Odd()) == [f"stack.{i}" for i in range(5)]
    groups = group_parameters(Odd(), find_blocks(Odd()))
    assert groups["embeddings"] == ["emb.weight"]  # registered before the blocks
    assert groups["after"] == ["heads.0.weight", "heads.0.bias"]


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_layer_i_is_output_of_block_i(arch):
    """Layer 0 = embedding output, layer i = raw output of block i (no final norm)."""
    from layerscope.probes.activations import forward_layers

    encoder = make_encoder(arch, layers=3)
    batch = encoder.tokenizer(["ew1x ew2x ew3x"], return_tensors="pt")
    outputs = {}
    handles = [b.register_forward_hook(lambda m, i, o, k=k: outputs.__setitem__(k, o[0] if isinstance(o, tuple) else o))
               for k, b in enumerate(encoder.blocks)]
    try:
        with torch.no_grad():
            hidden = forward_layers(encoder, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    finally:
        for h in handles:
            h.remove()
    assert hidden.shape[0] == 4
    for k in range(3):
        torch.testing.assert_close(hidden[k + 1], outputs[k], rtol=0, atol=0)


@pytest.mark.parametrize(
    "spec, blocks, embeddings",
    [
        ("none", (), False),
        ("lower", (0, 1, 2), False),
        ("upper", (3, 4, 5), False),
        ("0-5", (0, 1, 2, 3, 4, 5), False),
        ("1-2,4", (1, 2, 4), False),
        ("embeddings", (), True),
        ("lower+embeddings", (0, 1, 2), True),
        ("3", (3,), False),
    ],
)
def test_freeze_policy_parsing(spec, blocks, embeddings):
    policy = parse_freeze_policy(spec, 6)
    assert policy.frozen_blocks == blocks and policy.freeze_embeddings is embeddings


def test_odd_depth_halves():
    assert parse_freeze_policy("lower", 5).frozen_blocks == (0, 1)
    assert parse_freeze_policy("upper", 5).frozen_blocks == (2, 3, 4)


@pytest.mark.parametrize("spec, fragment", [("0-12", "outside"), ("5-2", "backwards"), ("lowr", "did you mean 'lower'"),
                                            ("", "empty")])
def test_bad_freeze_policies(spec, fragment):
    with pytest.raises(LayerscopeError, match=fragment):
        parse_freeze_policy(spec, 12)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "llama"])
def test_apply_freeze_sets_requires_grad(arch):
    encoder = make_encoder(arch, layers=4)
    frozen = set(apply_freeze(encoder, parse_freeze_policy("lower+embeddings", 4)))
    groups = encoder.parameter_groups()
    expected = set(groups["block.0"] + groups["block.1"] + groups["embeddings"])
    assert frozen == expected
    for name, param in encoder.model.named_parameters():
        assert param.requires_grad is (name not in expected)


def test_incompatible_checkpoints_are_refused(tiny_checkpoints, synthetic_tsv):
    from layerscope.compare import compare

    with pytest.raises(LayerscopeError, match="architecture"):
        compare(tiny_checkpoints["base"], tiny_checkpoints["other"], corpus=f"tsv:{synthetic_tsv}")


def test_bert_tokenizer_training_is_deterministic():
    """The demo's tokenizer (and so its checkpoints) must not depend on hash-map order."""
    from layerscope.models.toymodels import train_tokenizer

    from conftest import synthetic_parallel

    texts = [s for column in synthetic_parallel(30).values() for s in column]
    first = train_tokenizer(texts, arch="bert", vocab_size=300)
    second = train_tokenizer(list(reversed(texts)), arch="bert", vocab_size=300)
    assert first.get_vocab() == second.get_vocab()
    assert first.tokenize(texts[0]) == second.tokenize(texts[0])
    assert "[UNK]" not in first.tokenize(texts[-1])  # every character is in the vocabulary
