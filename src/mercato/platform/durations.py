"""Durations in settings: `20s`, `5m`, `1h`, `1.5 hours`, `250ms`, plain seconds, or ISO 8601.

Every duration or delay setting reads the same forms (`Duration`), so a value that works for one
job's schedule works for its initial delay too. Parsing is humanfriendly's `parse_timespan`
(bare numbers are seconds); ISO 8601 (`PT20S`) and `HH:MM:SS` go through pydantic's own
timedelta parsing.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated

from humanfriendly import InvalidTimespan, parse_timespan
from pydantic import BeforeValidator, TypeAdapter, ValidationError

_TIMEDELTA = TypeAdapter(timedelta)
EXPECTED = "a duration such as 20s, 5m, 1h, 250ms or a number of seconds"


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number (seconds), `20s`, `5m`, `1h`, `2 days`, `PT20S`, or a
    `timedelta`. ValueError (naming the value) for anything else, negatives included."""
    if isinstance(value, bool):  # a bool is an int to Python, never a duration to a person
        raise ValueError(f"{EXPECTED}, not {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(f"{EXPECTED}, not {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{EXPECTED}, not {value!r}")
    return seconds


def _parse_text(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{EXPECTED}, not an empty value")
    try:
        return float(parse_timespan(stripped))
    except InvalidTimespan:
        pass
    try:
        # ISO 8601 durations and `[D days,] HH:MM:SS`, as pydantic reads a timedelta.
        return _TIMEDELTA.validate_python(stripped).total_seconds()
    except ValidationError:
        raise ValueError(f"{EXPECTED}, not {text!r}") from None


def parse_durations(value: object) -> object:
    """A comma-separated list of durations (`1s,5s,30s,2m`) as a tuple of seconds; anything
    else is left for the field's own validation."""
    if isinstance(value, str):
        return tuple(parse_duration(part) for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple):
        return tuple(parse_duration(part) for part in value)
    return value


# A settings field in seconds that also reads `20s`, `5m`, `1h` (bounds go in `Field(...)`).
Duration = Annotated[float, BeforeValidator(parse_duration)]
