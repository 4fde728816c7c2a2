"""Log lines leave the event loop: what the writer thread writes, and when."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.telemetry import calls, logs

LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>\S+) (?P<message>.*)")


class Pipe(io.StringIO):
    """A stream that records each write, and can be made to block."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()  # a write has started (and waits while not open)

    def write(self, text: str) -> int:
        self.entered.set()
        self.open.wait(10)
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    stream = Pipe()
    logs.configure("info", stream=stream)
    yield stream
    stream.open.set()
    logs.stop()
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("ims_gateway.access").setLevel(logging.NOTSET)


def lines(stream: Pipe) -> list[dict[str, str]]:
    found = []
    for line in stream.getvalue().splitlines():
        match = LINE.fullmatch(line)
        assert match, line
        found.append(match.groupdict())
    return found


def wait_for(stream: Pipe, count: int) -> list[dict[str, str]]:
    deadline = time.monotonic() + 5
    while len(lines(stream)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines(stream)


def test_access_lines_and_records_are_written_by_the_thread_in_one_format(pipe: Pipe) -> None:
    access = logs.AccessLog()
    access.write("127.0.0.1", "PATCH", "image_patch", 400, 0.000123, "req-1")
    logging.getLogger("ims_gateway.upstream").warning("upstream %s: %s", "timeout", "no answer")
    assert wait_for(pipe, 2) == [
        {"level": "INFO", "name": "ims_gateway.access", "message": "127.0.0.1 PATCH image_patch 400 0.000123 req-1"},
        {"level": "WARNING", "name": "ims_gateway.upstream", "message": "upstream timeout: no answer"},
    ]


def test_the_time_prefix_is_what_logging_formats() -> None:
    writer = logs.Writer(io.StringIO())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    for at in (record.created, 1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0005, 1_700_000_001.5):
        record.created, record.msecs = at, int((at - int(at)) * 1000) + 0.0  # as LogRecord does
        assert writer._line(at, "INFO", "x", "m") == logging.Formatter(logs.FORMAT).format(record) + "\n"


def test_a_batch_is_one_write(pipe: Pipe) -> None:
    pipe.open.clear()  # the thread blocks in its first write...
    access = logs.AccessLog()
    access.write("a", "GET", "images", 200, 0.0, "first")
    assert pipe.entered.wait(5)
    for n in range(50):  # ...while the loop hands over 50 more lines without waiting
        access.write("a", "GET", "images", 200, 0.0, f"req-{n}")
    pipe.open.set()
    assert len(wait_for(pipe, 51)) == 51
    assert len(pipe.writes) == 2


def test_past_the_bound_lines_are_dropped_and_counted(pipe: Pipe) -> None:
    writer = logs._Installed.writer
    assert writer is not None
    pipe.open.clear()
    access = logs.AccessLog()
    access.write("a", "GET", "images", 200, 0.0, "stuck")
    assert pipe.entered.wait(5)
    writer.max_pending = 10
    for n in range(25):
        access.write("a", "GET", "images", 200, 0.0, f"req-{n}")
    pipe.open.set()
    found = wait_for(pipe, 12)
    assert [line["message"].rsplit(" ", 1)[1] for line in found[1:11]] == [f"req-{n}" for n in range(10)]
    assert found[11] == {
        "level": "WARNING",
        "name": "ims_gateway.logs",
        "message": "dropped 15 log lines: the log output did not keep up",
    }


def test_stop_writes_what_is_queued(pipe: Pipe) -> None:
    for n in range(5):
        logs.AccessLog().write("a", "GET", "images", 200, 0.0, f"req-{n}")
    logs.stop()
    assert len(lines(pipe)) == 5
    logging.getLogger("ims_gateway").warning("after")  # logged on the calling thread from now on
    assert lines(pipe)[-1]["message"] == "after"


def test_a_line_that_cannot_be_rendered_does_not_stop_the_others(pipe: Pipe) -> None:
    def broken(args: tuple[Any, ...]) -> str:
        raise KeyError(args[0])

    logs.OffLoop("ims_gateway.test").info(broken, "x")
    logs.AccessLog().write("a", "GET", "images", 200, 0.0, "after")
    found = wait_for(pipe, 2)
    assert found[0] == {"level": "ERROR", "name": "ims_gateway.logs", "message": "cannot format a log line: KeyError: 'x'"}
    assert found[1]["message"].endswith(" after")


def test_a_logger_level_still_decides(pipe: Pipe) -> None:
    logs.configure("info", access_log=False, stream=pipe)
    logs.AccessLog().write("a", "GET", "images", 200, 0.0, "hidden")
    logging.getLogger("ims_gateway").info("shown")
    assert [line["message"] for line in wait_for(pipe, 1)] == ["shown"]


def test_without_a_writer_lines_go_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    logs.AccessLog().write("a", "GET", "images", 200, 0.5, "req-9")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("ims_gateway.access", "a GET images 200 0.500000 req-9")]


texts = st.none() | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(
        st.text(max_size=6), texts, st.text(max_size=8), texts, texts,
        st.sampled_from(["v2.0", "v2.1", "unsupported"]), st.sampled_from(["enforce", "observe"]),
        st.sampled_from(["rewritten", "rejected"]), st.none() | st.sampled_from(["forbidden_attribute"]),
        st.none() | st.integers(100, 599),
        st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.sampled_from(["name", "custom"])), max_size=3).map(tuple),
        st.none() | st.sampled_from(["resigned"]), st.none() | st.text(max_size=6),
    ),
    st.floats(0, 4e9),
    st.text(max_size=20),
)
def test_the_call_line_is_the_call_record_as_compact_json(fields: tuple[Any, ...], at: float, request_id: str) -> None:
    facts = calls.CallFacts(*fields)
    expected = json.dumps(facts.deprecated_call(at, request_id).log_record(), separators=(",", ":"))
    assert calls._log_line((at, request_id, facts)) == expected
