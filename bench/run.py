"""Run every ``bench/*_bench.py`` (``make bench``); each writes ``bench/results/<name>.md``.

Benches run one at a time in their own processes (they measure throughput; running them side by side on a
small machine would measure each other). Exit status: non-zero when any bench failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# Benches that write one section of a shared results file (each keeps the file's other sections).
SHARED_RESULTS = {
    "scale_migrations": "scale",
    "scale_evals": "scale",
    "scale_eval_speed": "scale",
    "shadow_calibration": "calibration",
}


def main() -> int:
    failed = []
    for script in sorted(BENCH.glob("*_bench.py")):
        name = script.stem.removesuffix("_bench")
        out = BENCH / "results" / f"{SHARED_RESULTS.get(name, name)}.md"
        print(f"== {script.name} -> {out.relative_to(BENCH.parent)}", flush=True)
        if subprocess.run([sys.executable, str(script), "--out", str(out)], cwd=BENCH.parent).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
