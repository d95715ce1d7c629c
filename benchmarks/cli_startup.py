"""CLI start-up: wall-clock of `biofm --help` and `biofm embed --help` beside `python -c pass`.

Each command runs in a fresh subprocess, ``--repeats`` times after one warm-up run (file cache);
the median is reported with the ratio to the bare interpreter measured in the same run. Also
records which heavy modules building the parser imports. Target: each help under 1 s.

    python benchmarks/cli_startup.py --json benchmarks/results/cli_startup_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HEAVY = ("torch", "pandas", "numpy", "sklearn", "zarr", "scipy", "matplotlib", "tifffile")
PROBE = (
    "import sys, biofm.cli.main as m; m.build_parser(); "
    f"print(','.join(k for k in {HEAVY!r} if k in sys.modules))"
)


def time_command(cmd: list[str], repeats: int) -> dict[str, Any]:
    """Median, min and max wall-clock seconds of ``cmd`` over ``repeats`` runs (one warm-up)."""
    subprocess.run(cmd, check=True, capture_output=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"cmd": " ".join(cmd), "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "runs": times}


def entry_point() -> list[str]:
    """The installed ``biofm`` script beside this interpreter, else ``python -m biofm``."""
    script = Path(sys.executable).with_name("biofm")
    if script.exists():
        return [str(script)]
    found = shutil.which("biofm")
    return [found] if found else [sys.executable, "-m", "biofm"]


def heavy_imports() -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True,
                         text=True).stdout.strip()
    return [m for m in out.split(",") if m]


def run(repeats: int) -> dict[str, Any]:
    biofm = entry_point()
    baseline = time_command([sys.executable, "-c", "pass"], repeats)
    cases = {
        "help": time_command([*biofm, "--help"], repeats),
        "embed_help": time_command([*biofm, "embed", "--help"], repeats),
        "module_help": time_command([sys.executable, "-m", "biofm", "--help"], repeats),
    }
    for case in cases.values():
        case["ratio_to_python"] = case["median_s"] / baseline["median_s"]
        case["under_1s"] = case["median_s"] < 1.0
    return {
        "benchmark": "cli_startup",
        "device": f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "repeats": repeats,
        "baseline_python_pass": baseline,
        **cases,
        "heavy_modules_after_build_parser": heavy_imports(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9, help="timed runs per command (default 9)")
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args()
    res = run(args.repeats)
    base = res["baseline_python_pass"]["median_s"]
    print(f"python -c pass      {base * 1e3:8.1f} ms")
    for key in ("help", "embed_help", "module_help"):
        r = res[key]
        print(f"{r['cmd'][-40:]:<40} {r['median_s'] * 1e3:8.1f} ms  "
              f"({r['ratio_to_python']:.1f}x python; under 1 s: {r['under_1s']})")
    print(f"heavy modules after build_parser: {res['heavy_modules_after_build_parser'] or 'none'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
