"""The product CSV export (seed 000, DESIGN §5): authenticate, fetch, write, rotate.

Constant memory, and as little work per row as possible: the job asks catalog's export for
`text/csv` (DESIGN §5's columns, formatted by catalog's database straight from the cursor) and
copies the bytes to the file after checking the header row; only the record ends are counted.
A catalog answering NDJSON (its other representation) still works: each product becomes one
CSV row here, as before. Atomic: rows go to a hidden temporary file in the export directory,
which is flushed, fsynced and then renamed to `products_YYYYMMDD_HHMMSS.csv` in one step, so a
reader sees either no file or the whole file. Only files recorded in the database are listed,
served and rotated.

Formula injection (OWASP "CSV injection"): a product named `=HYPERLINK(...)` would be a live
formula in a spreadsheet. Unless turned off (`MERCATO_EXPORT_NEUTRALISE_FORMULAS=false`, for
machine readers), every text cell starting with `=`, `+`, `-`, `@`, tab or CR is written with a
leading `'`, which spreadsheets show as text. The price column is ours (two places, never
negative) and stays a plain number. The setting is the job's: it asks catalog's CSV for it
(`neutralise_formulas`), because catalog still holds each cell on its own and neutralises it in
the same formatting call, where doing it here would mean parsing every row back (the round
trip the CSV representation removes); with NDJSON the job applies it itself.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from itertools import repeat
from pathlib import Path
from typing import Any

import httpx
import structlog

from mercato.catalog.contracts import FORMULA_TRIGGERS
from mercato.integration.domain import (
    CSV_HEADER,
    BadProduct,
    JobSpec,
    RunOutcome,
    csv_row,
    export_file_name,
    files_to_rotate,
)
from mercato.integration.jobs import Job, RunContext
from mercato.integration.store import ExportFile, ExportFiles
from mercato.platform.http import ResilientClient
from mercato.platform.token_manager import TokenManager
from mercato.platform.uow import UnitOfWorkFactory

log = structlog.get_logger("mercato.integration.export")

EXPORT_PATH = "/api/v1/products/export"
TEMP_SUFFIX = ".part"
CSV = "text/csv"
NDJSON = "application/x-ndjson"
# CSV preferred; NDJSON from a catalog without the CSV representation.
ACCEPT = f"{CSV}, {NDJSON};q=0.5"
# Columns written as they come: numbers we format ourselves.
PLAIN_COLUMNS = frozenset({CSV_HEADER.index("Price")})


def neutralise(cell: str) -> str:
    """`cell` as a spreadsheet shows it as text: a leading `'` when it would start a formula."""
    return "'" + cell if cell[:1] in FORMULA_TRIGGERS else cell


def neutralised_row(row: tuple[str, ...]) -> tuple[str, ...]:
    """`row` with every text cell neutralised (the plain columns left as they are)."""
    return tuple(
        cell if index in PLAIN_COLUMNS else neutralise(cell) for index, cell in enumerate(row)
    )


class CsvExportWriter:
    """Writes rows to a hidden temp file, then publishes it by rename (or removes it)."""

    def __init__(
        self, directory: Path, file_name: str, *, header: bool, neutralise: bool = True
    ) -> None:
        self.directory = directory
        self._neutralise = neutralise
        self.final = directory / file_name
        self.temp = directory / f".{file_name}{TEMP_SUFFIX}"
        self.rows = 0
        directory.mkdir(parents=True, exist_ok=True)
        # newline="": the csv module writes its own \r\n line ends (RFC 4180).
        self._file = io.TextIOWrapper(self.temp.open("wb"), encoding="utf-8", newline="")
        self._writer = csv.writer(self._file)
        if header:
            self._writer.writerow(CSV_HEADER)

    def write(self, row: tuple[str, ...]) -> None:
        """Append one row (neutralised, unless turned off)."""
        self._writer.writerow(neutralised_row(row) if self._neutralise else row)
        self.rows += 1

    def write_csv(self, data: bytes, rows: int) -> None:
        """Append CSV bytes already in the file's format (`rows` records, neutralised or not
        as asked of their source)."""
        self._file.flush()  # the header, through the text layer, goes first
        self._file.buffer.write(data)
        self.rows += rows

    def publish(self) -> int:
        """Flush, fsync and rename into place; returns the file's size in bytes."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temp, self.final)
        return self.final.stat().st_size

    def discard(self) -> None:
        """Drop the temp file (a failed run leaves nothing behind)."""
        if not self._file.closed:
            self._file.close()
        with suppress(FileNotFoundError):
            self.temp.unlink()


class ExportProducts(Job):
    """Write every catalog product to a timestamped CSV file, keeping the newest N."""

    def __init__(
        self,
        spec: JobSpec,
        *,
        tokens: Callable[[], Awaitable[TokenManager | None]],
        catalog: ResilientClient,
        directory: Path,
        pattern: str,
        header: bool,
        keep: int,
        uow: UnitOfWorkFactory,
        problem: Callable[[], Awaitable[str | None]],
        path: str = EXPORT_PATH,
        neutralise: bool = True,
    ) -> None:
        self.spec = spec
        self._tokens = tokens
        self._catalog = catalog
        self.directory = directory
        self.pattern = pattern
        self.header = header
        self.keep = keep
        self._uow = uow
        self._problem = problem
        self.path = path
        self.neutralise = neutralise
        self._last_problem: str | None = None

    def disabled_reason(self) -> str | None:
        """See `Job` (as of the last `refresh`)."""
        return self._last_problem

    async def refresh(self) -> str | None:
        """Re-check whether the job can run (credentials may arrive after start)."""
        self._last_problem = await self._problem()
        return self._last_problem

    async def run(self, ctx: RunContext) -> RunOutcome:
        """See `Job`."""
        started = time.perf_counter()
        log.info("export step 1: authenticating with identity")
        step = time.perf_counter()
        tokens = await self._tokens()
        if tokens is None:
            raise RuntimeError(await self.refresh() or "no exporter credentials")
        await tokens.get_token()
        log.info("export step 1 done: access token obtained", duration_ms=_ms(step))

        async with self._uow() as uow:
            taken = await ExportFiles(uow.connection).newest_first()
        on_disk = [p.name for p in self.directory.glob("*.csv")] if self.directory.exists() else []
        file_name = export_file_name(self.pattern, ctx.now(), [*taken, *on_disk])
        writer = CsvExportWriter(
            self.directory, file_name, header=self.header, neutralise=self.neutralise
        )
        log.info("export step 2: fetching products from catalog", path=self.path)
        step = time.perf_counter()
        try:
            skipped = await self._copy(tokens, writer, ctx)
            fetch_ms = _ms(step)
            size = writer.publish()
        except BaseException:
            writer.discard()
            raise
        log.info(
            "export step 2 done: products fetched",
            products=writer.rows + skipped,
            duration_ms=fetch_ms,
        )
        log.info(
            "export step 3 done: products written to CSV",
            rows=writer.rows,
            skipped=skipped,
            bytes=size,
            file=str(writer.final),
        )
        record = ExportFile(file_name, ctx.run_id, writer.rows, size, ctx.now())
        try:
            async with self._uow() as uow:
                await ExportFiles(uow.connection).add(record)
        except BaseException:
            writer.final.unlink(missing_ok=True)  # unrecorded files are never served
            raise
        step = time.perf_counter()
        removed = await self._rotate()
        log.info(
            "export step 4 done: old files rotated",
            removed=removed,
            keep=self.keep,
            duration_ms=_ms(step),
        )
        log.info(
            "product export completed",
            rows=writer.rows,
            file=str(writer.final),
            duration_ms=_ms(started),
        )
        counts = {"rows": writer.rows, "skipped": skipped, "bytes": size, "rotated": removed}
        return RunOutcome(counts=counts, output=file_name)

    async def _copy(self, tokens: TokenManager, writer: CsvExportWriter, ctx: RunContext) -> int:
        headers = {"Accept": ACCEPT}
        params = {"neutralise_formulas": "true" if self.neutralise else "false"}
        async with tokens.stream(
            "GET", self.path, via=self._catalog, headers=headers, params=params
        ) as response:
            if response.status_code != 200:
                raise RuntimeError(f"catalog export answered HTTP {response.status_code}")
            total = _int(response.headers.get("X-Total-Count"))
            ctx.progress(0, total)
            if response.headers.get("content-type", "").startswith(CSV):
                await _copy_csv(response, writer, ctx, total)
                return 0
            return await _copy_ndjson(response, writer, ctx, total)

    async def _rotate(self) -> int:
        async with self._uow() as uow:
            files = ExportFiles(uow.connection)
            doomed = files_to_rotate(await files.newest_first(), self.keep)
            await files.remove(doomed)
        for name in doomed:
            (self.directory / name).unlink(missing_ok=True)
        return len(doomed)


async def _copy_csv(
    response: httpx.Response, writer: CsvExportWriter, ctx: RunContext, total: int | None
) -> None:
    """Catalog's CSV into the file as it comes, without its header row (ours is written, or
    not, by the writer); the records are counted, not parsed."""
    header = (",".join(CSV_HEADER) + "\r\n").encode()
    records = RecordCounter()
    start: bytes | None = b""
    async for chunk in response.aiter_bytes():
        if start is not None:
            start += chunk
            if len(start) < len(header):
                continue
            if not start.startswith(header):
                raise RuntimeError("catalog's CSV export does not start with the export's header")
            chunk, start = start[len(header) :], None
        writer.write_csv(chunk, records.count(chunk))
        ctx.progress(writer.rows, total)
    if start is not None:
        raise RuntimeError("catalog's CSV export ended before its header row")
    if records.inside:
        raise RuntimeError("catalog's CSV export ended inside a quoted cell")


class RecordCounter:
    """Counts the CSV records of a stream a chunk at a time: a `\r\n` ends one unless it is
    inside a quoted cell (an odd number of `"` before it; doubled quotes inside a cell keep
    the parity)."""

    def __init__(self) -> None:
        self.inside = False
        self._cr = False  # the last chunk ended with `\r`: a `\n` first ends a line break

    def count(self, chunk: bytes) -> int:
        """Records ending in `chunk`."""
        ended = 0
        if self._cr and chunk[:1] == b"\n" and not self.inside:
            ended += 1
        self._cr = chunk[-1:] == b"\r"
        pieces = chunk.split(b"\r\n")
        # The quotes of each piece, counted in C: usually all even (every quoted cell closes on
        # its own line), and each line break but the last piece's ends a record.
        quotes = list(map(bytes.count, pieces, repeat(b'"')))
        if not self.inside and not any(map(_ODD, quotes)):
            return ended + len(pieces) - 1
        # A piece with an odd number of quotes flips in or out of a quoted cell.
        for n in quotes[:-1]:
            if n & 1:
                self.inside = not self.inside
            if not self.inside:
                ended += 1
        if quotes[-1] & 1:
            self.inside = not self.inside
        return ended


_ODD = (1).__and__


async def _copy_ndjson(
    response: httpx.Response, writer: CsvExportWriter, ctx: RunContext, total: int | None
) -> int:
    """Each product of catalog's NDJSON as a CSV row; the lines that are not products are
    skipped (and counted)."""
    skipped = 0
    async for lines in _ndjson_chunks(response):
        for product in _parsed(lines):
            try:
                if isinstance(product, BadProduct):
                    raise product
                writer.write(csv_row(product))
            except BadProduct as exc:
                skipped += 1
                log.warning("export line skipped", error=str(exc)[:200])
        ctx.progress(writer.rows + skipped, total)
    return skipped


async def _ndjson_chunks(response: httpx.Response) -> AsyncIterator[list[bytes]]:
    """The complete, non-blank lines of an NDJSON body, as bytes, a chunk at a time (json.loads
    reads bytes; decoding to text first and splitting with httpx's universal-newline decoder
    costs more than the parsing)."""
    rest = b""
    async for chunk in response.aiter_bytes():
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield [line for line in lines if line.strip()]
    if rest.strip():
        yield [rest]


def _parsed(lines: list[bytes]) -> list[dict[str, Any] | BadProduct]:
    """Each line's product, or why it is not one. A chunk of valid lines is parsed as one JSON
    array (a million calls to json.loads cost seconds more); a chunk with a bad line, line by
    line, so only that line is lost."""
    if not lines:
        return []
    # Only lines that each look like one object are joined, and the array must hold exactly
    # that many objects: otherwise a broken line could pair up with its neighbour.
    if all(line[:1] == b"{" and line[-1:] == b"}" for line in lines):
        try:
            products: Any = json.loads(b"[" + b",".join(lines) + b"]")
            if len(products) == len(lines) and all(isinstance(p, dict) for p in products):
                return list(products)
        except ValueError:
            pass
    parsed: list[dict[str, Any] | BadProduct] = []
    for line in lines:
        try:
            product = json.loads(line)
        except ValueError as exc:
            parsed.append(BadProduct(f"not JSON: {exc}"))
            continue
        parsed.append(product if isinstance(product, dict) else BadProduct("not a JSON object"))
    return parsed


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
