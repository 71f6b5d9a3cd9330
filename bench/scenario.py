"""`python -m bench.scenario`: `exchange run crash` with a growing population of accounts.

For each N it runs the real command line in a child process (`exchange run
crash --accounts N`, journal included) and reports the wall time, the events
and events per second from the run's own summary, and the child's peak
resident memory, with the 1-minute load average before and after each size
(the machine may be shared). `--json` prints one JSON object; `--markdown` a
table for bench/README.md; the default is a plain table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(accounts: int, scenario: str, until: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cmd = [sys.executable, "-m", "exchange", "run", scenario, "--accounts", str(accounts), "--quiet",
               "--report-dir", str(out), "--summary-json", str(out / "summary.json")]
        if until:
            cmd += ["--until", until]
        # a fresh process per size, so that its peak RSS is its own (ru_maxrss of a waited child)
        code = (
            "import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL);"
            "print(json.dumps({'rc': r.returncode, 'rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
        )
        load_before = round(os.getloadavg()[0], 2)
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
        child = json.loads(res.stdout.strip().splitlines()[-1])
        if child["rc"] != 0:
            raise SystemExit(f"exchange run failed for {accounts} accounts (exit {child['rc']})")
        summary = json.loads((out / "summary.json").read_text())
        journal = sum(f.stat().st_size for f in out.glob("*.jsonl"))
    return {
        "accounts": accounts, "wall_seconds": round(wall, 2), "events": summary["events"],
        "events_per_sec": round(summary["events"] / summary["wall_seconds"]), "run_seconds": summary["wall_seconds"],
        "liquidations": summary["liquidations_full"] + summary["liquidations_partial"],
        "adl_events": summary["adl_events"], "peak_rss_mib": round(child["rss_kib"] / 1024, 1),
        "journal_mib": round(journal / 2**20, 1), "conserved": summary.get("conserved"),
        "load_avg": [load_before, round(os.getloadavg()[0], 2)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scenario", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="account counts, comma-separated")
    ap.add_argument("--scenario", default="crash")
    ap.add_argument("--until", help="cut the run (e.g. 10m) to keep big sizes short")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args(argv)
    rows = [run_one(int(n), args.scenario, args.until) for n in args.sizes.split(",")]
    info = {"scenario": args.scenario, "until": args.until, "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "rows": rows}
    if args.json:
        print(json.dumps(info))
        return 0
    if args.markdown:
        print("| accounts | wall time | events | events/s | liquidations | ADL events | peak RSS | journal "
              "| load (before → after) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['accounts']:,} | {r['wall_seconds']:,} s | {r['events']:,} | {r['events_per_sec']:,} | "
                  f"{r['liquidations']:,} | {r['adl_events']:,} | {r['peak_rss_mib']:,} MiB | "
                  f"{r['journal_mib']:,} MiB | {r['load_avg'][0]} → {r['load_avg'][1]} |")
        return 0
    print(f"exchange run {args.scenario}{' --until ' + args.until if args.until else ''}  (Python {info['python']})")
    print(f"{'accounts':>9} {'wall s':>8} {'events':>10} {'events/s':>9} {'liq.':>6} {'ADL':>6} {'peak MiB':>9} "
          f"{'journal MiB':>11}")
    for r in rows:
        print(f"{r['accounts']:>9} {r['wall_seconds']:>8} {r['events']:>10} {r['events_per_sec']:>9} "
              f"{r['liquidations']:>6} {r['adl_events']:>6} {r['peak_rss_mib']:>9} {r['journal_mib']:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
