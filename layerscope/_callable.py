"""Job modules that can be called like their job function, and the results they hand out.

``layerscope.compare`` is both a module (``layerscope/compare.py``) and, per the public API, the
function ``layerscope.compare(...)``. Importing the submodule rebinds the package attribute to
the module, so the module itself is made callable: calling it calls the job function.

The statistics return data classes whose ``write`` writes tables only; a job promotes such a
result to its own subclass whose ``write`` also draws the figures (:func:`promote`).
"""

from __future__ import annotations

import dataclasses
import sys
import types
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def make_callable(module_name: str, function: Callable) -> None:
    module = sys.modules[module_name]

    class _JobModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    _JobModule.__name__ = f"{function.__name__}_module"
    _JobModule.__doc__ = function.__doc__
    module.__class__ = _JobModule


def promote(result: Any, cls: type[T]) -> T:
    """``result``, a data class instance, as ``cls`` (a data-class subclass adding no fields)."""
    return cls(**{f.name: getattr(result, f.name) for f in dataclasses.fields(result)})
