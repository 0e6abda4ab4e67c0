"""The shared logging set-up: a command run in-process while stderr/stdout are replaced (pytest's capture, a
notebook's redirect) must not leave the root logger writing to a stream that is closed afterwards."""

import io
import logging
import sys

import pytest

from etchat.cli import setup_logging


@pytest.fixture
def root_logger_restored():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("name", ["stderr", "stdout"])
def test_a_forced_set_up_follows_the_stream_that_is_current_when_a_record_is_written(
    monkeypatch, root_logger_restored, name
):
    replaced = io.StringIO()
    monkeypatch.setattr(sys, name, replaced)
    setup_logging(force=True, fmt="%(message)s", stream=sys.stdout if name == "stdout" else None)
    logging.getLogger("etchat.test").info("while replaced")
    assert replaced.getvalue() == "while replaced\n"
    replaced.close()  # the capture ends, as pytest's does at the end of a test

    later, errors = io.StringIO(), io.StringIO()  # logging reports its own failures on sys.stderr
    monkeypatch.setattr(sys, "stderr", errors)
    monkeypatch.setattr(sys, name, later)
    monkeypatch.setattr(logging, "raiseExceptions", True)
    logging.getLogger("etchat.test").info("after the capture")

    assert "after the capture" in later.getvalue()
    assert "Logging error" not in errors.getvalue() + later.getvalue()


def test_a_stream_that_is_not_stdout_or_stderr_is_kept(root_logger_restored):
    stream = io.StringIO()
    setup_logging(force=True, fmt="%(levelname)s %(message)s", stream=stream, level=logging.WARNING)
    logging.getLogger("etchat.test").info("hidden")
    logging.getLogger("etchat.test").warning("shown")
    assert stream.getvalue() == "WARNING shown\n"
