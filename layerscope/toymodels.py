"""Tiny multilingual models built from configs, with tokenizers trained on the fly.

Used by ``layerscope demo`` and the test suite: no download, seconds on a CPU. Architectures:
``bert``, ``distilbert``, ``xlm-roberta`` (encoders) and ``gpt2``, ``llama`` (decoders).
"""

from __future__ import annotations

from typing import Iterable

import torch

ARCHITECTURES = ("bert", "distilbert", "xlm-roberta", "gpt2", "llama")


def train_tokenizer(texts: Iterable[str], *, arch: str = "bert", vocab_size: int = 2000):
    """Train a fast tokenizer in the style ``arch`` expects and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if arch in ("bert", "distilbert"):
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False, handle_chinese_chars=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
        )
    if arch == "xlm-roberta":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(
            texts, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>")
        )
        bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
            pad_token="<pad>", unk_token="<unk>", mask_token="<mask>", model_max_length=512,
        )
    if arch in ("gpt2", "llama"):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(
            texts,
            trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
            unk_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=512,
        )
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")


def tiny_config(arch: str, vocab_size: int, *, layers: int = 4, width: int = 64, heads: int = 4,
                max_positions: int = 256, tokenizer=None):
    """A small config of the given architecture (random weights once instantiated)."""
    from transformers import BertConfig, DistilBertConfig, GPT2Config, LlamaConfig, XLMRobertaConfig

    if arch == "bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                          num_attention_heads=heads, intermediate_size=4 * width,
                          max_position_embeddings=max_positions,
                          pad_token_id=tokenizer.pad_token_id if tokenizer is not None else 0)
    if arch == "distilbert":
        return DistilBertConfig(vocab_size=vocab_size, dim=width, n_layers=layers, n_heads=heads,
                                hidden_dim=4 * width, max_position_embeddings=max_positions,
                                pad_token_id=tokenizer.pad_token_id if tokenizer is not None else 0)
    if arch == "xlm-roberta":
        pad = tokenizer.pad_token_id if tokenizer is not None else 1
        return XLMRobertaConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                                num_attention_heads=heads, intermediate_size=4 * width,
                                max_position_embeddings=max_positions + pad + 1, pad_token_id=pad,
                                bos_token_id=tokenizer.bos_token_id if tokenizer is not None else 0,
                                eos_token_id=tokenizer.eos_token_id if tokenizer is not None else 2)
    eos = tokenizer.eos_token_id if tokenizer is not None else 0
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=width, n_layer=layers, n_head=heads,
                          n_positions=max_positions, bos_token_id=eos, eos_token_id=eos)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=2 * width,
                           max_position_embeddings=max_positions, bos_token_id=eos, eos_token_id=eos,
                           pad_token_id=eos)
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")


def build_tiny(arch: str, texts: Iterable[str], *, layers: int = 4, width: int = 64, heads: int = 4,
               vocab_size: int = 2000, seed: int = 0):
    """A random-weight base model of ``arch`` and its tokenizer trained on ``texts``.

    Returns ``(model, tokenizer)``; the model is an ``AutoModel`` (no head).
    """
    from transformers import AutoModel

    tokenizer = train_tokenizer(texts, arch=arch, vocab_size=vocab_size)
    config = tiny_config(arch, len(tokenizer), layers=layers, width=width, heads=heads, tokenizer=tokenizer)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    model.eval()
    return model, tokenizer
