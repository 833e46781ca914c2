"""Toy part-of-speech files in CoNLL-U, written for the tests (no sentence comes from UD or any
other dataset). :func:`write_pos_fixtures` builds them in a directory at test time, so the
repository holds no CoNLL-U data files.

- ``en_handmade-train.conllu``: 6 sentences;
- ``fr_handmade-test.conllu``: 3; sentence 2 has the multi-word token ``au`` = ``à le`` (ids ``3-4``);
- ``de_handmade-test.conllu``: 2; sentence 1 has an empty node ``2.1`` that readers must skip;
- ``handmade_malformed.conllu``: line 4 has 8 fields; ``handmade_unknown_upos.conllu``: line 3
  has the tag ``NOUNN``.
"""

from __future__ import annotations

from pathlib import Path

Token = tuple[str, str]  # (form, UPOS)

EN = [
    "The/DET cat/NOUN sleeps/VERB ./PUNCT",
    "A/DET dog/NOUN runs/VERB fast/ADV ./PUNCT",
    "The/DET big/ADJ house/NOUN stands/VERB ./PUNCT",
    "Anna/PROPN reads/VERB a/DET book/NOUN ./PUNCT",
    "She/PRON eats/VERB bread/NOUN and/CCONJ cheese/NOUN ./PUNCT",
    "The/DET child/NOUN plays/VERB in/ADP the/DET park/NOUN ./PUNCT",
]
FR = [
    "Le/DET chat/NOUN dort/VERB ./PUNCT",
    "Il/PRON va/VERB à/ADP le/DET parc/NOUN ./PUNCT",  # "à le" is written "au"
    "Anna/PROPN lit/VERB un/DET livre/NOUN ./PUNCT",
]
DE = [
    "Der/DET Hund/NOUN läuft/VERB schnell/ADV ./PUNCT",  # an empty node follows "Hund"
    "Anna/PROPN liest/VERB ein/DET Buch/NOUN ./PUNCT",
]

MALFORMED = ("# sent_id = m-1\n# text = The cat sleeps .\n1\tThe\tthe\tDET\t_\t_\t0\troot\t_\t_\n"
             "2\tcat\tcat\tNOUN\t_\t_\t1\tdep\n3\tsleeps\tsleep\tVERB\t_\t_\t1\tdep\t_\t_\n")
UNKNOWN_UPOS = ("# sent_id = u-1\n1\tThe\tthe\tDET\t_\t_\t0\troot\t_\t_\n"
                "2\tcat\tcat\tNOUNN\t_\t_\t1\tdep\t_\t_\n\n")


def _tokens(tagged: str) -> list[Token]:
    return [tuple(item.rsplit("/", 1)) for item in tagged.split()]  # type: ignore[misc]


def _token_line(index: str, form: str, upos: str) -> str:
    head, relation = ("0", "root") if index == "1" else ("1", "dep")
    return f"{index}\t{form}\t{form.lower()}\t{upos}\t_\t_\t{head}\t{relation}\t_\t_"


def _sentence(sent_id: str, tokens: list[Token], *, contraction: tuple[int, str] | None = None,
              empty_after: tuple[int, Token] | None = None) -> str:
    """One CoNLL-U sentence; ``contraction`` = (first id, surface form) of a two-word token,
    ``empty_after`` = (id, token) of an empty node after that word."""
    words = [form for form, _ in tokens]
    text = " ".join(words)
    if contraction is not None:
        first, surface = contraction
        text = " ".join(words[: first - 1] + [surface] + words[first + 1:])
    lines = [f"# sent_id = {sent_id}", f"# text = {text}"]
    for index, (form, upos) in enumerate(tokens, start=1):
        if contraction is not None and index == contraction[0]:
            lines.append(f"{index}-{index + 1}\t{contraction[1]}\t_\t_\t_\t_\t_\t_\t_\t_")
        lines.append(_token_line(str(index), form, upos))
        if empty_after is not None and index == empty_after[0]:
            form_e, upos_e = empty_after[1]
            lines.append(f"{index}.1\t{form_e}\t{form_e.lower()}\t{upos_e}\t_\t_\t_\t_\t0:root\t_")
    return "\n".join(lines) + "\n\n"


def write_pos_fixtures(directory: Path) -> Path:
    """Write the five files into ``directory`` (created); returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    en = "".join(_sentence(f"en-{i}", _tokens(s)) for i, s in enumerate(EN, start=1))
    fr = "".join(_sentence(f"fr-{i}", _tokens(s), contraction=(3, "au") if i == 2 else None)
                 for i, s in enumerate(FR, start=1))
    de = "".join(_sentence(f"de-{i}", _tokens(s), empty_after=(2, ("dann", "ADV")) if i == 1 else None)
                 for i, s in enumerate(DE, start=1))
    for name, text in (("en_handmade-train.conllu", en), ("fr_handmade-test.conllu", fr),
                       ("de_handmade-test.conllu", de), ("handmade_malformed.conllu", MALFORMED),
                       ("handmade_unknown_upos.conllu", UNKNOWN_UPOS)):
        (directory / name).write_text(text, encoding="utf-8")
    return directory
