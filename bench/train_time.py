#!/usr/bin/env python3
"""Wall time of ``vigil train`` for one scene under several training settings, side by side.

Each variant is a set of ``training:`` keys (``epochs=10``, ``cross_fit=true``, ...) on top
of ``--config``. The variants run as separate ``vigil train`` processes at the same time,
one per core, each with ``training.threads`` / ``detector.threads`` set to ``--threads``
(default 1), so they share one machine's conditions: the ratio of their wall times is the
figure to read, not the seconds, which depend on the host. ``--rounds N`` repeats the run
(every variant in every round) and reports each variant's median. Every variant writes its
checkpoint to ``--out/VARIANT/rROUND`` and its ``vigil train`` report (JSON) beside it; the
AUROC of the checkpoints is for ``vigil eval stc`` or ``bench/calibration.py``.

    python bench/train_time.py --stc-root /tmp/campus1 --scene 01 --variant epochs=20 \\
        --variant epochs=10 --out runs/train-time

The first variant is the reference of the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Variant:
    """One set of ``training:`` keys, named by them."""

    name: str
    training: dict


def parse_variant(text: str) -> Variant:
    """``key=value[,key=value...]`` (values in YAML) as a variant.

    >>> parse_variant("epochs=10,cross_fit=true")
    Variant(name='epochs=10,cross_fit=true', training={'epochs': 10, 'cross_fit': True})
    """
    keys = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--variant expects KEY=VALUE[,KEY=VALUE...], got {text!r}")
        keys[key.strip()] = yaml.safe_load(value)
    return Variant(text, keys)


def variant_config(base: dict, variant: Variant, threads: int) -> dict:
    """``base`` (a vigil config as a dict) with the variant's training keys and the threads.

    >>> variant_config({"training": {"epochs": 20}}, parse_variant("epochs=10"), 1)["training"]
    {'epochs': 10, 'threads': 1}
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    out["training"] = {**out.get("training", {}), **variant.training, "threads": threads}
    out["detector"] = {**out.get("detector", {}), "threads": threads}
    return out


def slug(name: str) -> str:
    """A folder name for a variant.

    >>> slug("epochs=10,lr=0.0005")
    'epochs-10_lr-0.0005'
    """
    return name.replace("=", "-").replace(",", "_").replace("/", "-")


def run_round(args: argparse.Namespace, base: dict, variants: list[Variant], rnd: int) -> dict[str, float]:
    """Start every variant's ``vigil train`` at once; wait for all; their wall times."""
    procs = {}
    for v in variants:
        folder = args.out / slug(v.name) / f"r{rnd}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "config.yaml"
        config.write_text(yaml.safe_dump(variant_config(base, v, args.threads)))
        cmd = [sys.executable, "-m", "vigil", "--config", str(config), "train", "--scene", args.scene,
               "--stc-root", str(args.stc_root), "--registry", str(folder / "registry"), "-q"]
        out, err = (folder / "report.json").open("w"), (folder / "stderr.log").open("w")
        procs[v.name] = (subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT,
                                          env={**os.environ, "PYTHONPATH": str(ROOT)}),
                         time.perf_counter(), out, err, folder)
    ended = wait_all({name: entry[0] for name, entry in procs.items()})
    seconds = {}
    for name, (proc, start, out, err, folder) in procs.items():
        seconds[name] = ended[name] - start
        out.close()
        err.close()
        if proc.returncode != 0:
            tail = (folder / "stderr.log").read_text()[-2000:]
            raise SystemExit(f"variant {name!r}: vigil train exited {proc.returncode}:\n{tail}")
    return seconds


def wait_all(procs: dict, clock=time.perf_counter, sleep=time.sleep, poll_s: float = 0.2) -> dict[str, float]:
    """Wait for every process; the ``clock`` reading when each one ended (not when the
    wait for it returned: they end in any order).

    >>> class P:
    ...     def __init__(self, ends): self.ends, self.returncode = ends, None
    ...     def poll(self): return 0 if ticks[0] >= self.ends else None
    >>> ticks = [0]
    >>> def tick(_): ticks[0] += 1
    >>> wait_all({"slow": P(5), "fast": P(2)}, clock=lambda: ticks[0], sleep=tick)
    {'fast': 2, 'slow': 5}
    """
    ended: dict[str, float] = {}
    while len(ended) < len(procs):
        for name, proc in procs.items():
            if name not in ended and proc.poll() is not None:
                ended[name] = clock()
        if len(ended) < len(procs):
            sleep(poll_s)
    return ended


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stc-root", type=Path, required=True, help="STC-layout footage (training/videos)")
    ap.add_argument("--scene", required=True)
    ap.add_argument("--variant", action="append", required=True, metavar="KEY=VALUE[,...]",
                    help="training keys of one variant (repeat; the first is the reference)")
    ap.add_argument("--config", type=Path, help="vigil config the variants start from")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/train-time"))
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    if len({v.name for v in variants}) != len(variants):
        raise SystemExit("--variant: each variant must differ")
    base = yaml.safe_load(args.config.read_text()) if args.config else {}
    if (os.cpu_count() or 1) < len(variants) * args.threads:
        print(f"train_time: {len(variants)} variants x {args.threads} threads on {os.cpu_count()} CPUs: "
              "they will not run side by side on cores of their own", file=sys.stderr)
    rounds = [run_round(args, base, variants, r) for r in range(args.rounds)]
    ref = variants[0].name
    report = {"scene": args.scene, "stc_root": str(args.stc_root), "threads": args.threads, "rounds": rounds,
              "variants": {}}
    print(f"{'variant':32s} {'seconds (median)':>17s} {'x reference':>12s}")
    for v in variants:
        secs = [r[v.name] for r in rounds]
        ratios = [r[v.name] / r[ref] for r in rounds]
        report["variants"][v.name] = {"seconds": secs, "median_seconds": statistics.median(secs),
                                      "ratio_to_reference": ratios}
        print(f"{v.name:32s} {statistics.median(secs):17.1f} {statistics.median(ratios):12.2f}"
              + (f"  ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""))
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
