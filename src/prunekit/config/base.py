"""The base of every config: frozen, unknown keys forbidden, defaults validated."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    """Base class for method and job configs (pydantic v2, frozen, `extra="forbid"`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, use_attribute_docstrings=True)
