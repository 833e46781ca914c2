"""Word pairs between English and another language, for realignment.

A *link* ``(i, j)`` says that word ``i`` of the pivot-language sentence translates word ``j``
of the target sentence (0-based indices into :class:`~layerscope.realign.words.Words`).
Three sources, looked up by name in :data:`PAIR_SOURCES`:

``dict:DIR``  a bilingual dictionary in MUSE format (``en_word xx_word`` per line) in
              ``DIR/en-xx.txt``. A pair is kept only if exactly one dictionary translation of
              the English word occurs exactly once in the target sentence and translates no
              other English word of the sentence (and the English word occurs once). Matching
              is case-sensitive, as published (``casefold=True`` folds case on both sides).
``eflomal``   the statistical aligner eflomal (PyPI ``eflomal``), run in both directions and
              symmetrised with grow-diag-final-and.
``embed``     the model's own embeddings (as SimAlign): mutual argmax of the cosine similarity
              between word vectors (mean of their sub-tokens) at a chosen layer
              (``embed:8``; default two thirds of the depth).

Every source keeps one-to-one links only and drops pairs of identical strings (``Paris`` –
``Paris``, ``2`` – ``2``), which carry no cross-lingual signal. :func:`~layerscope.realign.links.alignment_scores`
measures links against gold alignments (precision, recall, AER).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import LayerscopeError
from .links import Link, _fold, dictionary_links, finalize_links, grow_diag_final_and, read_dictionary
from .words import Words, encode_words

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sources


class PairSource:
    """A way to find word pairs. Subclasses implement :meth:`raw_links`."""

    name = "?"

    def check(self, langs: Sequence[str], pivot: str) -> None:
        """Fail early (before any training) when the source cannot serve ``langs``."""

    def raw_links(self, src: Sequence[Words], tgt: Sequence[Words], *, lang: str,
                  pivot: str = "en") -> list[list[Link]]:
        raise NotImplementedError

    def align(self, src: Sequence[Words], tgt: Sequence[Words], *, lang: str, pivot: str = "en") -> list[list[Link]]:
        """One-to-one links without identical strings, one list per sentence pair."""
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} source sentences but {len(tgt)} target sentences")
        raw = self.raw_links(src, tgt, lang=lang, pivot=pivot)
        return [finalize_links(links, s, t) for links, s, t in zip(raw, src, tgt)]

    def describe(self) -> dict[str, object]:
        return {"source": self.name}


class DictionarySource(PairSource):
    """Pairs from MUSE dictionaries ``DIR/{pivot}-{lang}.txt`` (or ``{lang}-{pivot}.txt`` read in
    reverse), or from in-memory tables ``{lang: {pivot_word: {translations}}}``. Matching is
    case-sensitive (as published) unless ``casefold``."""

    name = "dict"

    def __init__(self, location: str | Path | Mapping[str, Mapping[str, Iterable[str]]], *,
                 casefold: bool = False):
        self._tables: dict[str, Mapping[str, frozenset[str]]] = {}
        self._files: dict[str, Path] = {}
        self.casefold = casefold
        if isinstance(location, Mapping):
            self.location = None
            for lang, table in location.items():
                self._tables[lang] = {_fold(k, casefold): frozenset(_fold(v, casefold) for v in vs)
                                      for k, vs in table.items()}
        else:
            self.location = Path(location)
            if not self.location.exists():
                raise LayerscopeError("no such dictionary directory or file", source=self.location)

    def _file_for(self, lang: str, pivot: str) -> tuple[Path, bool]:
        from ..corpora import languages

        assert self.location is not None
        if self.location.is_file():
            return self.location, False
        names = [(f"{pivot}-{lang}.txt", False), (f"{lang}-{pivot}.txt", True)]
        iso3 = {languages.get(code).iso3 for code in (lang,) if languages.is_known(code)}
        names += [(f"{pivot}-{code}.txt", False) for code in iso3]
        for name, reverse in names:
            if (self.location / name).is_file():
                return self.location / name, reverse
        found = sorted(p.name for p in self.location.glob("*.txt"))[:12]
        raise LayerscopeError(
            f"no dictionary for {pivot}-{lang}: expected {names[0][0]} (MUSE format 'en_word xx_word'); "
            f"found {', '.join(found) or 'no .txt files'}",
            source=self.location,
        )

    def check(self, langs: Sequence[str], pivot: str) -> None:
        if self.location is None:
            missing = [lang for lang in langs if lang not in self._tables]
            if missing:
                raise LayerscopeError(f"no dictionary given for {', '.join(missing)}")
            return
        if self.location.is_file() and len(langs) > 1:
            raise LayerscopeError(
                f"one dictionary file for {len(langs)} languages; give a directory with {pivot}-xx.txt files",
                source=self.location,
            )
        for lang in langs:
            path, _ = self._file_for(lang, pivot)
            self._files[lang] = path

    def table(self, lang: str, pivot: str = "en") -> Mapping[str, frozenset[str]]:
        if lang not in self._tables:
            if self.location is None:
                raise LayerscopeError(f"no dictionary given for {lang}")
            path, reverse = self._file_for(lang, pivot)
            self._files[lang] = path
            self._tables[lang] = read_dictionary(path, reverse=reverse, casefold=self.casefold)
        return self._tables[lang]

    def raw_links(self, src, tgt, *, lang, pivot="en"):
        table = self.table(lang, pivot)
        return [dictionary_links(s, t, table, casefold=self.casefold) for s, t in zip(src, tgt)]

    def describe(self) -> dict[str, object]:
        files = {}
        for lang, path in self._files.items():
            files[lang] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
        return {"source": self.name, "location": str(self.location) if self.location else "in-memory",
                "files": files, "rule": "unambiguous one-to-one (DESIGN.md)",
                "case": "folded" if self.casefold else "sensitive"}


class EflomalSource(PairSource):
    """Pairs from eflomal (``pip install eflomal``) in both directions, symmetrised with
    grow-diag-final-and. Words are lower-cased. eflomal seeds its sampler itself, so its
    links can differ slightly from run to run."""

    name = "eflomal"

    def __init__(self, *, model: int = 3, n_samplers: int = 3):
        self.model = model
        self.n_samplers = n_samplers

    @staticmethod
    def _import():
        try:
            import eflomal
        except ImportError:
            raise LayerscopeError(
                "the eflomal pair source needs the eflomal package: `pip install eflomal` "
                "(or `pip install layerscope[aligners]`; it builds a C extension, so a C compiler "
                "and Cython are needed); or use --pairs dict:DIR or --pairs embed"
            ) from None
        return eflomal

    def check(self, langs, pivot):
        self._import()

    def raw_links(self, src, tgt, *, lang, pivot="en"):
        eflomal = self._import()
        usable = [k for k, (s, t) in enumerate(zip(src, tgt)) if len(s) and len(t)]
        out: list[list[Link]] = [[] for _ in src]
        if not usable:
            return out
        src_lines = [" ".join(tok.casefold() for tok in src[k].tokens) + "\n" for k in usable]
        tgt_lines = [" ".join(tok.casefold() for tok in tgt[k].tokens) + "\n" for k in usable]
        aligner = eflomal.Aligner(model=self.model, n_samplers=self.n_samplers)
        with tempfile.TemporaryDirectory(prefix="layerscope-eflomal-") as tmp:
            fwd_path, rev_path = Path(tmp) / "fwd", Path(tmp) / "rev"
            aligner.align(src_lines, tgt_lines, links_filename_fwd=str(fwd_path),
                          links_filename_rev=str(rev_path), quiet=True)
            forward = fwd_path.read_text().splitlines()
            reverse = rev_path.read_text().splitlines()
        if len(forward) != len(usable) or len(reverse) != len(usable):
            raise LayerscopeError(f"eflomal returned {len(forward)} alignments for {len(usable)} sentence pairs")
        for k, fwd_line, rev_line in zip(usable, forward, reverse):
            out[k] = sorted(grow_diag_final_and(_pharaoh(fwd_line), _pharaoh(rev_line)))
        return out

    def describe(self):
        import importlib.metadata

        try:
            version = importlib.metadata.version("eflomal")
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {"source": self.name, "version": version, "model": self.model,
                "symmetrisation": "grow-diag-final-and"}


def _pharaoh(line: str) -> list[Link]:
    links = []
    for item in line.split():
        i, _, j = item.partition("-")
        links.append((int(i), int(j)))
    return links


class EmbeddingSource(PairSource):
    """Pairs from the encoder's own word vectors (SimAlign's mutual argmax, Jalili Sabet et al. 2020).

    A word vector is the mean of its sub-token vectors at ``layer`` (0 = embeddings); words
    ``i`` and ``j`` are linked when each is the other's most cosine-similar word.
    """

    name = "embed"

    def __init__(self, layer: int | None = None, *, encoder=None, max_length: int = 96, batch_size: int = 32):
        self.layer = layer
        self.encoder = encoder
        self.max_length = max_length
        self.batch_size = batch_size

    def bind(self, encoder) -> "EmbeddingSource":
        self.encoder = encoder
        return self

    def resolved_layer(self) -> int:
        if self.encoder is None:
            raise LayerscopeError("the embed pair source needs a model")
        num_layers = self.encoder.num_layers
        layer = round(2 * num_layers / 3) if self.layer is None else self.layer
        if not 0 <= layer <= num_layers:
            raise LayerscopeError(f"embed layer {layer} is outside 0-{num_layers} (0 = embeddings)")
        return layer

    def check(self, langs, pivot):
        self.resolved_layer()

    def word_vectors(self, sentences: Sequence[Words]):
        """Per sentence, a (n_words, d) float32 tensor of word vectors (NaN rows for words cut off)."""
        import torch

        from ..probes.activations import forward_layers

        encoder = self.encoder
        layer = self.resolved_layer()
        encoded = encode_words(encoder.tokenizer, sentences, self.max_length)
        pad = encoder.tokenizer.pad_token_id
        vectors = []
        was_training = encoder.model.training
        encoder.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(encoded), self.batch_size):
                    chunk = encoded[start:start + self.batch_size]
                    width = max(len(e.input_ids) for e in chunk)
                    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                    mask = torch.zeros((len(chunk), width), dtype=torch.long)
                    for row, e in enumerate(chunk):
                        ids[row, :len(e.input_ids)] = torch.tensor(e.input_ids)
                        mask[row, :len(e.input_ids)] = 1
                    hidden = forward_layers(encoder, {"input_ids": ids, "attention_mask": mask}, precision="fp32")
                    states = hidden[layer].float().cpu()  # (B, T, d)
                    for row, e in enumerate(chunk):
                        n_words = len(sentences[start + row])
                        sums = torch.zeros(n_words, states.shape[-1])
                        counts = torch.zeros(n_words)
                        for t, w in enumerate(e.token_words):
                            if w is not None:
                                sums[w] += states[row, t]
                                counts[w] += 1
                        vec = sums / counts.clamp(min=1)[:, None]
                        vec[counts == 0] = float("nan")
                        vectors.append(vec)
        finally:
            encoder.model.train(was_training)
        return vectors

    def raw_links(self, src, tgt, *, lang, pivot="en"):
        src_vecs = self.word_vectors(src)
        tgt_vecs = self.word_vectors(tgt)
        out = []
        for a, b in zip(src_vecs, tgt_vecs):
            out.append(mutual_argmax(a, b) if len(a) and len(b) else [])
        return out

    def describe(self):
        return {"source": self.name, "layer": self.resolved_layer() if self.encoder is not None else self.layer,
                "method": "mutual argmax of cosine similarity (SimAlign)"}


def mutual_argmax(src_vecs, tgt_vecs) -> list[Link]:
    """Links ``(i, j)`` where ``j`` is ``i``'s most cosine-similar target and vice versa.

    src_vecs (n, d), tgt_vecs (m, d); rows containing NaN take part in no link.
    """
    import torch

    a = torch.as_tensor(src_vecs, dtype=torch.float32)
    b = torch.as_tensor(tgt_vecs, dtype=torch.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"word vectors must be (n, d) and (m, d); got {tuple(a.shape)} and {tuple(b.shape)}")
    valid_a = ~torch.isnan(a).any(dim=1)
    valid_b = ~torch.isnan(b).any(dim=1)
    a = torch.nn.functional.normalize(torch.nan_to_num(a), dim=1)
    b = torch.nn.functional.normalize(torch.nan_to_num(b), dim=1)
    sim = a @ b.T
    sim[~valid_a, :] = -float("inf")
    sim[:, ~valid_b] = -float("inf")
    if not valid_a.any() or not valid_b.any():
        return []
    best_j = sim.argmax(dim=1)
    best_i = sim.argmax(dim=0)
    return [(i, int(best_j[i])) for i in range(a.shape[0])
            if valid_a[i] and valid_b[best_j[i]] and int(best_i[best_j[i]]) == i]


# --------------------------------------------------------------------------- registry

PAIR_SOURCES: dict[str, type[PairSource]] = {
    "dict": DictionarySource,
    "eflomal": EflomalSource,
    "embed": EmbeddingSource,
}
ALIASES = {"dictionary": "dict", "dico": "dict", "muse": "dict", "simalign": "embed",
           "embedding": "embed", "embeddings": "embed"}


def pair_source(spec: "str | PairSource", *, encoder=None, casefold: bool = False) -> PairSource:
    """A pair source from a spec: ``dict:DIR``, ``eflomal`` or ``embed[:LAYER]``.

    ``encoder`` is the model whose embeddings the ``embed`` source uses; ``casefold`` makes
    the dictionary source fold case (it matches words as written by default, as published).
    """
    if isinstance(spec, PairSource):
        if isinstance(spec, EmbeddingSource) and spec.encoder is None:
            spec.bind(encoder)
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise LayerscopeError("empty pair source; use dict:DIR, eflomal or embed")
    kind, _, argument = spec.strip().partition(":")
    kind = ALIASES.get(kind.lower(), kind.lower())
    if kind not in PAIR_SOURCES:
        near = difflib.get_close_matches(kind, [*PAIR_SOURCES, *ALIASES], n=1)
        hint = f"; did you mean {ALIASES.get(near[0], near[0])!r}?" if near else ""
        raise LayerscopeError(f"unknown pair source {spec!r}: use dict:DIR, eflomal or embed[:LAYER]{hint}")
    if kind == "dict":
        if not argument:
            raise LayerscopeError("the dict pair source needs a location: dict:DIR with en-xx.txt files")
        return DictionarySource(argument, casefold=casefold)
    if kind == "eflomal":
        if argument:
            raise LayerscopeError(f"eflomal takes no argument (got {argument!r})")
        return EflomalSource()
    layer = None
    if argument:
        try:
            layer = int(argument)
        except ValueError:
            raise LayerscopeError(f"embed layer must be an integer, got {argument!r}") from None
    return EmbeddingSource(layer, encoder=encoder)
