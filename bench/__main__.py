"""``python -m bench [--smoke] [--seconds S] [--out DIR]``: the end-to-end benchmark and its report.

Runs :func:`bench.e2e.run` (every service as its own OS process on loopback, each figure beside a
baseline), prints the Markdown report and writes ``<out>/latest.md`` and ``<out>/latest.json``
(default ``bench/reports/``, gitignored). ``--smoke`` runs a few seconds at tiny rates (the test
suite's check that the benchmark works, not a measurement). Exit code 0 when the run completed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench import e2e, report


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the benchmark, print and write the report; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m bench", description="ledgerflow end-to-end benchmark")
    parser.add_argument("--smoke", action="store_true", help="a few seconds at tiny rates (tests)")
    parser.add_argument("--seconds", type=float, help="seconds of load per run (default 10; smoke 1.5)")
    parser.add_argument("--concurrency", type=int, help="closed-loop senders at saturation (default 32)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "reports", help="report directory"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (service logs)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    opts = e2e.Options.smoke_options() if args.smoke else e2e.Options()
    if args.seconds:
        opts.seconds = args.seconds
    opts.keep = args.keep
    if args.concurrency:
        opts.concurrency = args.concurrency

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    data = asyncio.run(e2e.run(opts, log))
    md, js = report.write(data, args.out)
    print(md.read_text(encoding="utf-8"))
    log(f"report written to {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
