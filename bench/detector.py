#!/usr/bin/env python3
"""The detector's speed against its encoder's: encoder alone, full CFLOW-AD, full SANFlow,
and the flow heads against a reference written the official way, side by side.

For each encoder (``--encoders``; random weights for those that ship none: timing only)
and batch size (``--batches``), on the same frames, every round times, in a rotated order:

* ``encoder``: input tensor + encoder;
* ``cflow``: the full scoring path (:class:`detector.scorer.FrameScorer`: input tensor,
  encoder, CFLOW-AD heads, maps, calibrated scores);
* ``sanflow``: the same with SANFlow (its default, the paper's full-resolution statistics
  network);
* ``heads``: the project's CFLOW-AD heads alone, on the encoder's features
  (:meth:`detector.cflow.CFlowHead.forward`: condition projections per grid position);
* ``previous``: the same heads as this project ran them before the projection cache
  (FrEIA's forward on explicit conditions, fibers in chunks of ``CFlowHead.chunk``);
* ``reference``: the same heads' weights run the official way -- FrEIA's ``AllInOneBlock``
  forward with the positional encoding concatenated to every fiber, fibers in chunks of 256
  (as CFLOW-AD's code does);
* ``cflow-int8`` and ``heads-int8`` (CPU): ``cflow`` and ``heads`` with the same head's
  coupling layers quantised to int8 (:meth:`detector.cflow.CFlowHead.quantize_int8`,
  measured, not offered as a setting); the largest relative log-likelihood difference
  from the float heads is printed too;
* ``encoder-unfolded`` and ``cflow-unfolded``: ``encoder`` and ``cflow`` with the encoder's
  batch norms left as they are (``Encoder(fold_norms=False)``), to measure what folding
  them into the convolutions gains.

With ``--train-steps N`` it also times training, side by side per round: N fiber steps
(``--fiber-batch`` fibers of one image batch's features, every layer in turn, loss, backward,
Adam) of the project's heads (:meth:`~detector.cflow.CFlowHead.fiber_log_prob`, projections
per position) against the same steps through FrEIA's forward on explicit conditions (the
official loop), in fibers per second.

The heads are untrained (statistics and calibration fitted on one batch, so the whole path
runs): their speed is a trained head's. It prints frames/s (median and range over rounds),
each row's ratio to the encoder alone (per round: median, range), multiply-accumulates per
frame of the encoder and of the heads as they compute (``torch.utils.flop_counter``: the
reference's MACs are the heads' without the projection cache), and the largest relative
difference in log-likelihood between ``heads`` and ``reference`` on the same fibers.

    python bench/detector.py --threads 2 --rounds 3
    python bench/detector.py --encoders tf_efficientnet_lite0 --batches 8 --rounds 5 --json runs/detector.json
    python bench/detector.py --device cuda --batches 1,8,32,64 --precision fp32,fp16,bf16
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# This script's own folder must not shadow the ``detector`` package (this file is detector.py).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(BENCH.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROWS = ("encoder", "cflow", "sanflow", "heads", "previous", "reference", "cflow-int8", "heads-int8",
        "encoder-unfolded", "cflow-unfolded")
CPU_ONLY = ("cflow-int8", "heads-int8")
REFERENCE_CHUNK = 256  # fibers per FrEIA call in CFLOW-AD's official code


def make_encoder(name: str, weights_dir: Path):
    """The encoder, with its packaged weights, or random ones saved to a file (timing only)."""
    import timm

    from detector.encoders import ENCODERS, Encoder

    if ENCODERS[name].packaged_weights is not None:
        return Encoder(name), "packaged"
    path = weights_dir / f"{name}-random.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model(ENCODERS[name].timm_name, pretrained=False).state_dict(), path)
    return Encoder(name, path), "random (timing only)"


def reference_forward(head, features: Sequence[torch.Tensor], chunk: int = REFERENCE_CHUNK
                      ) -> list[torch.Tensor]:
    """The official way: explicit conditions concatenated per call, fibers in chunks of 256."""
    from detector.cflow import gaussian_log_prob

    maps = []
    for layer, feature in enumerate(features):
        b, _, h, w = feature.shape
        fibers, positions = head.fibers(feature)
        cond = positions.conditions(head.cond_dim, fibers)
        parts = []
        n = chunk
        for i in range(0, fibers.shape[0], n):
            z, log_det = head.reference_flow(layer, fibers[i:i + n], cond[i:i + n])
            parts.append(gaussian_log_prob(z, log_det))
        maps.append(torch.cat(parts).view(b, h, w))
    return maps


def gmac(fn: Callable[[], object], frames: int) -> float:
    """Multiply-accumulates per frame of one call of ``fn`` over ``frames`` frames, in GMAC."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2 / frames / 1e9


def max_relative_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """max |a - b| / max(|b|, 1) over every element of every layer."""
    return max(float(((x - y).abs() / y.abs().clamp_min(1.0)).max()) for x, y in zip(a, b, strict=True))


def runners(encoder, frames: list[np.ndarray], size: int, batch: int, device: torch.device,
            dtype: torch.dtype | None) -> tuple[dict[str, Callable[[], None]], dict]:
    """One callable per row (each scores ``frames`` once in batches of ``batch``), and the
    MACs and the heads' difference from the reference."""
    from detector.encoders import Encoder
    from detector.model import to_input
    from detector.scorer import FrameScorer
    from training.settings import TrainSettings
    from training.speed import untrained_model

    unfolded = Encoder(encoder.name, encoder.weights_path, fold_norms=False).to(device)
    batches = [frames[i:i + batch] for i in range(0, len(frames), batch)]
    inputs = [to_input(b, size).to(device) for b in batches]
    fit = max(2, batch)  # statistics and calibration need two frames
    models = {kind: untrained_model(TrainSettings(model=kind, input_size=size), encoder, frames[:fit], fit)
              for kind in ("cflow", "sanflow")}
    scorers = {row: FrameScorer(encoder, models[name], device=str(device))
               for row, name in (("cflow", "cflow"), ("sanflow", "sanflow"))}
    scorers["cflow-unfolded"] = FrameScorer(unfolded, models["cflow"], device=str(device))
    head = models["cflow"].head.to(device)
    head_int8 = None
    if device.type == "cpu":
        int8 = copy.deepcopy(models["cflow"])
        head_int8 = int8.head.eval().quantize_int8()
        scorers["cflow-int8"] = FrameScorer(encoder, int8)
    auto = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    with torch.inference_mode(), auto:
        features = [[f.float() for f in encoder(x)] for x in inputs]

    def encoder_only(net: torch.nn.Module = encoder) -> None:
        with torch.inference_mode(), auto:
            for b in batches:
                net(to_input(b, size).to(device))

    def scorer(row: str) -> Callable[[], None]:
        def run() -> None:
            for b in batches:
                scorers[row].score_batch(b)
        return run

    def heads_only() -> None:
        with torch.inference_mode():
            for f in features:
                head(f)

    def heads_int8() -> None:
        assert head_int8 is not None
        with torch.inference_mode():
            for f in features:
                head_int8(f)

    def previous() -> None:
        with torch.inference_mode():
            for f in features:
                reference_forward(head, f, head.chunk)

    def reference() -> None:
        with torch.inference_mode():
            for f in features:
                reference_forward(head, f)

    with torch.inference_mode():
        diff = max(max_relative_difference(head(f), reference_forward(head, f)) for f in features)
        int8_diff = (max(max_relative_difference(head_int8(f), head(f)) for f in features)
                     if head_int8 is not None else None)
    with torch.no_grad():  # the FLOP counter's module hooks do not work in inference mode
        one = to_input(batches[0][:1], size).to(device)
        feats = [f.float() for f in encoder(one)]
        head(feats)  # the condition projections are made once per grid; count the steady state
        info = {
            "encoder_gmac": gmac(lambda: encoder(one), 1),
            "heads_gmac": gmac(lambda: head(feats), 1),
            "reference_gmac": gmac(lambda: reference_forward(head, feats), 1),
            "max_relative_log_p_difference": diff,
            "int8_max_relative_log_p_difference": int8_diff,
        }
    rows = {"encoder": encoder_only, "cflow": scorer("cflow"), "sanflow": scorer("sanflow"),
            "heads": heads_only, "previous": previous, "reference": reference,
            "encoder-unfolded": lambda: encoder_only(unfolded), "cflow-unfolded": scorer("cflow-unfolded")}
    if head_int8 is not None:
        rows.update({"cflow-int8": scorer("cflow-int8"), "heads-int8": heads_int8})
    return rows, info


def training_runners(encoder, frames: list[np.ndarray], size: int, steps: int, fiber_batch: int,
                     device: torch.device) -> dict[str, Callable[[], None]]:
    """``project`` and ``reference``: ``steps`` training steps each, on copies of one head."""
    from detector.cflow import CFlowHead, gaussian_log_prob
    from detector.model import to_input

    with torch.no_grad():
        features = [f.float() for f in encoder(to_input(frames[:8], size).to(device))]
    heads = {name: CFlowHead([f.shape[1] for f in features]).to(device).train()
             for name in ("project", "reference")}
    heads["reference"].load_state_dict(heads["project"].state_dict())
    optimizers = {name: torch.optim.Adam(h.parameters(), lr=2e-4) for name, h in heads.items()}
    generator = torch.Generator().manual_seed(0)

    def run(name: str) -> Callable[[], None]:
        head, opt = heads[name], optimizers[name]

        def steps_run() -> None:
            for k in range(steps):
                layer = k % len(features)
                fibers, positions = head.fibers(features[layer])
                idx = torch.randint(0, fibers.shape[0], (fiber_batch,), generator=generator)
                if name == "project":
                    log_p = head.fiber_log_prob(layer, fibers[idx], positions[idx])
                else:
                    z, log_det = head.reference_flow(layer, fibers[idx],
                                                     positions[idx].conditions(head.cond_dim, fibers))
                    log_p = gaussian_log_prob(z, log_det)
                loss = -torch.nn.functional.logsigmoid(log_p / fibers.shape[1]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return steps_run

    return {"project": run("project"), "reference": run("reference")}


def fps(run: Callable[[], None], frames: int, sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    run()
    sync()
    return frames / (time.perf_counter() - t0)


def spread(values: Sequence[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    from training.speed import load_frames

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", default="tf_efficientnet_lite0,resnet18,wide_resnet50_2")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--frames", type=int, default=32, help="frames per measurement (cycled from the clip)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, fp16, bf16 (encoder autocast)")
    p.add_argument("--source", type=Path, default=BENCH.parent / "vigil" / "data" / "campus_clip.mp4")
    p.add_argument("--train-steps", type=int, default=0, help="also time N training steps per round")
    p.add_argument("--fiber-batch", type=int, default=1024)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dtypes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    if device.type != "cpu":
        rows = [r for r in rows if r not in CPU_ONLY]  # int8 dynamic quantisation runs on CPUs
    frames = load_frames(args.source, args.frames, args.size)
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "threads": args.threads, "size": args.size, "frames": args.frames, "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.encoders.split(","):
            encoder, weights = make_encoder(name, Path(tmp))
            encoder = encoder.to(device).eval()
            for precision in args.precision.split(","):
                for batch in (int(b) for b in args.batches.split(",")):
                    run, info = runners(encoder, frames, args.size, batch, device, dtypes[precision])
                    for r in rows:  # warm-up
                        run[r]()
                    measured: list[dict[str, float]] = []
                    for k in range(args.rounds):
                        order = rows[k % len(rows):] + rows[:k % len(rows)]
                        measured.append({r: fps(run[r], len(frames), sync) for r in order})
                    result = {"encoder": name, "weights": weights, "batch": batch, "precision": precision,
                              **info, "rows": {}}
                    for r in rows:
                        row = {"fps": spread([m[r] for m in measured])}
                        if "encoder" in rows:
                            row["vs_encoder"] = spread([m[r] / m["encoder"] for m in measured])
                        if "reference" in rows:
                            row["vs_reference"] = spread([m[r] / m["reference"] for m in measured])
                        result["rows"][r] = row
                    report["results"].append(result)
                    print(f"\n{name} ({weights}), batch {batch}, {precision}, {args.threads} threads: "
                          f"encoder {info['encoder_gmac']:.2f} GMAC/frame, heads {info['heads_gmac']:.2f} "
                          f"(reference {info['reference_gmac']:.2f}); heads vs reference: max relative "
                          f"log p difference {info['max_relative_log_p_difference']:.1e}"
                          + ("" if info["int8_max_relative_log_p_difference"] is None else
                             f"; int8 heads vs float: {info['int8_max_relative_log_p_difference']:.1e}"),
                          flush=True)
                    print("| row | frames/s | × encoder alone | × reference heads |")
                    print("| --- | --- | --- | --- |")
                    for r, row in result["rows"].items():
                        vs_enc = fmt(row["vs_encoder"]) if "vs_encoder" in row else "-"
                        vs_ref = fmt(row["vs_reference"]) if "vs_reference" in row else "-"
                        print(f"| {r} | {fmt(row['fps'], 1)} | {vs_enc} | {vs_ref} |", flush=True)
            if args.train_steps:
                train = training_runners(encoder, frames, args.size, args.train_steps, args.fiber_batch,
                                         device)
                for run in train.values():
                    run()  # warm-up
                rates: list[dict[str, float]] = []
                for k in range(args.rounds):
                    order = list(train)[k % 2:] + list(train)[:k % 2]
                    rates.append({n: fps(train[n], args.train_steps * args.fiber_batch, sync) for n in order})
                row = {n: spread([r[n] for r in rates]) for n in train}
                ratio = spread([r["project"] / r["reference"] for r in rates])
                report["results"].append({"encoder": name, "training_fibers_per_s": row,
                                          "training_vs_reference": ratio})
                print(f"\n{name} training, {args.fiber_batch} fibers per step: project "
                      f"{fmt(row['project'], 0)} fibers/s, official loop {fmt(row['reference'], 0)}; "
                      f"ratio {fmt(ratio)}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
