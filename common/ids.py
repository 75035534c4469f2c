"""The id rules: the camera config, the frame and score contracts, the scene registry and
every consumer accept exactly the same ids (docs/architecture.md, "Ids").

A scene id names a checkpoint folder (``models/<scene>/``), so it is 1-64 characters of
letters, digits, ``_``, ``-`` and ``.``, starting with a letter or digit: no ``/``, no
``..``, no spaces. A camera id is the Kafka key of its records and becomes a file name
(score CSVs, the local alert store), a Redis key part and a metric label: the same
characters, 1-128 of them. Letters and digits are ASCII ones; the whole string must match
(a trailing newline is not allowed either).
"""

from __future__ import annotations

import re

__all__ = ["CAMERA_ID_RULE", "SCENE_ID_RULE", "InvalidCameraIdError", "InvalidSceneIdError", "is_alert_id",
           "is_camera_id", "is_scene_id", "validate_camera_id", "validate_scene_id"]

SCENE_ID_RULE = "1-64 characters of letters, digits, '_', '-', '.', starting with a letter or digit"
CAMERA_ID_RULE = "1-128 characters of letters, digits, '_', '-', '.', starting with a letter or digit"
_SCENE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CAMERA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class InvalidSceneIdError(ValueError):
    """A scene id that cannot name a checkpoint folder."""


class InvalidCameraIdError(ValueError):
    """A camera id outside the contract (it could not name a file or a key)."""


def _shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (an id in an error may come from anyone)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def is_scene_id(scene: object) -> bool:
    """Whether ``scene`` is a valid scene id.

    >>> is_scene_id("01"), is_scene_id("../x"), is_scene_id("a/b"), is_scene_id("01\\n")
    (True, False, False, False)
    """
    return isinstance(scene, str) and _SCENE_ID.fullmatch(scene) is not None


def validate_scene_id(scene: object) -> str:
    """Return ``scene`` if it is a valid scene id, else raise :class:`InvalidSceneIdError`."""
    if not is_scene_id(scene):
        raise InvalidSceneIdError(f"invalid scene id {_shown(scene)}: use {SCENE_ID_RULE}")
    return scene  # type: ignore[return-value]


def is_camera_id(camera: object) -> bool:
    """Whether ``camera`` is a valid camera id.

    >>> is_camera_id("gate-1"), is_camera_id("../x"), is_camera_id("cam 2"), is_camera_id("x" * 129)
    (True, False, False, False)
    """
    return isinstance(camera, str) and _CAMERA_ID.fullmatch(camera) is not None


def validate_camera_id(camera: object) -> str:
    """Return ``camera`` if it is a valid camera id, else raise :class:`InvalidCameraIdError`."""
    if not is_camera_id(camera):
        raise InvalidCameraIdError(f"invalid camera id {_shown(camera)}: use {CAMERA_ID_RULE}")
    return camera  # type: ignore[return-value]


#: Alert ids (a camera id, its start seq and, for live cameras, start time:
#: ``alerting.lifecycle.alert_id``) name files and keys too: camera-id characters, a little longer.
_ALERT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def is_alert_id(value: object) -> bool:
    """Whether ``value`` can be an alert id (the stores and the review page refuse others).

    >>> is_alert_id("gate-000000057"), is_alert_id("../x"), is_alert_id("a<b"), is_alert_id("x\\n")
    (True, False, False, False)
    """
    return isinstance(value, str) and _ALERT_ID.fullmatch(value) is not None
