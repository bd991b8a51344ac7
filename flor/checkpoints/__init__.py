"""Checkpoints: what flor.checkpointing registers, and when its state is taken.

policy (when), snapshot (copy state), writer (persist in background), store (read/restore).
"""

from __future__ import annotations

from .scope import Checkpointing

__all__ = ["Checkpointing"]
