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

A change's effect on a machine other processes share: ``--against DIR`` runs a second gateway from another
source tree (a worktree of main) beside this one, each round calling direct, then both gateways (in turns
first), so both see the same load; it prints both and writes nothing. ``--profile FILE``: cProfile of the
API's event loop over the measured requests alone.
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
# `pairshift api ARGS` under cProfile, profiling only between SIGUSR1 (sent after the warm-up) and SIGUSR2
# (the stats written to OUT): the start-up's imports and the warm-up stay out of the profile. uvicorn runs
# its event loop in the main thread, where Python runs signal handlers, so that thread is the one profiled.
_PROFILED = """import cProfile, os, signal, sys
from pairshift.cli import run
profile, out = cProfile.Profile(), sys.argv.pop(1)
def _stop(*_):
    profile.disable()
    profile.dump_stats(out + '.part')
    os.replace(out + '.part', out)
signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
signal.signal(signal.SIGUSR2, _stop)
sys.argv[0] = 'pairshift'
run()
"""
_SUFFIX = {"gateway": "", "against": " (--against)"}
MODEL = "gpt-4o-2024-08-06"
MESSAGES = [{"role": "user", "content": "Tier: gold\nTicket: I was charged twice, refund please"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
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


def _await_file(path: Path, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or path.stat().st_size == 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path}: the profiled API wrote no stats")
        time.sleep(0.1)  # another process writing: nothing to await


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
        help="Run the API under cProfile (its event loop thread, the measured requests only: not the "
        "start-up or the warm-up) and write the stats here; prints the top.",
    )
    parser.add_argument(
        "--modes",
        default="plain,streaming",
        help="plain, streaming or both (a profile of one mode: --modes streaming --profile FILE)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="A/B: a second `pairshift api` run from this source tree (e.g. a worktree of main), on its own "
        "registry copy; each round is direct, this tree's gateway, that one's, so both see the same load. "
        "Prints both; writes nothing.",
    )
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    if not modes or any(m not in ("plain", "streaming") for m in modes):
        parser.error("--modes: plain, streaming or plain,streaming")
    if args.against is not None and not (args.against / "pairshift" / "__init__.py").is_file():
        parser.error(f"--against {args.against}: not a pairshift source tree")
    import openai

    with tempfile.TemporaryDirectory(prefix="pairshift-gateway-bench-") as tmp:
        home = Path(tmp)
        sim_port, api_port, other_port = _free_port(), _free_port(), _free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        exe = str(Path(sys.executable).parent / "pairshift")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "PAIRSHIFT_HOME": str(home),
            "PAIRSHIFT_DATABASE_URL": f"sqlite:///{home / 'registry.db'}",
        }
        sim = subprocess.Popen([exe, "sim", "serve", "--port", str(sim_port)], env=env)
        api = other = None
        try:
            _wait(f"{sim_url}/_admin/stats", sim)
            token = _setup(home, sim_url)
            argv = [exe, "api", "--port", str(api_port)]
            if args.profile:  # `pairshift api` under cProfile, enabled after the warm-up (SIGUSR1)
                script = home / "profiled_api.py"
                script.write_text(_PROFILED)
                argv = [sys.executable, str(script), str(args.profile.resolve()), *argv[1:]]
            api = subprocess.Popen(argv, env=env)
            gateways = {"gateway": (api, api_port)}
            tokens = {"gateway": token}
            if args.against is not None:  # its own registry, set up by its own code (its own migrations)
                (home / "other").mkdir()
                other_env = {
                    **env,
                    "PYTHONPATH": str(args.against.resolve()),
                    "PAIRSHIFT_HOME": str(home / "other"),
                    "PAIRSHIFT_DATABASE_URL": f"sqlite:///{home / 'other' / 'registry.db'}",
                }
                setup = (
                    "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                    "from gateway_bench import _setup; sys.path.insert(0, sys.argv[2]); "
                    "print(_setup(Path(sys.argv[3]), sys.argv[4]))"
                )
                tokens["against"] = subprocess.run(
                    [sys.executable, "-c", setup, str(REPO / "bench"), str(args.against.resolve())]
                    + [str(home / "other"), sim_url],
                    env=other_env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()[-1]
                other = subprocess.Popen([exe, "api", "--port", str(other_port)], env=other_env)
                gateways["against"] = (other, other_port)
            for proc, port in gateways.values():
                _wait(f"http://127.0.0.1:{port}/healthz", proc)
            direct = openai.OpenAI(base_url=f"{sim_url}/v1", api_key="sk-local", max_retries=0)
            clients = {
                name: openai.OpenAI(
                    base_url=f"http://127.0.0.1:{port}/v1", api_key=tokens[name], max_retries=0
                )
                for name, (_proc, port) in gateways.items()
            }
            rows = []
            cpu: dict[tuple[str, bool], float] = {}  # a gateway process's CPU ms per request, by mode
            for stream in [m == "streaming" for m in modes]:
                for i in range(WARMUP):
                    _one(direct, MODEL, stream, f"w{i}")
                    for client in clients.values():
                        _one(client, "chat-app", stream, f"w{i}")
                if args.profile:
                    api.send_signal(signal.SIGUSR1)
                d_total, d_first = [], []
                g_total: dict[str, list[float]] = {name: [] for name in clients}
                g_first: dict[str, list[float]] = {name: [] for name in clients}
                cpu_before = {name: _cpu_ms(proc.pid) for name, (proc, _port) in gateways.items()}
                for i in range(args.n):
                    user = f"user-{i}"
                    t, f = _one(direct, MODEL, stream, user)
                    d_total.append(t)
                    d_first.append(f)
                    order = list(clients.items())
                    for name, client in order if i % 2 == 0 else order[::-1]:  # neither always goes first
                        t, f = _one(client, "chat-app", stream, user)
                        g_total[name].append(t)
                        g_first[name].append(f)
                for name, (proc, _port) in gateways.items():
                    before, after = cpu_before[name], _cpu_ms(proc.pid)
                    if before is not None and after is not None:
                        cpu[name, stream] = (after - before) / args.n
                if args.profile:  # the stats so far written (the handler runs between two requests)
                    args.profile.unlink(missing_ok=True)
                    api.send_signal(signal.SIGUSR2)
                    _await_file(args.profile, api)
                mode = "streaming" if stream else "plain"
                rows.append((mode, d_total, g_total["gateway"], d_first, g_first["gateway"]))
                if other is not None:
                    rows.append(
                        (f"{mode} (--against)", d_total, g_total["against"], d_first, g_first["against"])
                    )
        finally:
            for proc in (api, other, sim):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
    if args.profile:
        import pstats

        pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(35)
        return 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        "# Gateway latency: pairshift api's OpenAI-wire gateway vs a direct SDK call to the same sim server",
        "",
        f"`.venv/bin/python bench/gateway_bench.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {args.n} request pairs per mode after {WARMUP} warm-up pairs, "
        "sequential, the openai SDK in both arms (module doc of bench/gateway_bench.py); load average at the "
        f"end {load} (1, 5, 15 min). Target: added p50 <= 2 ms.",
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
    for mode, d, g, df, gf in [r for r in rows if r[0].startswith("streaming")]:
        lines += [
            "",
            f"{mode.capitalize()}, time to the first chunk: direct p50 {_pct(df, 0.5):.2f} ms, "
            f"gateway p50 {_pct(gf, 0.5):.2f} ms "
            f"(added {_pct(gf, 0.5) - _pct(df, 0.5):.2f} ms); mean added over all requests "
            f"{statistics.fmean(g) - statistics.fmean(d):.2f} ms.",
        ]
    lines += [
        "",
        "CPU time of the `pairshift api` process per gateway request (all its threads, from /proc; steadier "
        "than latency on a shared machine): "
        + (
            ", ".join(
                f"{'streaming' if stream else 'plain'}{_SUFFIX[name]} {v:.2f} ms"
                for (name, stream), v in cpu.items()
            )
            if cpu
            else "not measured (no /proc)"
        )
        + ".",
        "",
        "What the gateway does per request: token lookup (cached 5 s), parse, resolve the unit, the "
        "provider call as JSON over pooled keep-alive HTTP/1.1 connections (pairshift/providers/direct.py "
        "and http1.py; no SDK on the serving path), the answer in the client's wire, and one observation "
        "queued (written by the writer thread in batches). Profile: `--profile FILE` runs the API under "
        "cProfile.",
    ]
    print("\n".join(lines))
    if args.against is None:  # the measured part replaced; the sections of notes after it (## ...) kept
        kept = args.out.read_text().partition("\n## ")[2] if args.out.exists() else ""
        args.out.write_text("\n".join(lines) + "\n" + (f"\n## {kept}" if kept else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
