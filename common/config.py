"""The one strict base of every config section: an unknown key is an error that names it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base of every config section (Frigate's pattern): ``extra="forbid"``, so a mistyped
    key fails validation with its full dotted path instead of being ignored."""

    model_config = ConfigDict(extra="forbid")
