"""Job modules that can be called like their job function.

``layerscope.compare`` is both a module (``layerscope/compare.py``) and, per the public API, the
function ``layerscope.compare(...)``. Importing the submodule rebinds the package attribute to
the module, so the module itself is made callable: calling it calls the job function.
"""

from __future__ import annotations

import sys
import types
from typing import Callable


def make_callable(module_name: str, function: Callable) -> None:
    module = sys.modules[module_name]

    class _JobModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    _JobModule.__name__ = f"{function.__name__}_module"
    _JobModule.__doc__ = function.__doc__
    module.__class__ = _JobModule
