"""How long a job takes to end after SIGTERM in the middle of a long NUTS warm-up (issue: chunks
sized by time). Prints the median of a few runs of the same command as the signal test.

    python scripts/bench_signal_latency.py [--runs 3] [--wait 2]

Run it from another checkout with PYTHONPATH=<that checkout> to compare versions side by side.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = [
    "model=dln",
    "model.widths=[6,9,7,5]",
    "model.true_rank=3",
    "data.n=20000",
    "sampler=nuts",
    "sampler.num_warmup=100000",
    "sampler.num_steps=50",
    "seed=1",
    "posterior.gram_loss=false",
    "plots=false",
    "mlflow.enabled=false",
]


def once(wait_s: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "lambda_hat", *COMMAND, f"hydra.run.dir={run_dir}", f"cache_dir={tmp}/cache"],
            cwd=tmp,
            env={**os.environ, "LAMBDA_HAT_CACHE": f"{tmp}/cache"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            log = run_dir / "app.log"
            while not (log.exists() and "warm-up/adaptation of" in log.read_text()):
                if proc.poll() is not None:
                    raise RuntimeError(f"the job ended first (exit {proc.returncode})")
                time.sleep(0.2)
            time.sleep(wait_s)  # inside the warm-up
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            return time.monotonic() - start
        finally:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wait", type=float, default=2.0, help="seconds into the warm-up before SIGTERM")
    args = parser.parse_args()
    import lambda_hat

    times = [once(args.wait) for _ in range(args.runs)]
    print(f"lambda_hat from {Path(lambda_hat.__file__).parent}")
    print("| runs | SIGTERM -> exit, median | min | max |\n|---|---|---|---|")
    print(f"| {len(times)} | {statistics.median(times):.1f} s | {min(times):.1f} s | {max(times):.1f} s |")


if __name__ == "__main__":
    main()
