"""The docstring examples of the package modules run as tests (they are documentation that
must stay true)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from importlib.util import find_spec
from pathlib import Path

import pytest

PACKAGES = ("common", "streamer", "scenes", "detector", "training", "alerting", "vigil")


def _modules_with_examples() -> list[str]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            spec = find_spec(info.name)
            if spec is not None and spec.origin and ">>> " in Path(spec.origin).read_text():
                found.append(info.name)
    return sorted(found)


MODULES = _modules_with_examples()


def test_the_examples_are_found() -> None:
    assert {"common.retry", "common.ids", "detector.motion", "detector.calibration"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
    assert result.attempted > 0
