"""Reading a settings class so that a bad value is one clear line, said before anything runs."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


class SettingsError(ValueError):
    """A setting has a value this installation cannot run with (the message is one line)."""


def load(cls: type[S], **overrides: Any) -> S:
    """`cls(**overrides)`, with a validation failure raised as a one-line `SettingsError` that
    names the environment variable (never the value, which may be a secret)."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe(exc, str(cls.model_config.get("env_prefix") or ""))) from None


def describe(exc: ValidationError, env_prefix: str) -> str:
    """`MERCATO_X: what is wrong; MERCATO_Y: ...` for every failing field of `exc`."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        name = f"{env_prefix}{field}".upper() if field else "settings"
        message = str(error.get("msg", "invalid value"))
        # pydantic prefixes the message of a ValueError raised by a validator.
        message = message.removeprefix("Value error, ")
        parts.append(f"{name}: {message}")
    return "invalid settings: " + "; ".join(parts)
