"""Summarise a py-spy profile of the matching benchmark: where the replay's time goes, by function.

    py-spy record -r 1000 -f raw -o spy.txt -- python3 -m bench.matching --ops 300000
    python3 -m bench.spy_summary spy.txt [--under replay_full] [--top 25]

Only samples inside `--under` (default replay_full: the full engine's timed
loop) count. "self" is time in the function's own bytecode, including the C
calls it makes directly (building a msgspec Struct, a dict lookup), which
py-spy does not show as frames; "incl." adds everything it calls.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter


def summarise(path: str, under: str) -> tuple[int, Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            # A frame reads "function (file:line)"; keep "function (file)".
            frames = [fr.rsplit(":", 1)[0] + ")" if ":" in fr else fr for fr in stack.split(";")]
            names = [fr.split(" (")[0] for fr in frames]
            if under not in names:
                continue
            frames = frames[names.index(under):]
            n = int(count)
            total += n
            own[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
    return total, own, inclusive


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.spy_summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", help="py-spy record -f raw output")
    ap.add_argument("--under", default="replay_full", help="count only samples inside this function")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    total, own, inclusive = summarise(args.raw, args.under)
    if not total:
        print(f"no samples under {args.under}", file=sys.stderr)
        return 1
    print(f"{total} samples under {args.under}\n")
    print(f"{'self':>6} {'incl.':>6}  function")
    for frame, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}% {100 * inclusive[frame] / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
