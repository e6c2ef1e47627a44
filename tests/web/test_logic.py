"""The demo page's pure logic under node's test runner (web/tests/), and the contract between
the page and the worker on why a call ended."""

from __future__ import annotations

import json
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


# Values at the edges of the form's rules: the page must find what the server finds.
FORM_CASES: list[tuple[str, object]] = [
    ("name", "Al"), ("name", " A "), ("name", "A" * 100), ("name", "A" * 101),
    ("name", "Ann\u2028Lee"), ("name", "Ann\x1fLee"), ("name", "\x1c Ann \x1c"),
    ("name", "\ufeffAl"), ("name", "Ann\tLee"), ("name", ""), ("name", None), ("name", 42),
    ("name", "😀😀"), ("name", "Zéphyrine Quaglia-Brun"),
    ("email", "a@a.fr"), ("email", "a@b.c"), ("email", "x@-a.com"), ("email", "x..y@ab.com"),
    ("email", "é@agence.fr"), ("email", "contact@exämple.fr"), ("email", "a@1.2.3.4"),
    ("email", "a" * 65 + "@agence.fr"), ("email", "a @b.com"), ("email", "a@b.com."),
    ("email", "a@b@agence.fr"), ("email", "first.last+tag@sub.agence-exemple.co.uk"),
    ("email", "a@xn--exmple-cua.fr"), ("email", "x@" + "a" * 64 + ".fr"), ("email", "@agence.fr"),
    ("phone", "+33 6 12 34 56 78"), ("phone", "12345"), ("phone", "123456"),
    ("phone", "+1 (555) 010-9999"), ("phone", "06.12.34.56.78"), ("phone", "phone 06 12 34"),
    ("phone", "１２３４５６７"), ("phone", "+" + "1" * 16), ("phone", ""), ("phone", "  "),
    ("phone", "++33612345678"), ("phone", "1" * 15 + " " * 20),
    ("company", ""), ("company", "X"), ("company", "C" * 121), ("company", "Agence\nDupont"),
    ("message", "a\r\nb"), ("message", "\t"), ("message", "a\tb\n\nc"), ("message", "😀" * 2000),
    ("message", "😀" * 2001), ("message", "a\x00b"), ("message", "\r\n x \r\n"),
    ("language", "fr"), ("language", "FR"), ("language", " en "), ("language", "de"),
    ("language", ""), ("language", None), ("language", 1),
]  # fmt: skip


def test_page_checks_the_form_as_the_server_does() -> None:
    """web/src/request_form.js against sales/form.py, case by case, with the shipped rules
    (the bounds the page config hands the page: web/routes.py)."""
    from sales.form import FieldProblem, check_field
    from sales.policy import load_request_rules
    from web.routes import request_form_config

    rules = load_request_rules()
    config = request_form_config(rules, 365)
    script = (
        "import { checkField } from './src/request_form.js';"
        "const { cases, rules } = JSON.parse(require_stdin());"
        "console.log(JSON.stringify(cases.map(([n, v]) => checkField(n, v, rules))));"
    ).replace(
        "require_stdin()", "(await new Response(process.stdin).text())"
    )  # the page's module, fed the cases on stdin
    node = shutil.which("node")
    assert node is not None
    run = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=WEB,
        input=json.dumps({"cases": FORM_CASES, "rules": config}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    page = json.loads(run.stdout)
    for (name, value), seen in zip(FORM_CASES, page, strict=True):
        try:
            expected: dict[str, object] = {"value": check_field(name, value, rules), "key": None}
        except FieldProblem as exc:
            expected = {"value": None, "key": exc.problem.key}
        problem = seen["problem"]
        found = {"value": seen["value"], "key": problem and problem["key"]}
        assert found == expected, (name, value)
