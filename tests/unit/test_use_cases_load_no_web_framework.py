"""Use cases load no web framework, not even through the platform modules they import.

import-linter checks the import graph (pyproject.toml); this checks what a fresh interpreter
really loads, so that an import hidden behind a package's `__init__` cannot slip through.
"""

from __future__ import annotations

import subprocess
import sys

USE_CASES = (
    "mercato.accounts.service",
    "mercato.catalog.service",
    "mercato.identity.service",
    "mercato.identity.oauth",
    "mercato.integration.service",
    "mercato.orders.service",
    "mercato.wallet.service",
)

PROBE = f"""
import sys
for name in {USE_CASES!r}:
    __import__(name)
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"fastapi", "starlette"}}))
"""


def test_importing_every_use_case_loads_neither_fastapi_nor_starlette() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]", loaded.stderr
