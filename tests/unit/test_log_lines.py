"""Every line a node writes on stderr is JSON, tracebacks included: what a background task, a callback of
the event loop, a thread or a finaliser lets through, a warning, an exception nobody caught in the main thread.
Run in a subprocess, as a node runs, with the logging set up as ``tds serve`` sets it up. And a logger made once
(at import) follows every configuration after it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import asyncio, gc, threading, warnings
    from connector.logging import configure, handle_loop_exceptions
    from connector.services.process_shell import log_failure

    configure("info")

    class Finalised:
        def __del__(self):
            raise ValueError("raised in a finaliser")

    async def fail(what):
        raise RuntimeError(what)

    async def main():
        handle_loop_exceptions()
        loop = asyncio.get_running_loop()
        watched = loop.create_task(fail("a watched background task failed"))
        watched.add_done_callback(log_failure)
        forgotten = loop.create_task(fail("a forgotten background task failed"))
        loop.call_soon(lambda: 1 / 0)
        await asyncio.wait([watched, forgotten])  # both ended (their exceptions not retrieved)
        del watched, forgotten
        gc.collect()
        worker = threading.Thread(target=lambda: [][1], name="worker")
        worker.start()
        worker.join()
        warnings.warn("a library warns", UserWarning)
        Finalised()
        gc.collect()

    asyncio.run(main())
    raise LookupError("not caught in the main thread")
''')


def test_what_background_tasks_threads_and_the_main_thread_let_through_is_logged_as_json_lines() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines and done.stdout == ""
    logged = []
    for line in lines:
        try:
            logged.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a line on stderr is not JSON: {line!r}\n{done.stderr}") from None
    events = {entry["event"].splitlines()[0]: entry for entry in logged}
    expected = {
        "background task failed": "RuntimeError: a watched background task failed",
        "Task exception was never retrieved": "RuntimeError: a forgotten background task failed",
        "thread failed": "IndexError: list index out of range",
        "exception ignored": "ValueError: raised in a finaliser",
        "uncaught exception": "LookupError: not caught in the main thread",
    }
    for event, error in expected.items():
        assert event in events, done.stderr
        assert events[event]["error"] == error and events[event]["level"] == "error"
        assert "Traceback (most recent call last)" in events[event]["exception"]  # in the line, as one field
    callback = [e for e in logged if e["event"].startswith("Exception in callback")]
    assert callback and callback[0]["error"].startswith("ZeroDivisionError")
    warned = [e for e in logged if "a library warns" in e["event"]]
    assert warned and warned[0]["level"] == "warning" and warned[0]["logger"] == "py.warnings"


def test_a_logger_made_before_logging_is_configured_again_follows_the_new_level(capsys) -> None:
    from connector.logging import configure, get_logger

    log = get_logger(component="test")
    configure("warning")
    log.info("not written at warning")
    configure("info")
    log.info("written at info", field="value")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["event"], line["component"], line["field"]) for line in lines] == [
        ("written at info", "test", "value")]


def test_a_logger_already_used_writes_through_processors_changed_in_place() -> None:
    from structlog.testing import capture_logs

    from connector.logging import get_logger

    log = get_logger(component="test")
    log.debug("before")
    with capture_logs() as captured:
        log.info("captured")
    assert [(e["event"], e["component"]) for e in captured] == [("captured", "test")]
