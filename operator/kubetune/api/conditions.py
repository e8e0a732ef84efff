"""Kubernetes-style status conditions, shared by both kinds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel


class Condition(ApiModel):
    """One observation of the object's state, in the shape `kubectl wait --for=condition=...` reads."""

    type: str = Field(max_length=316)
    """Condition type in CamelCase, e.g. Succeeded or Ready."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""

    reason: str = Field(default="", max_length=1024)
    """One CamelCase word saying why, for programs."""

    message: str = Field(default="", max_length=32768)
    """A sentence for humans."""

    last_transition_time: str | None = None
    """When `status` last changed (RFC 3339)."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this condition was computed from."""
