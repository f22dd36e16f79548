"""Gateway latency benchmark: what ``pairshift api``'s OpenAI-wire gateway adds over a direct SDK call to the
same sim server, plain and streaming. Writes ``bench/results/gateway.md``. Target: <= 2 ms added at p50.

Run: ``.venv/bin/python bench/gateway_bench.py`` (about a minute). Three processes on 127.0.0.1: the sim
server (``pairshift sim serve``, no added latency), ``pairshift api`` (its own SQLite registry, a
``prompt: external`` deployment on the sim's ``gpt-4o-2024-08-06`` at a 20% canary on
``claude-sonnet-4-20250514``, a token with scope ``complete``; observations are written as in production),
and this client: the official ``openai`` SDK, one request at a time, alternating a direct call to the sim and
the same call through the gateway so drift hits both alike. Each request is timed from the call to the last
byte (streaming: the stream consumed; time to first chunk reported too) with ``perf_counter``; after a
warm-up, ``N`` pairs per mode. "Added" is gateway minus direct at the same percentile.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N, WARMUP = 600, 100
# `pairshift api ARGS` as a script cProfile can run (``python -m cProfile -o OUT SCRIPT ARGS``).
_PROFILED = "import sys\nfrom pairshift.cli import run\nsys.argv[0] = 'pairshift'\nrun()\n"
MODEL = "gpt-4o-2024-08-06"
MESSAGES = [{"role": "user", "content": "Tier: gold\nTicket: I was charged twice, refund please"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)  # a server starting in another process: nothing to await
    raise RuntimeError(f"{url} did not answer in {timeout_s}s")


def _setup(home: Path, sim_url: str) -> str:
    """Apply the example plus the gateway deployment into ``home``'s registry; returns a token."""
    import shutil

    import yaml

    from pairshift.apply import apply_path
    from pairshift.registry.models import Deployment
    from pairshift.registry.store import open_registry
    from pairshift.tokens import create_token

    cfg_dir = home / "config"
    shutil.copytree(REPO / "examples", cfg_dir, ignore=shutil.ignore_patterns("*.py"))
    cfg = yaml.safe_load((cfg_dir / "pairshift.yaml").read_text())
    cfg["models"] += [
        {"id": MODEL, "provider": "openai", "base_url": f"{sim_url}/v1", "max_attempts": 1},
        {"id": "claude-sonnet-4-20250514", "provider": "anthropic", "base_url": sim_url, "max_attempts": 1},
    ]
    cfg["deployments"].append({"name": "chat-app", "prompt": "external", "model": MODEL})
    (cfg_dir / "pairshift.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    registry = open_registry(f"sqlite:///{home / 'registry.db'}")
    apply_path(registry, cfg_dir, by="bench")
    with registry.session() as s:
        dep = s.get(Deployment, "chat-app")
        dep.candidate_prompt, dep.candidate_model = "external", "claude-sonnet-4-20250514"
        dep.canary_percent, dep.migration = 20.0, "migration-chat-app"
        s.add(dep)
        return create_token(s, "bench", "complete", by="bench").token


def _cpu_ms(pid: int) -> float | None:
    """CPU time (user + system, every thread) the process ``pid`` used so far, in ms; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _one(client, model: str, stream: bool, user: str) -> tuple[float, float]:
    """(total ms, first-chunk ms) of one request."""
    started = time.perf_counter()
    if not stream:
        client.chat.completions.create(model=model, messages=MESSAGES, user=user)
        total = (time.perf_counter() - started) * 1000
        return total, total
    first = None
    for _chunk in client.chat.completions.create(
        model=model, messages=MESSAGES, user=user, stream=True, stream_options={"include_usage": True}
    ):
        if first is None:
            first = (time.perf_counter() - started) * 1000
    return (time.perf_counter() - started) * 1000, first or 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gateway.md")
    parser.add_argument("-n", type=int, default=N)
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="Run the API under cProfile (its event loop thread) and write the stats here; prints the top.",
    )
    parser.add_argument(
        "--modes",
        default="plain,streaming",
        help="plain, streaming or both (a profile of one mode: --modes streaming --profile FILE)",
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    if not modes or any(m not in ("plain", "streaming") for m in modes):
        parser.error("--modes: plain, streaming or plain,streaming")
    import openai

    with tempfile.TemporaryDirectory(prefix="pairshift-gateway-bench-") as tmp:
        home = Path(tmp)
        sim_port, api_port = _free_port(), _free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        exe = str(Path(sys.executable).parent / "pairshift")
        env = {
            **os.environ,
            "PAIRSHIFT_HOME": str(home),
            "PAIRSHIFT_DATABASE_URL": f"sqlite:///{home / 'registry.db'}",
        }
        sim = subprocess.Popen([exe, "sim", "serve", "--port", str(sim_port)], env=env)
        api = None
        try:
            _wait(f"{sim_url}/_admin/stats", sim)
            token = _setup(home, sim_url)
            argv = [exe, "api", "--port", str(api_port)]
            if args.profile:  # `pairshift api` under cProfile; SIGINT lets uvicorn stop and write the stats
                script = home / "profiled_api.py"
                script.write_text(_PROFILED)
                argv = [sys.executable, "-m", "cProfile", "-o", str(args.profile), str(script), *argv[1:]]
            api = subprocess.Popen(argv, env=env)
            _wait(f"http://127.0.0.1:{api_port}/healthz", api)
            direct = openai.OpenAI(base_url=f"{sim_url}/v1", api_key="sk-local", max_retries=0)
            gateway = openai.OpenAI(base_url=f"http://127.0.0.1:{api_port}/v1", api_key=token, max_retries=0)
            rows = []
            cpu: dict[bool, float] = {}  # the API process's CPU ms per gateway request, by mode
            for stream in [m == "streaming" for m in modes]:
                for i in range(WARMUP):
                    _one(direct, MODEL, stream, f"w{i}")
                    _one(gateway, "chat-app", stream, f"w{i}")
                d_total, g_total, d_first, g_first = [], [], [], []
                cpu_before = _cpu_ms(api.pid)
                for i in range(args.n):
                    user = f"user-{i}"
                    t, f = _one(direct, MODEL, stream, user)
                    d_total.append(t)
                    d_first.append(f)
                    t, f = _one(gateway, "chat-app", stream, user)
                    g_total.append(t)
                    g_first.append(f)
                cpu_after = _cpu_ms(api.pid)
                if cpu_before is not None and cpu_after is not None:
                    cpu[stream] = (cpu_after - cpu_before) / args.n
                rows.append(("streaming" if stream else "plain", d_total, g_total, d_first, g_first))
        finally:
            if api is not None and args.profile:
                api.send_signal(signal.SIGINT)
                api.wait(30)
            for proc in (api, sim):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
    if args.profile:
        import pstats

        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(35)
        return 0
    lines = [
        "# Gateway latency: pairshift api's OpenAI-wire gateway vs a direct SDK call to the same sim server",
        "",
        f"`.venv/bin/python bench/gateway_bench.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.n} request pairs per mode after {WARMUP} warm-up pairs, "
        "sequential, the openai SDK in both arms (module doc of bench/gateway_bench.py). "
        "Target: added p50 <= 2 ms.",
        "",
        "| mode | direct p50 ms | gateway p50 ms | added p50 ms "
        "| direct p99 ms | gateway p99 ms | added p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode, d, g, _df, _gf in rows:
        lines.append(
            f"| {mode} | {_pct(d, 0.5):.2f} | {_pct(g, 0.5):.2f} | {_pct(g, 0.5) - _pct(d, 0.5):.2f} | "
            f"{_pct(d, 0.99):.2f} | {_pct(g, 0.99):.2f} | {_pct(g, 0.99) - _pct(d, 0.99):.2f} |"
        )
    for _mode, d, g, df, gf in [r for r in rows if r[0] == "streaming"]:
        lines += [
            "",
            f"Streaming, time to the first chunk: direct p50 {_pct(df, 0.5):.2f} ms, "
            f"gateway p50 {_pct(gf, 0.5):.2f} ms "
            f"(added {_pct(gf, 0.5) - _pct(df, 0.5):.2f} ms); mean added over all requests "
            f"{statistics.fmean(g) - statistics.fmean(d):.2f} ms.",
        ]
    lines += [
        "",
        "CPU time of the `pairshift api` process per gateway request (all its threads, from /proc; steadier "
        "than latency on a shared machine): "
        + (
            ", ".join(f"{'streaming' if k else 'plain'} {v:.2f} ms" for k, v in cpu.items())
            if cpu
            else "not measured (no /proc)"
        )
        + ".",
        "",
        "What the gateway does per request: token lookup (cached 5 s), parse, resolve the unit, "
        "the provider call as JSON over one shared, pooled httpx client (pairshift/providers/direct.py; "
        "no SDK on the serving path), the answer in the client's wire, and one observation queued "
        "(written by the writer thread in batches). Profile: `--profile FILE` runs the API under cProfile.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
