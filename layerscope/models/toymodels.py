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
        normalizer = normalizers.BertNormalizer(lowercase=False, handle_chinese_chars=True)
        pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        vocab = deterministic_wordpiece_vocab(texts, normalizer, pre_tokenizer, vocab_size, specials)
        tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizer
        tok.decoder = decoders.WordPiece()
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


def deterministic_wordpiece_vocab(texts, normalizer, pre_tokenizer, vocab_size: int,
                                  specials: list[str]) -> dict[str, int]:
    """A WordPiece vocabulary that is the same on every run (the tokenizers trainer is not).

    Special tokens, then every character as a word start and as a ``##`` continuation, then the
    most frequent whole words (ties broken alphabetically) up to ``vocab_size``. Greedy
    longest-match encoding keeps frequent words whole and spells the rest in characters.
    """
    from collections import Counter

    words: Counter[str] = Counter()
    for text in texts:
        for word, _span in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            words[word] += 1
    characters = sorted({char for word in words for char in word})
    ordered = list(specials) + characters + [f"##{char}" for char in characters]
    seen = set(ordered)
    for word, _count in sorted(words.items(), key=lambda item: (-item[1], item[0])):
        if len(ordered) >= vocab_size:
            break
        if word not in seen:
            ordered.append(word)
            seen.add(word)
    return {token: index for index, token in enumerate(ordered)}


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
