"""The app's request errors: each carries the HTTP status the server answers with and a message saying the fix."""

from __future__ import annotations

__all__ = ["CARRequestError", "BAD_INPUT", "MODEL_MISSING", "NOT_FOUND"]

NOT_FOUND = 404
"""An unknown study (image id)."""

BAD_INPUT = 422
"""A request the app understood but cannot run: a point outside the volume, an unreadable image, bad parameters."""

MODEL_MISSING = 503
"""The trained model (``model.pt``) is absent or does not fit the bundle's settings: the service is not ready."""


class CARRequestError(Exception):
    """A request that cannot be served, with the HTTP status to answer and a message naming the input and the fix.

    Args:
        status_code: the HTTP status (:data:`NOT_FOUND`, :data:`BAD_INPUT`, :data:`MODEL_MISSING`).
        message: what is wrong and how to fix it.
    """

    def __init__(self, status_code: int, message: str) -> None:
        if not isinstance(status_code, int) or not 400 <= status_code < 600:
            raise ValueError(f"status_code must be an HTTP error status (400-599), got {status_code!r}.")
        super().__init__(message)
        self.status_code = status_code
        self.message = str(message)

    def __str__(self) -> str:
        return self.message
