"""The one error type users see: a clear, one-line message and exit code 2."""

from __future__ import annotations


class LayerscopeError(ValueError):
    """Bad input or an impossible request, reported as one line naming the input.

    The CLI turns it into ``layerscope: error: <message>`` and exit code 2; library users
    catch it as a ``ValueError``.
    """

    exit_code = 2

    def __init__(self, message: str, *, source: object | None = None) -> None:
        text = " ".join(str(message).split())
        if source is not None:
            text = f"{source}: {text}"
        super().__init__(text)
        self.source = source
