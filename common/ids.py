"""The one scene-id rule: the camera config, the frame and score contract and the scene
registry all accept exactly the same ids.

A scene id names a checkpoint folder (``models/<scene>/``), so it is 1-64 characters of
letters, digits, ``_``, ``-`` and ``.``, starting with a letter or digit: no ``/``, no
``..``, no spaces.
"""

from __future__ import annotations

import re

SCENE_ID_RULE = "1-64 characters of letters, digits, '_', '-', '.', starting with a letter or digit"
_SCENE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidSceneIdError(ValueError):
    """A scene id that cannot name a checkpoint folder."""


def is_scene_id(scene: object) -> bool:
    """Whether ``scene`` is a valid scene id.

    >>> is_scene_id("01"), is_scene_id("../x"), is_scene_id("a/b")
    (True, False, False)
    """
    return isinstance(scene, str) and _SCENE_ID.match(scene) is not None


def validate_scene_id(scene: object) -> str:
    """Return ``scene`` if it is a valid scene id, else raise :class:`InvalidSceneIdError`."""
    if not is_scene_id(scene):
        raise InvalidSceneIdError(f"invalid scene id {scene!r}: use {SCENE_ID_RULE}")
    return scene  # type: ignore[return-value]
