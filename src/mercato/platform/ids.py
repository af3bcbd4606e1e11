"""Identifier helpers: UUIDv7 everywhere, so ids sort by creation time."""

from __future__ import annotations

import uuid

import uuid6


def new_id() -> uuid.UUID:
    """A fresh UUIDv7 (time-ordered)."""
    return uuid.UUID(int=uuid6.uuid7().int)


def new_id_str() -> str:
    """A fresh UUIDv7 as its canonical string."""
    return str(new_id())
