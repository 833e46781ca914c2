"""From a ``--train`` / ``--eval`` spec to examples per language.

A spec is a comma-separated list whose items are

- ``LANG=FILE``: that file, for that language;
- ``FILE``: its language from its name (``fr_pud-ud-test.conllu``, ``xquad.de.json``); an
  XNLI TSV with a ``language`` column gives every language it holds;
- ``DIR``: every file of the task's format in it whose name gives a language;
- ``hf:[DATASET:]CONFIG[,CONFIG…][@SPLIT]``: a Hugging Face dataset (the whole spec).

In Python, a dict ``{lang: path or list of examples}`` or a list of items also works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..corpora import languages
from ..errors import LayerscopeError
from ..provenance import grouped_hash
from .data import language_from_filename
from .registry import Task

Spec = str | os.PathLike | Mapping[str, Any] | Sequence[Any]


@dataclass
class TaskData:
    """Examples per language (canonical codes), with where each came from."""

    examples: dict[str, list]
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.examples)

    def content_hash(self) -> str:
        return grouped_hash(self.examples)


def _read_file(task: Task, path: Path, lang: str | None, limit: int | None, role: str,
               default_lang: str | None) -> dict[str, list]:
    code = lang or language_from_filename(path) or default_lang

    def unknown() -> LayerscopeError:
        return LayerscopeError(f"cannot tell the language of this {role} file from its name; "
                               f"write LANG=FILE, e.g. fr={path.name}", source=path)

    if task.name == "nli":  # an XNLI file may name the language of every row
        result = task.read(path, limit=limit, language=lang)
        if isinstance(result, dict):
            return result
        if code is None:
            raise unknown()
        return {code: result}
    if code is None:
        raise unknown()
    return {code: task.read(path, limit=limit)}


def _read_dir(task: Task, directory: Path, limit: int | None) -> dict[str, tuple[list, str]]:
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if not task.accepts_file(path):
            continue
        code = language_from_filename(path)
        if code is None:
            continue
        if code in found:
            raise LayerscopeError(f"two {task.name} files for language {code}: {found[code].name} and {path.name}; "
                                  "keep one per language or list them as LANG=FILE", source=directory)
        found[code] = path
    if not found:
        raise LayerscopeError(f"no {task.name} files ({', '.join(task.extensions)}) named with a language code",
                              source=directory)
    out = {}
    for code, path in found.items():
        for lang, examples in _read_file(task, path, code, limit, "eval", None).items():
            out[lang] = (examples, str(path))
    return out


def _items(spec: Spec) -> list[tuple[str | None, Any]]:
    if isinstance(spec, Mapping):
        return [(str(k), v) for k, v in spec.items()]
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text.startswith("hf:"):
            return [(None, text)]
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise LayerscopeError("empty data spec")
        out: list[tuple[str | None, Any]] = []
        for part in parts:
            lang, sep, rest = part.partition("=")
            out.append((lang.strip(), rest.strip()) if sep else (None, part))
        return out
    return [item for element in spec for item in _items(element)]


def load_task_data(task: Task, spec: Spec, *, role: str = "eval", limit: int | None = None,
                   default_lang: str | None = None) -> TaskData:
    """Examples per language for ``spec`` (see the module docstring).

    ``default_lang`` names a single file whose name gives no language (the training file:
    the source language). Two sources for one language are an error.
    """
    from .hub import load_hf

    examples: dict[str, list] = {}
    origins: dict[str, str] = {}

    def add(lang: str, items: list, origin: str) -> None:
        code = languages.normalize(lang, source=origin)
        if code in examples:
            raise LayerscopeError(f"language {code} is given twice ({origins[code]} and {origin})")
        if not items:
            raise LayerscopeError(f"no examples for language {code}", source=origin)
        examples[code] = items
        origins[code] = origin

    for lang, value in _items(spec):
        if isinstance(value, list):
            if lang is None:
                raise LayerscopeError("a list of examples needs a language: pass {lang: examples}")
            add(lang, value[:limit] if limit is not None else value, "examples")
            continue
        text = os.fspath(value)
        if text.startswith("hf:"):
            for code, items in load_hf(task, text, role=role, limit=limit).items():
                add(code, items, text)
            continue
        path = Path(text)
        if not path.exists():
            raise LayerscopeError(f"no such {role} file or directory", source=path)
        if path.is_dir():
            if lang is not None:
                raise LayerscopeError("LANG=DIR is not supported; give LANG=FILE or the directory alone",
                                      source=path)
            for code, (items, origin) in _read_dir(task, path, limit).items():
                add(code, items, origin)
        else:
            for code, items in _read_file(task, path, lang, limit, role, default_lang).items():
                add(code, items, str(path))
    if not examples:
        raise LayerscopeError(f"no {role} data")
    return TaskData(examples, origins)
