"""Money as DESIGN §2 says: requests accept a number or a string, responses show `"19.99"`.

Amounts are `Decimal` with at most two places; floats never touch them (a JSON number is read
from its text, not through a binary float).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CENT = Decimal("0.01")
# Large enough for any real price or balance, small enough to fit a BIGINT of cents.
MAX_AMOUNT = Decimal("1000000000.00")


def parse_money(value: Any) -> Decimal:
    """A two-place Decimal from a number or a numeric string; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("an amount must be a number or a numeric string")
    try:
        # str(float) gives the shortest text that reads back as that float: 19.99 -> "19.99".
        amount = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
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
