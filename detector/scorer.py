"""Score frames with a scene model: one encoder pass, then the scene's flow head."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from detector.encoders import Encoder
from detector.model import SceneModel, resize_for_model, to_input
from detector.motion import MotionTracker


class EncoderMismatchError(RuntimeError):
    """A scene model was trained on features of another encoder or other weights."""


@dataclass(frozen=True)
class FrameResult:
    """One frame's result: calibrated anomaly map at the model's input size, calibrated and
    raw frame score."""

    anomaly_map: np.ndarray  # float32 (input_size, input_size)
    score: float  # calibrated: 1.0 = the scene's threshold
    raw: float  # model units (reduced standardised NLL)


def check_encoder(model: SceneModel, encoder: Encoder, scene: str = "?") -> None:
    if model.encoder != encoder.name or model.encoder_digest != encoder.digest:
        raise EncoderMismatchError(
            f"scene {scene}: checkpoint was built for encoder {model.encoder} "
            f"(weights {model.encoder_digest}), but the loaded encoder is {encoder.name} "
            f"(weights {encoder.digest}); retrain the scene or configure the same encoder"
        )


class FrameScorer:
    """Encoder + one scene model, scoring BGR frames in batches."""

    def __init__(
        self,
        encoder: Encoder,
        model: SceneModel,
        scene: str = "?",
        device: str | torch.device = "cpu",
    ) -> None:
        check_encoder(model, encoder, scene)
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        self.model = model
        self.model.head.to(self.device).eval()
        # The scorer's frames are one stream ("camera"): a motion model compares each frame
        # with the one before it (see :meth:`score_batch`).
        self.motion = MotionTracker(model.motion.settings) if model.motion is not None else None
        self.history = model.settings.history()  # its score smoothing (detector.temporal), if any

    @torch.no_grad()
    def score_batch(
        self, frames_bgr: Sequence[np.ndarray], seqs: Sequence[int] | None = None
    ) -> list[FrameResult]:
        """Score frames of one stream, in order.

        Args:
            frames_bgr: BGR frames of any size.
            seqs: their frame numbers in the source. With a motion model, a frame whose
                predecessor in the stream is at most ``max_step`` frames before it gets
                motion evidence; without ``seqs`` every frame is scored on appearance alone.
                A model with a score ``window`` smooths the scores of a run of frames
                (:mod:`detector.temporal`); without ``seqs`` they are per frame.

        Returns:
            One result per frame.
        """
        inputs = [resize_for_model(f, self.model.input_size) for f in frames_bgr]
        images = to_input(inputs, self.model.input_size).to(self.device)
        motion = None
        if self.motion is not None and seqs is not None:
            motion = [self.motion.features("stream", int(q), f) for q, f in zip(seqs, inputs, strict=True)]
        scored = self.model.score(self.encoder(images), images, motion)
        maps = scored.maps.float().cpu().numpy()
        scores = [float(s) for s in scored.scores]
        if self.history is not None and seqs is not None:
            scores = [self.history.smooth("stream", int(q), s) for q, s in zip(seqs, scores, strict=True)]
        return [FrameResult(maps[i], scores[i], float(scored.raw[i])) for i in range(len(frames_bgr))]

    def score_stream(
        self, frames_bgr: Iterable[np.ndarray], batch_size: int = 8
    ) -> Iterator[FrameResult]:
        """Score consecutive frames of one stream (frame numbers 0, 1, 2, ...)."""
        batch: list[np.ndarray] = []
        seq = 0
        for frame in frames_bgr:
            batch.append(frame)
            if len(batch) == batch_size:
                yield from self.score_batch(batch, range(seq, seq + len(batch)))
                seq += len(batch)
                batch = []
        if batch:
            yield from self.score_batch(batch, range(seq, seq + len(batch)))
