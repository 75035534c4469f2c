#!/usr/bin/env python3
"""Two torch processes on one machine: each one's speed alone and beside the other, with
OpenMP as torch leaves it and as ``vigil`` configures it (``common.threads``).

The two processes are what a user runs together: a detector scoring one live camera
(frames one at a time, batch 1: the full CFLOW-AD path on EfficientNet-Lite0 at 256x256
with untrained heads) and a training loop (CFLOW-AD heads fitted on Lite0-shaped fibers,
Adam, batches of 1024 fibers). For each policy it runs each alone for ``--seconds``, then
both at once, and prints frames/s and training steps/s, and each one's speed beside the
other as a share of its speed alone (fair sharing of 2 cores: about 0.5 each).

Policies: ``torch-default`` (no OpenMP variables: torch's pool as wide as the machine's
cores, idle threads spinning), ``vigil`` (:func:`common.threads.configure_openmp`:
a short spin before sleeping, pool sized by this process's CPU affinity), ``passive``
(``OMP_WAIT_POLICY=PASSIVE``: no spin), and ``env:K=V;K2=V2`` (OpenMP variables as given).

    python bench/cpu_share.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.threads import configure_openmp  # noqa: E402

OMP_VARS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def child(role: str, seconds: float) -> dict:
    """Run ``role`` (detector | train) for ``seconds``; its rate (per second)."""
    import torch

    if role == "detector":
        from detector.encoders import Encoder
        from detector.scorer import FrameScorer
        from training.settings import TrainSettings
        from training.speed import load_frames, untrained_model

        encoder = Encoder("tf_efficientnet_lite0").eval()
        frames = load_frames(REPO / "vigil" / "data" / "campus_clip.mp4", 16, 256)
        scorer = FrameScorer(encoder, untrained_model(TrainSettings(input_size=256), encoder, frames[:8]))

        def step() -> int:
            for f in frames[:4]:
                scorer.score_batch([f])
            return 4
    else:
        from detector.cflow import CFlowHead, Positions

        head = CFlowHead([40], cond_dim=128, blocks=8).train()
        opt = torch.optim.Adam(head.parameters(), lr=2e-4)
        fibers = torch.randn(8 * 32 * 32, 40)
        positions = Positions.full(8, 32, 32)

        def step() -> int:
            idx = torch.randint(0, fibers.shape[0], (1024,))
            loss = -head.fiber_log_prob(0, fibers[idx], positions[idx]).mean() / 40
            opt.zero_grad()
            loss.backward()
            opt.step()
            return 1

    step()  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done += step()
    return {"role": role, "rate": done / (time.perf_counter() - t0), "threads": torch.get_num_threads(),
            "omp": {k: os.environ.get(k) for k in OMP_VARS if k in os.environ}}


def spawn(role: str, seconds: float, policy: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    if policy == "vigil":
        configure_openmp(environ=env)
    elif policy == "passive":  # as vigil's, but no spin at all
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        configure_openmp(environ=env)
    elif policy.startswith("env:"):  # e.g. env:GOMP_SPINCOUNT=10000;OMP_NUM_THREADS=2
        env.update(kv.split("=", 1) for kv in policy[4:].split(";"))
    return subprocess.Popen([sys.executable, __file__, "--child", role, "--seconds", str(seconds)],
                            env=env, stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"child failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--policies", default="torch-default,vigil,passive")
    p.add_argument("--child", choices=("detector", "train"), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.seconds)))
        return 0
    report: dict = {}
    for policy in args.policies.split(","):
        alone = {role: result(spawn(role, args.seconds, policy)) for role in ("detector", "train")}
        procs = {role: spawn(role, args.seconds, policy) for role in ("detector", "train")}
        together = {role: result(proc) for role, proc in procs.items()}
        report[policy] = {"alone": alone, "together": together}
        for role in ("detector", "train"):
            a, t = alone[role]["rate"], together[role]["rate"]
            unit = "frames/s" if role == "detector" else "steps/s"
            info = f"{alone[role]['threads']} threads, {alone[role]['omp']}"
            print(f"{policy:14s} {role:8s} alone {a:7.2f} {unit}, beside the other {t:7.2f} "
                  f"({t / a:.2f} of alone; {info})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
