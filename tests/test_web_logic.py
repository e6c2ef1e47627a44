"""The demo page's pure logic under node's test runner (web/tests/), and the contract between
the page and the worker on why a call ended."""

from __future__ import annotations

import re
import shutil
import subprocess

from agent.ending import EndReason
from tests.support import ROOT

WEB = ROOT / "web"


def test_page_logic_under_node() -> None:
    node = shutil.which("node")
    assert node is not None, "node is not installed (scripts/bootstrap installs nodejs)"
    run = subprocess.run(
        [node, "--test", "tests/"], cwd=WEB, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^# pass [1-9]\d*$", run.stdout, re.M), run.stdout
    assert re.search(r"^# fail 0$", run.stdout, re.M), run.stdout


def test_page_has_words_for_every_end_reason_the_worker_records() -> None:
    source = (WEB / "src" / "agent_signals.js").read_text()
    table = re.search(r"END_REASON_MESSAGES = \{(.*?)\};", source, re.S)
    assert table is not None
    reasons = set(re.findall(r"^\s*(\w+):", table.group(1), re.M))
    assert reasons == {reason.value for reason in EndReason}
