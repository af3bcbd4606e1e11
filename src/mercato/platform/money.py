"""Money as DESIGN §2 says: requests accept a number or a string, responses show `"19.99"`.

Amounts are `Decimal` with at most two places; floats never touch them: routers that take
money use `ExactJsonRoute` (`mercato.platform.http_inputs`), which reads a JSON number from its
text (`19.9999999999999999` stays that, and is refused, instead of becoming the float 20.0).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CENT = Decimal("0.01")
# Large enough for any real price or balance, small enough to fit a BIGINT of cents.
MAX_AMOUNT = Decimal("1000000000.00")
# What an amount written as a string may look like: ASCII digits only (`Decimal` alone would
# take full-width or Arabic-Indic digits, `1_000`, `NaN` and `Infinity`).
_AMOUNT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_money(value: Any) -> Decimal:
    """A two-place Decimal from a number or a numeric string; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("an amount must be a number or a numeric string")
    if isinstance(value, Decimal):
        amount = value
    else:
        # str(float) gives the shortest text that reads back as that float: 19.99 -> "19.99".
        # (Request bodies never bring floats, see `ExactJsonRoute`; other sources may.)
        text = str(value).strip()
        if isinstance(value, str) and not _AMOUNT_TEXT.fullmatch(text):
            raise ValueError("not a number written with the ASCII digits 0-9")
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise ValueError("not a number") from None
    if not amount.is_finite():
        raise ValueError("an amount must be finite")
    # Bounded before quantizing: quantize raises InvalidOperation (not a ValueError, so a 500)
    # on a huge exponent such as "1e400".
    if abs(amount) > MAX_AMOUNT:
        raise ValueError(f"an amount must not exceed {MAX_AMOUNT}")
    if amount != amount.quantize(CENT, rounding="ROUND_DOWN"):
        raise ValueError("at most two decimal places")
    return amount.quantize(CENT)


def format_money(amount: Decimal) -> str:
    """`Decimal("19.9")` -> `"19.90"`."""
    return str(amount.quantize(CENT))


Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    PlainSerializer(format_money, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^-?\d+(\.\d{1,2})?$"}, {"type": "number"}],
            "examples": ["19.99"],
        }
    ),
]
"""A pydantic field type for amounts: parsed with `parse_money`, serialized as `"19.99"`."""


def exact_json(body: bytes) -> Any:
    """JSON with every non-integer number as the `Decimal` it spells (never a float)."""
    return json.loads(body, parse_float=Decimal)
