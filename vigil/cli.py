"""``vigil``: the one command-line entry point for every role."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.redact import redact_url
from vigil.config import ConfigError, VigilConfig, load_config

log = logging.getLogger("vigil")


#: Exceptions that are the user's input being wrong (printed, not traced), by module.
_USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("vigil.config", "ConfigError"), ("streamer.video", "SourceError"),
    ("detector.encoders", "WeightsError"), ("scenes.checkpoint", "CheckpointError"),
    ("scenes.registry", "UnknownSceneError"), ("common.ids", "InvalidSceneIdError"),
    ("detector.scorer", "EncoderMismatchError"), ("common.bus", "BusError"), ("alerting.store", "StoreError"),
    ("alerting.cli", "AlertNotFoundError"), ("training.testset", "EvaluationError"),
    ("detector.offline", "OutputError"), ("ui.server", "ListenError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """The user-error classes of the modules this process has imported. A module that was
    never imported raised none of its errors, so none is imported here: a refused `vigil
    ingest` or `vigil alert` start never loads the model stack (torch) just to print a line."""
    found = []
    for module, name in _USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def _registry(cfg: VigilConfig, override: Path | None):
    from scenes.registry import SceneRegistry

    return SceneRegistry(override or cfg.scenes.root)


def _encoder(cfg: VigilConfig, weights: Path | None):
    from detector.encoders import Encoder

    return Encoder(cfg.encoder.name, weights or cfg.encoder.weights)


def cmd_train(args: argparse.Namespace, cfg: VigilConfig) -> int:
    from common.ids import validate_scene_id
    from training.data import read_footage, stc_training_videos
    from training.train import settings_summary, train_footage

    validate_scene_id(args.scene)  # before training, not after it
    settings = cfg.training
    overrides = {k: getattr(args, k) for k in ("epochs", "seed") if getattr(args, k) is not None}
    if args.model:
        overrides["model"] = args.model
    if args.motion is not None:
        overrides["motion"] = settings.motion.model_copy(update={"enabled": args.motion})
    if args.cross_fit is not None:
        overrides["cross_fit"] = args.cross_fit
    settings = settings.with_changes(**overrides)
    if args.stc_root:
        videos = stc_training_videos(args.stc_root, args.scene)
    elif args.videos:
        videos = args.videos
    else:
        raise ConfigError("give training footage: --videos PATH... or --stc-root ROOT")
    encoder = _encoder(cfg, args.encoder_weights)
    footage = read_footage(videos, settings.input_size, settings.frame_stride, settings.max_frames_per_video)
    data = footage.split(settings.holdout_fraction)
    if getattr(args, "preview_augment", None):  # SANFlow's synthetic anomalies, for a look
        from training.augment import preview_grid
        from training.train import augment_settings

        out = preview_grid(data.train, args.preview_augment, augment_settings(settings), seed=settings.seed)
        print(json.dumps({"scene": args.scene, "preview": str(out)}))
        return 0
    log.info("scene %s: training %s on %d frames (%d held out for calibration)",
             args.scene, settings.model, len(data.train), len(data.holdout))
    def on_fold(fold: int, folds: int) -> None:
        log.info("scene %s: cross-fitting: fold model %d of %d", args.scene, fold, folds - 1)

    result, summary = train_footage(encoder, footage, settings, progress=not args.quiet, on_fold=on_fold)
    from detector.checkpoint import save_scene

    registry = _registry(cfg, args.registry)
    folder = save_scene(registry, args.scene, result.model, {
        "training": {**summary, "settings": settings_summary(settings),
                     "history": result.history, "motion_history": result.motion_history,
                     "seconds": round(result.seconds, 1)},
    })
    cal = result.model.calibration
    assert cal is not None
    from detector.calibration import threshold_interval

    model = result.model
    if result.cross_fit is not None:
        lo, hi = result.cross_fit.interval()
    else:
        lo, hi = threshold_interval(model.raw_scores(model.raw_maps(result.holdout_nll)),
                                    cal.false_alarm_rate)
    if len(cal.normal_scores) * cal.false_alarm_rate < 1:
        log.warning("scene %s: the %.2g %% threshold rests on %d held-out frames (fewer than %d it takes "
                    "to see one such frame); it is extrapolated (%s fit), 90 %% interval %.3g-%.3g: give "
                    "it more normal footage with `vigil calibrate`", args.scene, 100 * cal.false_alarm_rate,
                    len(cal.normal_scores), int(round(1 / cal.false_alarm_rate)), cal.method, lo, hi)
    print(json.dumps({
        "scene": args.scene, "checkpoint": str(folder), "seconds": round(result.seconds, 1),
        "final_nll_per_dim": round(result.history[-1]["nll_per_dim"], 4),
        "threshold_raw": round(cal.threshold, 4), "threshold_method": cal.method,
        "threshold_interval_90": [round(lo, 4), round(hi, 4)], "holdout_frames": len(cal.normal_scores),
        "false_alarm_rate": cal.false_alarm_rate,
        "motion": result.model.motion is not None,
        "cross_fit_folds": result.cross_fit.folds if result.cross_fit is not None else None,
    }))
    return 0


def cmd_score(args: argparse.Namespace, cfg: VigilConfig) -> int:
    """Score a video or frame folder offline; the outputs appear whole or not at all."""
    from detector.checkpoint import load_scene
    from detector.offline import score_source
    from detector.scorer import FrameScorer

    registry = _registry(cfg, args.registry)
    model, _meta = load_scene(registry, args.scene)
    scorer = FrameScorer(_encoder(cfg, args.encoder_weights), model, args.scene, cfg.detector.device)
    out = args.out or Path("runs") / f"score-{args.scene}-{Path(args.source).name}"
    summary = score_source(scorer, args.source, out, cfg.detector.batch_size,
                           write_video=not args.no_video, progress=not args.quiet)
    print(json.dumps({
        "frames": summary.frames, "skipped_corrupt": summary.skipped,
        "above_threshold": summary.above_threshold,
        "max_score": round(summary.max_score, 4), "csv": str(summary.csv),
        "video": str(summary.video) if summary.video else None,
        "timeline": str(summary.timeline) if summary.timeline else None,
    }))
    return 0


def cmd_calibrate(args: argparse.Namespace, cfg: VigilConfig) -> int:
    """Re-fit a scene's thresholds on more normal footage of its camera, without retraining."""
    from detector.checkpoint import MODEL_KEYS, load_scene, save_scene
    from training.calibrate import recalibrate
    from training.data import read_run

    registry = _registry(cfg, args.registry)
    model, meta = load_scene(registry, args.scene)
    stride = cfg.training.frame_stride
    runs = [read_run(v, model.input_size, stride, cfg.training.max_frames_per_video) for v in args.videos]
    change = recalibrate(model, _encoder(cfg, args.encoder_weights), runs, step=stride,
                         false_alarm_rate=args.false_alarm_rate, keep_existing=not args.replace)
    kept = {k: v for k, v in meta.items() if k not in MODEL_KEYS and k != "scene"}
    history = [*kept.pop("recalibrations", []),
               {"videos": [Path(v).name for v in args.videos], "replace": args.replace, **change.summary()}]
    folder = save_scene(registry, args.scene, model, {**kept, "recalibrations": history})
    print(json.dumps({"scene": args.scene, "checkpoint": str(folder), **change.summary()}))
    return 0


def cmd_scenes(args: argparse.Namespace, cfg: VigilConfig) -> int:
    """List every scene folder with its status, a health check: exit 1 if any is unhealthy."""
    number = (int, float)
    shown = {"kind": str, "encoder.name": str, "calibration.threshold": number,
             "calibration.method": str, "calibration.false_alarm_rate": number}
    registry = _registry(cfg, args.registry)
    report = registry.health(shown)
    rows = []
    for health in report:
        row = health.to_dict()
        if health.ok:
            meta = health.meta or {}
            cal = meta["calibration"]
            row.update(kind=meta["kind"], encoder=meta["encoder"]["name"], threshold=cal["threshold"],
                       method=cal["method"], false_alarm_rate=cal["false_alarm_rate"])
        rows.append(row)
    bad = [h for h in report if not h.ok]
    if args.json:
        print(json.dumps({"root": str(registry.root), "healthy": not bad, "scenes": rows}, indent=2))
    else:
        for row in rows:
            if row["ok"]:
                print(f"{row['scene']}\t{row['kind']}\t{row['encoder']}\tthreshold {row['threshold']:.4f}"
                      f" ({row['method']}, FAR {row['false_alarm_rate']})")
            else:
                print(f"{row['scene']}\t{row['status']}")
    if bad:
        print(f"vigil: {len(bad)} of {len(report)} scenes in {registry.root} unhealthy: "
              f"{', '.join(h.scene for h in bad)}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace, cfg: VigilConfig) -> int:
    """The whole system on the shipped clip: train, stream with alerting, score offline."""
    from vigil.demo import run_demo

    def ready(report: dict, url: str | None) -> None:
        print(json.dumps(report, indent=2))
        print(f"demo outputs in {args.out}: scores/, alerts/ (clips and snapshots), score/overlay.mp4, "
              "score/timeline.png")
        first = report["alerts"][0]["alert_id"] if report["alerts"] else "ALERT_ID"
        print(f"look at what it made:\n"
              f"  vigil ui --store-dir {args.out / 'alerts'}\n"
              f"  vigil scenes --registry {args.out / 'scenes'}\n"
              f"  vigil alerts list --store-dir {args.out / 'alerts'}\n"
              f"  vigil alerts get {first} --store-dir {args.out / 'alerts'} -o clip.mp4 "
              "--snapshot snapshot.jpg", flush=True)
        if url is not None:
            print(f"\nthe review page: {url}  (serving until Ctrl-C)", flush=True)
            stop = threading.Event()
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                signal.signal(signal.SIGTERM, previous)
            print("stopped", flush=True)

    if args.port is not None:
        cfg = cfg.model_copy(update={"ui": cfg.ui.model_copy(update={"port": args.port})})
    run_demo(cfg, args.out, args.epochs, args.quiet, serve=args.serve, on_ready=ready)
    return 0


def cmd_ui(args: argparse.Namespace, cfg: VigilConfig) -> int:
    """The review page on its own, until Ctrl-C: alerts from the store the config names (or
    ``--store-dir``), live tiles from the Kafka topics when ``bus.kind: kafka``."""
    given = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    ui = cfg.ui.model_copy(update={"enabled": True, **given})
    update: dict = {"ui": ui}
    if args.store_dir is not None:
        from alerting.config import LocalStoreConfig

        if not args.store_dir.is_dir():
            raise ConfigError(f"--store-dir {args.store_dir}: no such folder")
        update["alerting"] = cfg.alerting.model_copy(update={"store": LocalStoreConfig(dir=args.store_dir)})
    return _run_roles(cfg.model_copy(update=update), ("ui",), until_drained=False)


def _named(camera: str, exc: BaseException) -> str:
    """An error message that names its camera (once)."""
    text = str(exc)
    return text if text.startswith(f"camera {camera}:") else f"camera {camera}: {text}"


def _run_roles(cfg: VigilConfig, roles: tuple[str, ...], until_drained: bool) -> int:
    """Run ``roles``; print the summary (JSON). A camera whose replay broke off mid-way is
    an error line naming it, and exit code 1 (a set-up refused at start raises: exit 2)."""
    from vigil.runner import run_roles

    if "ingest" in roles and not cfg.cameras:
        raise ConfigError("no cameras configured (the `cameras:` list of the config is empty)")
    pipeline = run_roles(cfg, roles, until_drained)
    summary: dict = {}
    if pipeline.ingest:
        summary["ingest"] = {w.camera.id: {"read": w.stats.read, "published": w.stats.published,
                                           "dropped": w.stats.dropped, "skipped_corrupt": w.stats.corrupt}
                             for w in pipeline.ingest}
    if pipeline.recorder is not None:
        summary["scores_recorded"] = {c.id: pipeline.recorder.count(c.id) for c in cfg.cameras}
        summary["dir"] = str(cfg.recorder.dir)
    if pipeline.alert_metrics is not None and pipeline.alerter is not None:
        summary["alerts_started"] = int(pipeline.alert_metrics.registry.get_sample_value(
            "vigil_alert_events_total", {"state": "start"}) or 0)
        store = cfg.alerting.store
        summary["alert_store"] = str(store.dir) if store.kind == "local" else store.kind
    if summary:
        print(json.dumps(summary))
    failed = pipeline.ingest_failures()
    for camera, exc in failed:
        print(f"vigil: error: {redact_url(_named(camera, exc))}", file=sys.stderr)
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace, cfg: VigilConfig) -> int:
    """All roles in one process; returns when every replay is scored, or on Ctrl-C."""
    from vigil.runner import RUN_ROLES

    return _run_roles(cfg, RUN_ROLES, until_drained=not args.forever)


def cmd_ingest(args: argparse.Namespace, cfg: VigilConfig) -> int:
    """Runs until stopped, or until every camera has ended (replays without ``loop``)."""
    return _run_roles(cfg, ("ingest",), until_drained=True)


def cmd_detect(args: argparse.Namespace, cfg: VigilConfig) -> int:
    return _run_roles(cfg, ("detect",), until_drained=False)


def cmd_alert(args: argparse.Namespace, cfg: VigilConfig) -> int:
    return _run_roles(cfg, ("alert",), until_drained=False)


def cmd_alerts(args: argparse.Namespace, cfg: VigilConfig) -> int:
    """`vigil alerts tail | list | get`: alert events and stored alerts."""
    from alerting import cli as alerts

    if args.alerts_command == "tail":
        use_topic = args.source == "topic" or (args.source == "auto" and cfg.bus.kind == "kafka")
        if use_topic:
            if cfg.bus.kafka is None:
                raise ConfigError("alerts tail --source topic needs a bus.kafka section in the config")
            events = alerts.follow_topic(cfg.bus.kafka, args.from_beginning)
            alerts.alerts_tail(events, args.camera, args.count, args.timeout)
            return 0
    if args.store_dir is not None:  # a local store folder, e.g. the demo's
        from alerting.config import LocalStoreConfig
        from alerting.store import open_store

        if not args.store_dir.is_dir():
            raise ConfigError(f"--store-dir {args.store_dir}: no such folder")
        store = open_store(LocalStoreConfig(dir=args.store_dir))
    else:
        store = alerts.open_reader(cfg)
    try:
        if args.alerts_command == "tail":
            alerts.alerts_tail(alerts.follow_store(store, args.from_beginning), args.camera, args.count,
                               args.timeout)
        elif args.alerts_command == "list":
            alerts.alerts_list(store, args.camera, args.limit)
        else:
            alerts.alerts_get(store, args.alert_id, args.out, args.snapshot)
    finally:
        store.close()
    return 0


def cmd_eval_stc(args: argparse.Namespace, cfg: VigilConfig) -> int:
    from vigil.evaluation import eval_stc

    if not args.train and args.checkpoints is None and not cfg.scenes.root.exists():
        raise ConfigError("give --train or --checkpoints DIR (no trained scenes in scenes.root)")
    scenes = args.scenes.split(",") if args.scenes else None
    report = eval_stc(cfg, args.root, scenes, args.model, args.train, args.checkpoints,
                      args.through_pipeline, args.out, [int(w) for w in args.smooth.split(",") if w])
    rows = {name: round(row["pooled"], 4) for name, row in report["frame_auroc"].items()}
    pixel = {name: round(m["pixel_auroc"], 4) for name, m in report["pixel"].items()}
    print(json.dumps({"report": str(args.out / "report.md"), "frame_auroc_pooled": rows,
                      "pixel_auroc": pixel, "skipped": len(report["skipped"])}))
    return 0


START_HERE = """\
start here:
  vigil demo                      train on the shipped clip, stream it with alerting, score it
  vigil train --scene S --videos NORMAL.mp4 ...   then   vigil run --config CAMERAS.yaml
  vigil ui                        the review page: cameras, alerts, clips (http://127.0.0.1:8765/)
  vigil COMMAND --help            the options of one command

README.md is the manual; configs/default.yaml lists every setting."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigilflow")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    # --config and -v work before the command and after it; after it they are parsed by the
    # command's parser, whose SUPPRESS default leaves a value given before it untouched.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="YAML config (default: built-in defaults)")
    shared.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log at debug level")
    p = argparse.ArgumentParser(prog="vigil", description="vigilflow: anomaly detection in camera footage",
                                epilog=START_HERE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"vigil {_version()}")
    p.add_argument("--config", type=Path, help="YAML config (default: built-in defaults)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(group: Any, name: str, **kw: Any) -> argparse.ArgumentParser:
        """A command's parser: it takes the shared options too."""
        return group.add_parser(name, parents=[shared], **kw)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--registry", type=Path, help="scene checkpoint root (overrides scenes.root)")
        sp.add_argument("--encoder-weights", type=Path, help="encoder weights file")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    t = cmd(sub, "train", help="train a scene model on normal footage")
    t.add_argument("--scene", required=True, help="scene id (names its checkpoint folder)")
    src = t.add_mutually_exclusive_group()
    src.add_argument("--videos", nargs="+", type=Path, help="normal training videos of the scene")
    src.add_argument("--stc-root", type=Path, help="STC-layout root: use ROOT/training/videos/SCENE_*")
    t.add_argument("--model", choices=["cflow", "sanflow"], help="model kind (default: training.model)")
    t.add_argument("--preview-augment", type=Path, metavar="PATH",
                   help="write a PNG grid of SANFlow's augmented training frames and masks, then exit")
    t.add_argument("--motion", action=argparse.BooleanOptionalAction, default=None,
                   help="give the scene a motion channel (optical flow between consecutive frames); "
                        "default: training.motion.enabled")
    t.add_argument("--cross-fit", action=argparse.BooleanOptionalAction, default=None,
                   help="fit the threshold on every fold of the footage, each scored by a model that did "
                        "not train on it (one extra training per fold); default: training.cross_fit")
    t.add_argument("--epochs", type=int, help="training epochs (default: training.epochs)")
    t.add_argument("--seed", type=int, help="random seed (default: training.seed)")
    common(t)
    t.set_defaults(func=cmd_train)

    s = cmd(sub, "score", help="score a video or frame folder with a scene model")
    s.add_argument("--scene", required=True, help="the trained scene to score with")
    s.add_argument("source", type=Path, help="video file or folder of frames")
    s.add_argument("-o", "--out", type=Path, help="output folder (default runs/score-SCENE-NAME)")
    s.add_argument("--no-video", action="store_true", help="skip the overlay MP4")
    common(s)
    s.set_defaults(func=cmd_score)

    ca = cmd(sub, "calibrate",
                        help="re-fit a scene's thresholds on more normal footage (no retraining)")
    ca.add_argument("--scene", required=True, help="the trained scene to re-calibrate")
    ca.add_argument("--videos", nargs="+", required=True, type=Path,
                    help="normal footage of the scene's camera")
    ca.add_argument("--false-alarm-rate", type=float,
                    help="new nominal false-alarm rate (default: the scene's)")
    ca.add_argument("--replace", action="store_true",
                    help="fit on the new footage only (default: pool it with the training hold-out)")
    common(ca)
    ca.set_defaults(func=cmd_calibrate)

    sc = cmd(sub, "scenes", help="list trained scenes with their health (exit 1 if any is unhealthy)")
    sc.add_argument("--json", action="store_true", help="print the listing as JSON, for monitoring")
    common(sc)
    sc.set_defaults(func=cmd_scenes)

    r = cmd(sub, "run", help="all roles in one process (embedded bus unless bus.kind: kafka)")
    r.add_argument("--forever", action="store_true", help="keep running after replays end")
    r.set_defaults(func=cmd_run)
    i = cmd(sub, "ingest", help="ingest role: cameras -> vigil.frames (until stopped or every "
                       "replay has ended)")
    i.set_defaults(func=cmd_ingest)
    de = cmd(sub, "detect", help="detector role: vigil.frames -> vigil.scores (runs until stopped)")
    de.set_defaults(func=cmd_detect)
    al = cmd(sub, "alert", help="alert role: frames + scores -> alerts (store, vigil.alerts)")
    al.set_defaults(func=cmd_alert)

    a = cmd(sub, "alerts", help="follow alert events, list stored alerts, fetch clips")
    asub = a.add_subparsers(dest="alerts_command", required=True)
    at = cmd(asub, "tail", help="print alert events as JSON lines as they come")
    at.add_argument("--from-beginning", action="store_true", help="start with the oldest event kept")
    at.add_argument("--camera", help="only this camera's events")
    at.add_argument("--source", choices=["auto", "topic", "store"], default="auto",
                    help="vigil.alerts on Kafka or the store's event log (auto: Kafka if bus.kind is kafka)")
    at.add_argument("--count", type=int, help="exit after this many events")
    at.add_argument("--timeout", type=float, help="exit after this many seconds without an event")
    al_ = cmd(asub, "list", help="stored alerts, newest first (JSON lines)")
    al_.add_argument("--camera", help="only this camera's alerts")
    al_.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ag = cmd(asub, "get", help="an alert's record (JSON); its clip and snapshot to files")
    ag.add_argument("alert_id", help="the alert's id, as `alerts list` prints it")
    ag.add_argument("-o", "--out", type=Path, help="write the clip (MP4) here")
    ag.add_argument("--snapshot", type=Path, help="write the snapshot (JPEG) here")
    for reader in (at, al_, ag):
        reader.add_argument("--store-dir", type=Path,
                            help="read this local store folder (e.g. runs/demo/alerts) instead of "
                                 "alerting.store")
    a.set_defaults(func=cmd_alerts)

    ev = cmd(sub, "eval", help="evaluate on a test set").add_subparsers(dest="dataset", required=True,
                                                                     metavar="DATASET")
    stc = cmd(ev, "stc", help="ShanghaiTech-Campus layout: frame/pixel AUROC, AUPRO, report")
    stc.add_argument("--root", type=Path, required=True, help="dataset root (training/, testing/)")
    stc.add_argument("--scenes", help="comma-separated scene ids (default: all in testing/frames)")
    stc.add_argument("--model", choices=["cflow", "sanflow"], help="model kind to train / expect")
    how = stc.add_mutually_exclusive_group()
    how.add_argument("--train", action="store_true", help="train each scene on ROOT/training/videos")
    how.add_argument("--checkpoints", type=Path, help="scene checkpoints (default: scenes.root)")
    stc.add_argument("--through-pipeline", action="store_true",
                     help="also replay the test frames through the streaming pipeline and check the scores")
    stc.add_argument("--smooth", default="5", help="causal smoothing windows in frames, e.g. 5,10")
    stc.add_argument("-o", "--out", type=Path, default=Path("runs/eval-stc"),
                     help="report folder (default runs/eval-stc)")
    stc.set_defaults(func=cmd_eval_stc)

    d = cmd(sub, "demo", help="train on the shipped campus clip, stream it with alerting, score it")
    d.add_argument("-o", "--out", type=Path, default=Path("runs/demo"),
                   help="output folder (default runs/demo)")
    d.add_argument("--epochs", type=int, default=6, help="training epochs of the demo scene (default 6)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    d.add_argument("--serve", action=argparse.BooleanOptionalAction, default=True,
                   help="serve the review page during the demo and after it until Ctrl-C "
                        "(--no-serve: exit when done, for scripts)")
    d.add_argument("--port", type=int, help="the review page's port (default: ui.port)")
    d.set_defaults(func=cmd_demo)

    u = cmd(sub, "ui", help="the review page: camera tiles, alerts, clips, review marks (until Ctrl-C)")
    u.add_argument("--store-dir", type=Path,
                   help="serve this local store folder (e.g. runs/demo/alerts) instead of alerting.store")
    u.add_argument("--host", help="address to listen on (default: ui.host, 127.0.0.1)")
    u.add_argument("--port", type=int, help="port (default: ui.port; 0: any free port)")
    u.set_defaults(func=cmd_ui)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from common.redact import install_excepthooks, install_redaction
    from common.threads import configure_openmp

    configure_openmp()  # before torch loads: OpenMP threads spin briefly, the pool fits the affinity

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_redaction()  # every root handler: no library's log line shows a secret, at any level
    install_excepthooks()  # nor an uncaught exception's traceback, in any thread
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        cfg = load_config(args.config)
        with logging_redirect_tqdm():  # log lines go above the progress bars, not through them
            return args.func(args, cfg)
    except _user_errors() as exc:
        print(f"vigil: error: {redact_url(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
