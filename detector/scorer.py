"""Score frames with a scene model: one encoder pass, then the scene's flow head."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from detector.encoders import Encoder
from detector.model import SceneModel, to_input


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

    @torch.no_grad()
    def score_batch(self, frames_bgr: Sequence[np.ndarray]) -> list[FrameResult]:
        images = to_input(frames_bgr, self.model.input_size).to(self.device)
        scored = self.model.score(self.encoder(images), images)
        maps = scored.maps.float().cpu().numpy()
        return [
            FrameResult(maps[i], float(scored.scores[i]), float(scored.raw[i]))
            for i in range(len(frames_bgr))
        ]

    def score_stream(
        self, frames_bgr: Iterable[np.ndarray], batch_size: int = 8
    ) -> Iterator[FrameResult]:
        batch: list[np.ndarray] = []
        for frame in frames_bgr:
            batch.append(frame)
            if len(batch) == batch_size:
                yield from self.score_batch(batch)
                batch = []
        if batch:
            yield from self.score_batch(batch)
