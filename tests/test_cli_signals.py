"""SIGINT and SIGTERM stop `exchange run --realtime` and a paced `exchange replay` cleanly, in subprocesses.

A live run (`--realtime --speed 1`) spends nearly all its time waiting for the wall clock; a signal must
end that wait at once: intake stops, what was applied is flushed, the journal gets its end line, the
process exits with the documented status (130 after SIGINT, 143 after SIGTERM) within a few seconds,
and `exchange replay` finds the journal identical up to where the run stopped. The same for a replay
that republishes at a chosen speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.test_cli_run import EXCHANGE, exchange

SIGNALS = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


def start(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MPLBACKEND", None)
    return subprocess.Popen([*EXCHANGE, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_line(stream, needle: str, timeout: float) -> list[str]:
    """Read `stream` (a pipe) until a line containing `needle`; the lines read. Fails after `timeout` s."""
    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in stream:
            lines.append(line)
            if needle in line:
                found.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert found.wait(timeout), f"no {needle!r} within {timeout} s: {lines}"
    return lines


def stop_with(proc: subprocess.Popen, sig: int, timeout: float = 20) -> tuple[str, str, float]:
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running {timeout} s after {signal.Signals(sig).name}")
    return out, err, time.monotonic() - t0


def last_line(path: Path) -> dict:
    return json.loads(path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1])


@pytest.mark.parametrize(("sig", "status"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_a_live_run_stops_cleanly_on_a_signal(tmp_path, sig, status):
    journal = tmp_path / "live.jsonl"
    proc = start("run", "calm", "--realtime", "--speed", "1", "--journal", str(journal),
                 "--report-dir", str(tmp_path / "out"), cwd=tmp_path)
    try:
        early = wait_for_line(proc.stderr, "virtual", timeout=60)  # the first progress line: it is running
        time.sleep(1.5)  # a second or so of the live run
        out, err, took = stop_with(proc, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(early) + err
    assert proc.returncode == status, err
    assert took < 15, took
    assert f"stopped early by {signal.Signals(sig).name}" in err
    assert "Traceback" not in err
    assert "events" in out  # the summary of the run so far
    end = last_line(journal)
    assert "end" in end and end["end"]["commands"] > 0  # closed properly, not cut short
    rep = exchange("replay", str(journal), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "replay identical" in rep.stdout and "cut short" not in rep.stdout
    assert f"{end['end']['commands']} commands" in rep.stdout


@pytest.fixture(scope="module")
def calm_journal(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("calm")
    proc = exchange("run", "calm", "--until", "1m", "--quiet", "--report-dir", str(d), cwd=d)
    assert proc.returncode == 0, proc.stderr
    return d / "calm.jsonl"


@pytest.mark.parametrize(("sig", "status"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_a_paced_replay_stops_cleanly_on_a_signal(tmp_path, calm_journal, sig, status):
    """Republishing a minute of run at its own pace (to a journal here, as to MQTT): a signal stops intake,
    the replay so far is checked, the republished journal is closed properly and replays identical."""
    again = tmp_path / "again.jsonl"
    proc = start("replay", str(calm_journal), "--speed", "1", "--journal", str(again), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not again.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert again.exists()
        time.sleep(1.5)
        out, err, took = stop_with(proc, sig)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    assert took < 10, took
    assert f"stopped early by {signal.Signals(sig).name}" in out and "identical so far" in out
    assert "Traceback" not in err
    end = last_line(again)
    assert "end" in end and 0 < end["end"]["commands"] < sum(1 for _ in calm_journal.open()) - 2
    rep = exchange("replay", str(again), cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "replay identical" in rep.stdout and "cut short" not in rep.stdout
