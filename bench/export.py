"""The product CSV export of 1,000,000 products end to end through the job, next to dumping the
same rows straight from the database.

    python bench/export.py [--products 1000000] [--postgres]

Embedded: `mercato run` on a data dir whose catalog is seeded with N products (inserted straight
into catalog's SQLite file: seeding is setup, not measured), then `POST /api/v1/jobs/export-
products/run` as the admin; the figure is the job's run from start to finish (authenticate as the
`mercato-exporter` client, stream catalog's export as CSV, write the file, rotate) and the
peak RSS of the server process. Every run seeds a fresh data dir (removed afterwards).
Baselines, in the same run: the sqlite3 shell's CSV mode on the same file, and (with --postgres,
when PostgreSQL answers) `COPY ... TO STDOUT CSV` of the same rows. Prints figures; never fails
on time.

Measured (issue 10; 2-core machine shared with other sessions, medians of 3 runs interleaved with
the code before): load ~0.9, before 28.3 s (17.2x sqlite3 -csv, peak 155 MB), after 4.3 s
(3.2x, with 10,000-line pages; 4.1 s and 3.0x with 5,000 in one run), peak ~160 MB of which
141 MB idle; load 4-9, before 41.1 s (15.0x), after 8.1 s (2.5x), peak 151 MB (idle 135 MB).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import services  # noqa: E402
from tests.e2e.conftest import start_platform, stop_platform  # noqa: E402

ADMIN_PASSWORD = "Admin-Pass-1234"
COLUMNS = (
    "id, name, description, author, category, price, currency, stock, active, owner_id,"
    " external_id, source, version, created_at, updated_at"
)
# What the CSV holds, computed by the database itself (the baselines).
SQLITE_EXPORT = (
    "SELECT id, name, description, printf('%.2f', price / 100.0),"
    " CASE WHEN active AND stock > 0 THEN 'Available' ELSE 'Unavailable' END,"
    " owner_id, created_at FROM products ORDER BY created_at, id"
)
PG_EXPORT = (
    "SELECT id, name, description, to_char(price / 100.0, 'FM999999990.00'),"
    " CASE WHEN active AND stock > 0 THEN 'Available' ELSE 'Unavailable' END,"
    " owner_id, created_at FROM products ORDER BY created_at, id"
)


def rows(count: int) -> list[tuple[object, ...]]:
    """`count` products, created one millisecond apart."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(count):
        created = (start + timedelta(milliseconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
        out.append(
            (
                str(uuid.UUID(int=(i + 1) << 64 | 0x7000_8000_0000_0000)),
                f"Product {i}",
                f"Description of product {i}, with a comma",
                "Author" if i % 2 else None,
                "books",
                1000 + i % 9000,
                "USD",
                i % 50,
                i % 10 != 0,
                None if i % 3 else "01a20e6b-0000-7000-8000-000000000001",
                None,
                "local",
                1,
                created,
                created,
            )
        )
    return out


def seed_sqlite(db: Path, data: list[tuple[object, ...]]) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany(f"INSERT INTO products ({COLUMNS}) VALUES ({','.join('?' * 15)})", data)


class PeakRss:
    """Samples a process's resident memory every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_command(
    args: list[str], output: Path, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """Seconds and peak RSS of a command writing its stdout to `output`."""
    with output.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(args, stdout=sink, env=env)
        with PeakRss(process.pid) as rss:
            process.wait()
        elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{args[0]} failed with {process.returncode}")
    return elapsed, rss.peak


def export_through_the_job(
    data_dir: Path, env_extra: dict[str, str]
) -> tuple[float, int, int, int]:
    """Start `mercato run`, run the export job once; seconds, peak and idle RSS, rows."""
    env = {
        "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MERCATO_LOG_LEVEL": "WARNING",
        "MERCATO_LOG_JSON": "false",
        "MERCATO_JOB_EXPORT_PRODUCTS_INITIAL_DELAY": "86400",
        **env_extra,
    }
    running = start_platform(data_dir, extra_env=env)
    server = running.process
    try:
        with httpx.Client(base_url=running.base_url, timeout=60) as client:
            token = None
            while token is None:
                answer = client.post(
                    "/api/v1/auth/login",
                    json={"username_or_email": "admin", "password": ADMIN_PASSWORD},
                )
                token = answer.json().get("access_token") if answer.status_code == 200 else None
                time.sleep(0.1)
            headers = {"Authorization": f"Bearer {token}"}
            idle_rss = psutil.Process(server.pid).memory_info().rss
            with PeakRss(server.pid) as rss:
                started = time.perf_counter()
                run_id = client.post("/api/v1/jobs/export-products/run", headers=headers).json()[
                    "run_id"
                ]
                while True:
                    runs = client.get("/api/v1/jobs/export-products/runs", headers=headers).json()
                    run = next(r for r in runs["items"] if r["id"] == run_id)
                    if run["status"] not in ("queued", "running"):
                        break
                    time.sleep(0.1)
                elapsed = time.perf_counter() - started
            if run["status"] != "succeeded":
                raise RuntimeError(f"export run {run['status']}: {run.get('error')}")
            return elapsed, rss.peak, idle_rss, int(run["counts"]["rows"])
    finally:
        stop_platform(running)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="also the PostgreSQL baseline")
    args = parser.parse_args()
    count = args.products
    tmp = Path(tempfile.mkdtemp(prefix="mercato-bench-export-"))
    data_dir = tmp / "data"
    subprocess.run(
        [sys.executable, "-m", "mercato.cli", "migrate", "catalog", "--data-dir", str(data_dir)],
        check=True, capture_output=True,
    )  # fmt: skip
    print(f"bench/export.py: {count:,} products, this machine")
    data = rows(count)
    started = time.perf_counter()
    seed_sqlite(data_dir / "catalog.db", data)
    print(f"  (seeded SQLite in {time.perf_counter() - started:.1f} s; not measured)")

    results: list[tuple[str, float, int, str]] = []
    seconds, peak = timed_command(
        ["sqlite3", "-csv", str(data_dir / "catalog.db"), SQLITE_EXPORT], tmp / "baseline.csv"
    )
    results.append(("sqlite3 -csv (baseline)", seconds, peak, ""))

    if args.postgres and services.port_open("127.0.0.1", 5432):
        name = f"mercato_bench_export_{uuid.uuid4().hex[:8]}"
        url = services.create_pg_database(name)
        dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
        try:
            subprocess.run(
                ["psql", "-q", dsn, "-c",
                 "CREATE TABLE products (id text, name text, description text, author text,"
                 " category text, price bigint, currency text, stock int, active boolean,"
                 " owner_id text, external_id text, source text, version int,"
                 " created_at timestamptz, updated_at timestamptz)"],
                check=True,
            )  # fmt: skip
            with (
                sqlite3.connect(data_dir / "catalog.db") as conn,
                tempfile.TemporaryFile("w+") as f,
            ):
                for row in conn.execute(f"SELECT {COLUMNS} FROM products"):
                    f.write("\t".join("\\N" if v is None else str(v) for v in row) + "\n")
                f.seek(0)
                subprocess.run(
                    ["psql", "-q", dsn, "-c", "COPY products FROM STDIN"], stdin=f, check=True
                )
            seconds, peak = timed_command(
                ["psql", "-q", dsn, "-c", f"COPY ({PG_EXPORT}) TO STDOUT CSV"], tmp / "pg.csv"
            )
            results.append(("psql COPY ... TO STDOUT CSV (baseline)", seconds, peak, ""))
        finally:
            services.drop_pg_database(name)
        del url

    seconds, peak, idle, exported = export_through_the_job(data_dir, {})
    note = f"idle RSS {idle / 2**20:.0f} MB, {exported:,} rows"
    results.append(("export job, embedded (SQLite)", seconds, peak, note))

    print(f"{'path':<40}{'seconds':>9}{'rows/s':>12}{'peak RSS':>11}  note")
    for label, secs, rss, extra in results:
        print(f"{label:<40}{secs:>9.1f}{count / secs:>12,.0f}{rss / 2**20:>8.0f} MB  {extra}")
    job = results[-1][1]
    print(f"job / sqlite3 baseline: {job / results[0][1]:.1f}x the time")
    print("aim (issue 10): <= 5 s, <= 3x sqlite3 -csv, <= 150 MB peak RSS for 1M products")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
