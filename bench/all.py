"""Every benchmark in sequence, output into one file: ``python -m bench.all`` (``make bench``).

Each benchmark runs as ``python -m bench.<name>`` in a process of its own (one failing
does not stop the others), one after the other, never two at once. Its progress lines
(stderr) go to this terminal; its figures (stdout) go to the terminal and to ``--output``
as a Markdown section with the command and a fenced block, ready to paste into
BENCHMARKS.md. ``--quick`` is passed on (small counts: a check that everything runs;
do not quote those figures).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .common import REPO, machine

#: In the order they run (the longest-standing figures first).
BENCHMARKS = (
    "steps",
    "throughput",
    "long_turn",
    "capacity",
    "checkpoint_growth",
    "recovery",
    "http",
    "profile_steps",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench-results.md", help="file written (default bench-results.md)"
    )
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run these only")
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    args = parser.parse_args(argv)

    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    m = machine()
    failed = []
    with open(args.output, "w") as out:
        out.write(f"# Benchmark run {m['date']}\n\n")
        out.write(f"{m['cpus']} CPUs, {m['cpu']}, {m['memory']}, Python {m['python']}; load at the start {m['load']}")
        out.write(" (--quick: small counts, figures not to be quoted)\n" if args.quick else "\n")
        for name in names:
            command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
            shown = f"python -m bench.{name}{' --quick' if args.quick else ''}"
            print(f"== {shown}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            proc = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False)
            seconds = time.monotonic() - t0
            sys.stdout.write(proc.stdout)
            status = "" if proc.returncode == 0 else f", exit status {proc.returncode}"
            if proc.returncode:
                failed.append(name)
            out.write(f"\n## bench.{name} ({seconds:.0f} s{status})\n\n```\n$ {shown}\n{proc.stdout.rstrip()}\n```\n")
            out.flush()
    print(f"wrote {args.output}" + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
