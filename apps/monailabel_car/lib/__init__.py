"""The monai-car MONAI Label app's tasks (MONAI Label imports them as ``lib`` from the app folder)."""

from __future__ import annotations

__all__: list[str] = []
