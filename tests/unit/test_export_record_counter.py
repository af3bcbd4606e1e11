"""The export job counts catalog's CSV records without parsing them, however chunks split."""

from __future__ import annotations

import csv
import io

import pytest

from mercato.integration.exporter import RecordCounter

BODY = (
    b'a,"plain",1\r\n'
    b'b,"with ""quotes"", and a comma",2\r\n'
    b'c,"a line\r\nbreak inside, and ""\r\n"" more",3\r\n'
    b'd,"",4\r\n'
    b'e,"\r\n",5\r\n'
)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, len(BODY)])
def test_every_split_counts_each_record_once(size: int) -> None:
    counter = RecordCounter()
    total = sum(counter.count(BODY[i : i + size]) for i in range(0, len(BODY), size))
    assert total == len(list(csv.reader(io.StringIO(BODY.decode(), newline="")))) == 5
    assert not counter.inside
