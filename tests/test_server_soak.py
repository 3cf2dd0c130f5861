"""The local hub under concurrent load through the stock client, SIGKILLed mid-load and restarted.

The driver is bench/soak.py (run it longer for the figures in bench/README.md); here it runs bounded.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

# Errors a client may meet while the server is down (killed, restarting); anything else is a bug.
# (huggingface_hub wraps a failed LFS upload in a RuntimeError.)
_OUTAGE_ERRORS = (
    "ConnectError",
    "ReadError",
    "RemoteProtocolError",
    "WriteError",
    "ConnectionResetError",
    "ConnectTimeout",
    "ReadTimeout",
    "RuntimeError",
    "client session closed by another thread (huggingface_hub)",
)


def _soak_module():
    path = Path(__file__).resolve().parent.parent / "bench" / "soak.py"
    spec = importlib.util.spec_from_file_location("hubckpt_bench_soak", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_soak_with_kill_and_restart_loses_nothing(tmp_path):
    # 10 s: ~6000 requests and ~200 refused stale commits on an idle 2-core machine, far above the bounds below.
    report = _soak_module().run_soak(
        duration=10, clients=6, kill_at=0.4, max_ops=2000, root=tmp_path, full_downloads=30
    )
    summary = {
        k: report[k]
        for k in (
            "commits_lost",
            "stale_commits_accepted",
            "objects_not_matching_sha256",
            "private_data_read_by_wrong_token",
            "private_reads_by_owner_failed",
        )
    }
    assert summary == dict.fromkeys(summary, 0), (summary, report["audit_examples"])
    assert report["requests_served"] > 300 and report["clients_finished"] == 6
    # The load was real: commits raced on one branch (some refused 412), every kind of operation ran.
    assert report["stale_parent_refused_412"] > 0
    assert set(report["operations"]) == {"cas", "branch", "lfs", "range", "read", "private"}
    assert report["full_downloads_checked"] > 0
    # Errors only while the server was down, and only of the kinds a dead server causes.
    assert report["errors_outside_outage"] == 0, report["error_examples"]
    unexpected = {k: v for k, v in report["errors_by_kind"].items() if not k.endswith(_OUTAGE_ERRORS)}
    assert unexpected == {}, report["error_examples"]
    assert 500 not in report["responses_by_status"] and "500" not in report["responses_by_status"]
    server = report["server_after_restart"]
    # Bounded: threads go back down once clients leave, and memory does not grow with requests.
    assert server["threads_idle"] <= server["threads_end_of_load"] and server["threads_idle"] <= 60, server
    assert server["rss_mib_end_of_load"] - server["rss_mib_under_load_mark"] < 64, server
