"""Schemathesis sends generated requests, valid and invalid, to every documented operation of a
running `mercato run` as the admin: none may answer a server error.

The seed is random on purpose (printed in the output to replay a failure): each run explores new
input. Operations that would end the session (logout, revocation, deleting or demoting the admin,
rotating keys) are left out: they work, but the rest of the run would be tested as anonymous.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import login, start_platform, stop_platform

ADMIN_PASSWORD = "Admin-Pass-1234"
SECONDS = 60
SESSION_ENDERS = r"logout|revoke|accounts/me|roles|keys/rotate"


def test_generated_requests_never_get_a_server_error(tmp_path: Path) -> None:
    running = start_platform(
        tmp_path / "data", extra_env={"MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD}
    )
    try:
        with running.client() as client:
            # Retried: identity knows the admin once it has applied accounts' `user.created`.
            headers = login(client, "admin", ADMIN_PASSWORD)
            token = headers["Authorization"].removeprefix("Bearer ")
            # Something to find: operations on a product id reach their logic, not only 404.
            product = client.post(
                "/api/v1/products", headers=headers, json={"name": "Dune", "price": "9.99"}
            )
            assert product.status_code == 201, product.text
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{running.base_url}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "not_a_server_error",
                "--exclude-path-regex",
                SESSION_ENDERS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-time",
                str(SECONDS),
                # One worker: with two, schemathesis builds its validators in two threads at
                # once and CPython 3.11's AST compiler can fail under that ("AST constructor
                # recursion depth mismatch", python/cpython#106905), a tool error, not ours.
                "--workers",
                "1",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=SECONDS + 120,
        )
        report = result.stdout[-6000:] + result.stderr[-2000:]
        assert result.returncode == 0, report
        assert "generated" in report and "passed" in report, report
        assert "unhandled error" not in running.log(), running.log()[-4000:]
    finally:
        stop_platform(running)
