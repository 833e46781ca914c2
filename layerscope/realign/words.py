"""Word tokenisation for word pairs, and the map from words to a model's sub-tokens.

Word pairs are found between *words*, independent of any model's tokenizer; the realignment
loss then reads the hidden state of each word's first sub-token. Words are runs of letters,
marks and digits; punctuation marks are words of their own. Scripts written without spaces
(Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) fall back to one word per character (a
base character with its combining marks), unless a segmenter is given, e.g. ``jieba`` for
Chinese when it is installed. A dictionary source then matches multi-character dictionary
entries as runs of these characters (see :mod:`layerscope.realign.pairs`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import LayerscopeError

# Unicode blocks of scripts written without spaces between words.
_SPACELESS_RANGES = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3134F),  # CJK extensions B-G
)


def is_spaceless_char(char: str) -> bool:
    """Whether ``char`` belongs to a script written without spaces between words."""
    point = ord(char)
    return any(low <= point <= high for low, high in _SPACELESS_RANGES)


def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in "LMN"


def _is_mark(char: str) -> bool:
    return unicodedata.category(char)[0] == "M"


@dataclass(frozen=True)
class Words:
    """A sentence as words: ``tokens[k]`` is ``text[spans[k][0]:spans[k][1]]``.

    ``joiner`` is how adjacent words are written together: ``" "`` for words separated by
    spaces, ``""`` for the single-character words of a spaceless script.
    """

    text: str
    tokens: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    joiner: str = " "

    def __len__(self) -> int:
        return len(self.tokens)


def split_words(text: str, lang: str | None = None, *,
                segmenter: Callable[[str], Sequence[str]] | None = None) -> Words:
    """Split a raw sentence into words with their character spans.

    Runs of letters, marks and digits form words, every other visible character is a word of
    its own, and characters of spaceless scripts are one word each (with their combining
    marks) unless ``segmenter`` (a function ``str -> list of words``) is given. ``lang`` only
    decides whether ``segmenter`` applies: it is used for languages written without spaces.
    """
    if segmenter is not None and (lang is None or _spaceless_language(lang)):
        return words_from_segments(text, segmenter(text))
    tokens: list[str] = []
    spans: list[tuple[int, int]] = []
    spaceless_seen = False
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        start = i
        if is_spaceless_char(char):
            spaceless_seen = True
            i += 1
            while i < n and _is_mark(text[i]):
                i += 1
        elif _is_word_char(char):
            i += 1
            while i < n and _is_word_char(text[i]) and not is_spaceless_char(text[i]):
                i += 1
        else:
            i += 1
        tokens.append(text[start:i])
        spans.append((start, i))
    return Words(text, tuple(tokens), tuple(spans), "" if spaceless_seen else " ")


def words_from_tokens(tokens: Sequence[str], *, joiner: str = " ") -> Words:
    """Words from an already tokenised sentence (gold alignment files): text = tokens joined by spaces."""
    clean = [str(token) for token in tokens]
    for token in clean:
        if not token or any(ch.isspace() for ch in token):
            raise LayerscopeError(f"pre-tokenised word {token!r} is empty or contains a space")
    spans, position = [], 0
    for token in clean:
        spans.append((position, position + len(token)))
        position += len(token) + 1
    return Words(" ".join(clean), tuple(clean), tuple(spans), joiner)


def words_from_segments(text: str, segments: Sequence[str]) -> Words:
    """Words given by a segmenter's output, located in ``text`` in order (spaces dropped)."""
    tokens, spans, position = [], [], 0
    for segment in segments:
        segment = segment.strip()
        if not segment:
            continue
        found = text.find(segment, position)
        if found < 0:
            raise LayerscopeError(f"segmenter returned {segment!r}, which is not in the sentence in order")
        tokens.append(segment)
        spans.append((found, found + len(segment)))
        position = found + len(segment)
    return Words(text, tuple(tokens), tuple(spans), "")


def _spaceless_language(lang: str) -> bool:
    from ..corpora import languages

    try:
        return languages.get(lang).spaceless
    except (LayerscopeError, KeyError):
        return False


# --------------------------------------------------------------------------- optional segmenters


def _jieba(text: str) -> list[str]:
    import jieba  # optional dependency

    return list(jieba.cut(text))


SEGMENTERS: dict[str, Callable[[str], Sequence[str]]] = {"jieba": _jieba}


def get_segmenter(name: str | None) -> Callable[[str], Sequence[str]] | None:
    """A segmenter by name (``None`` or ``chars`` for the character fallback)."""
    if name in (None, "", "chars", "characters"):
        return None
    if name not in SEGMENTERS:
        known = ", ".join(["chars", *SEGMENTERS])
        raise LayerscopeError(f"unknown word segmenter {name!r}; known: {known}")
    module = {"jieba": "jieba"}[name]
    try:
        __import__(module)
    except ImportError:
        raise LayerscopeError(f"segmenter {name!r} needs `pip install {module}`; "
                              "without it, use the character fallback") from None
    return SEGMENTERS[name]


# --------------------------------------------------------------------------- sub-tokens

_PREFIX_MARKERS = "\u2581\u0120"  # "▁" (SentencePiece, Metaspace) and "Ġ" (byte-level BPE)


@dataclass
class Encoded:
    """One tokenised sentence: ``input_ids`` (truncated) and each word's first sub-token index.

    ``first[k]`` is the position in ``input_ids`` of the first sub-token of word ``k``, or
    ``None`` when the word was cut off by truncation or produced no token.
    """

    input_ids: list[int]
    first: list[int | None]
    token_words: list[int | None]  # for each sub-token, the word it belongs to (None: special/space)


SPACE_TOKEN = "\u2581"  # SentencePiece's word-boundary marker, a token of its own before some words


def encode_words(tokenizer, sentences: Sequence[Words], max_length: int, *,
                 drop_space_tokens: bool = False) -> list[Encoded]:
    """Tokenise the sentences (cut at ``max_length`` sub-tokens) and locate every word.

    A word's first sub-token is the first token whose character offsets overlap the word,
    skipping a bare prefix marker (``▁``, ``Ġ``) when a later token of the word carries text.
    With ``drop_space_tokens`` the standalone ``▁`` tokens a SentencePiece tokenizer (XLM-R)
    emits before some words are deleted from the input before the cut, as the published
    realignment pipeline does; tokenizers without such tokens are unaffected.
    """
    if not sentences:
        return []
    if not getattr(tokenizer, "is_fast", False):
        raise LayerscopeError(
            f"word pairs need a fast tokenizer (character offsets); {type(tokenizer).__name__} is not one"
        )
    # with deletion, cut later: a sentence loses at most every other token to it
    limit = 2 * max_length if drop_space_tokens else max_length
    batch = tokenizer([w.text for w in sentences], truncation=True, max_length=limit,
                      return_offsets_mapping=True, return_attention_mask=False,
                      return_token_type_ids=False, return_special_tokens_mask=drop_space_tokens)
    out = []
    for row, (words, ids, offsets) in enumerate(zip(sentences, batch["input_ids"], batch["offset_mapping"])):
        if drop_space_tokens:
            ids, offsets = _drop_space_tokens(tokenizer, ids, offsets, batch["special_tokens_mask"][row], max_length)
        tokens = tokenizer.convert_ids_to_tokens(ids)
        first: list[int | None] = [None] * len(words)
        token_words: list[int | None] = [None] * len(ids)
        k = 0
        for t, ((start, end), piece) in enumerate(zip(offsets, tokens)):
            if end <= start:
                continue
            # advance to the first word that ends after this token starts
            while k < len(words) and words.spans[k][1] <= start:
                k += 1
            j = k
            bare = piece is not None and piece.strip(_PREFIX_MARKERS) == ""
            while j < len(words) and words.spans[j][0] < end:
                if token_words[t] is None:
                    token_words[t] = j
                if first[j] is None and not bare:
                    first[j] = t
                j += 1
        # a word made only of bare markers (should not happen) keeps its first overlapping token
        for j in range(len(words)):
            if first[j] is None:
                ws, we = words.spans[j]
                for t, (start, end) in enumerate(offsets):
                    if end > start and start < we and end > ws:
                        first[j] = t
                        break
        out.append(Encoded(list(ids), first, token_words))
    return out


def _drop_space_tokens(tokenizer, ids: Sequence[int], offsets: Sequence, special: Sequence[int],
                       max_length: int) -> tuple[list[int], list]:
    """``ids``/``offsets`` without standalone ``▁`` tokens, cut to ``max_length`` the way the
    tokenizer cuts: leading and trailing special tokens kept, the text in between shortened."""
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    keep = [t for t, piece in enumerate(pieces) if special[t] or piece != SPACE_TOKEN]
    lead = 0
    while lead < len(keep) and special[keep[lead]]:
        lead += 1
    trail = 0
    while trail < len(keep) - lead and special[keep[len(keep) - 1 - trail]]:
        trail += 1
    if len(keep) > max_length:
        body = keep[lead:len(keep) - trail][:max(0, max_length - lead - trail)]
        keep = keep[:lead] + body + keep[len(keep) - trail:]
    return [ids[t] for t in keep], [offsets[t] for t in keep]
