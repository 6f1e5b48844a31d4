"""Does the CPU's instruction set move a DART run? The demo's DART run, stopped after its first
scorer-pretraining epoch, printed as its log prints it.

The demo's logs differ between sessions from the scorer's first pretraining epoch on (loss
1.9876 / 1.9835 / 1.9853 in sessions 11 / 12 / 14), while the grid's and the oracle's first
epochs agree to the digit. Session 11 and 12 ran on AMD EPYC hosts, session 14 on an Intel Xeon
with AVX-512 and AMX. Run this twice with the default ISA (same line twice: the run is
deterministic on one machine) and once with the kernels capped at AVX2, e.g.

    python benchmarks/probes/isa_first_epoch.py runs/isa/default
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/probes/isa_first_epoch.py runs/isa/avx2

Usage: isa_first_epoch.py OUTPUT_DIR (must not exist). One CPU thread, as in the demo.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from dartok.tools.compare import demo_preset, train_config


def main(out: Path) -> int:
    preset = demo_preset()
    spec = next(s for s in preset["specs"] if s.name == "dart")
    cfg = train_config(spec, preset["train"], out / "dart", threads=1)
    out.mkdir(parents=True)
    plan = out / "plan.json"
    plan.write_text(json.dumps({"name": "dart", "config": asdict(cfg), "steps": [{"stop_after": None, "resume": False,
                                                                                    "partition_png": None}]}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dartok.tools.compare", "--run-config", str(plan)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
            if k in os.environ}
    try:
        for line in proc.stdout:
            if "scorer pretraining 1/" in line:
                print(f"{caps or 'default ISA'}: {line.strip()}", flush=True)
                return 0
        print("the run ended before its first pretraining epoch", file=sys.stderr)
        return 1
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    if len(sys.argv) != 2 or Path(sys.argv[1]).exists():
        sys.exit(__doc__.split("Usage:")[1].strip())
    sys.exit(main(Path(sys.argv[1])))
