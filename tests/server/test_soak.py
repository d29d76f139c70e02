"""A bounded soak on loopback (benchmarks/soak.py): 16 clients, every dialect, against the real daemon.
CI runs it for 10 seconds, the first 4 of them warm-up; docs/RELIABILITY.md has the 5-minute run and its
command."""

from __future__ import annotations

from pathlib import Path

from tests.benchmark_scripts import load_script
from tests.server.conftest import start_daemon, stop_daemon


def test_sixteen_clients_get_every_answer_and_memory_stays_flat(tmp_path: Path) -> None:
    soak = load_script("soak")
    daemon = start_daemon(tmp_path)
    try:
        report = soak.soak(daemon.url, daemon.process.pid, clients=16, duration_s=10, warmup_s=4, seed=1)
    finally:
        stop_daemon(daemon)
    assert report.failed == 0, report.failures
    assert report.sent == report.ok + report.queue_full_429
    assert report.ok >= 16 and len(report.by_kind) == len(soak.KINDS)
    assert report.rss_growth < 0.05, report.to_json()
