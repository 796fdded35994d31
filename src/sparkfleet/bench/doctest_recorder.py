"""Child side of ``sparkfleet compat``: run one pyspark module as ``python -m`` would, recording doctests.

Usage: ``python -m sparkfleet.bench.doctest_recorder <module> <results.jsonl>``.

The module's own ``_test()`` runs unchanged (its globals, deleted docstrings, option flags, the
``os.chdir`` and the ``sys.exit``); only ``doctest.DocTestRunner`` is swapped for one that also
writes every example's outcome as a JSON line, flushed at once, so a run killed by a timeout
still says which examples finished and which one it was stuck in.
"""

from __future__ import annotations

import doctest
import json
import runpy
import sys
import traceback
from typing import IO, Any

_DETAIL_CHARS = 4000


def _clip(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "\n[...]"


class RecordingRunner(doctest.DocTestRunner):
    """A DocTestRunner that writes ``trying`` and then ``passed``/``failed``/``error`` per example."""

    sink: IO[str] | None = None

    def __init__(self, checker: Any = None, verbose: bool | None = None, optionflags: int = 0) -> None:
        # Only reporting is affected: with this flag doctest stops *reporting* later failures of a
        # test (it still counts them), and unreported examples could not be compared.
        super().__init__(checker, verbose=False, optionflags=optionflags & ~doctest.REPORT_ONLY_FIRST_FAILURE)

    def _record(self, test: doctest.DocTest, example: doctest.Example, outcome: str, detail: str = "") -> None:
        if self.sink is None:
            return
        record = {
            "event": outcome,
            "test": test.name,
            "line": example.lineno,
            "file_line": (test.lineno or 0) + example.lineno + 1,
            "file": test.filename,
            "source": example.source,
        }
        if detail:
            record["detail"] = _clip(detail)
        self.sink.write(json.dumps(record) + "\n")
        self.sink.flush()

    def report_start(self, out, test, example):  # type: ignore[no-untyped-def]
        self._record(test, example, "trying")
        super().report_start(out, test, example)

    def report_success(self, out, test, example, got):  # type: ignore[no-untyped-def]
        self._record(test, example, "passed")
        super().report_success(out, test, example, got)

    def report_failure(self, out, test, example, got):  # type: ignore[no-untyped-def]
        self._record(test, example, "failed", f"Expected:\n{example.want}Got:\n{got}")
        super().report_failure(out, test, example, got)

    def report_unexpected_exception(self, out, test, example, exc_info):  # type: ignore[no-untyped-def]
        lines = traceback.format_exception_only(exc_info[0], exc_info[1])
        self._record(test, example, "error", "".join(lines))
        super().report_unexpected_exception(out, test, example, exc_info)

    def summarize(self, verbose=None):  # type: ignore[no-untyped-def]
        result = super().summarize(verbose)
        if self.sink is not None:
            self.sink.write(json.dumps({"event": "summary", "failed": result.failed, "attempted": result.attempted}) + "\n")
            self.sink.flush()
        return result


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -m sparkfleet.bench.doctest_recorder <module> <results.jsonl>")
    module, results = argv
    sink = open(results, "a", encoding="utf-8", buffering=1)  # closed when the process ends
    RecordingRunner.sink = sink
    doctest.DocTestRunner = RecordingRunner  # type: ignore[misc]  # testmod looks the name up per call
    sink.write(json.dumps({"event": "start", "module": module}) + "\n")
    sink.flush()
    sys.argv = [module]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
