"""What the registry's operations answer: plain dataclasses with ``to_dict`` for the HTTP API."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..owners import model_maintainers, model_owner
from .gates import GateReport


@dataclasses.dataclass
class MetricRow:
    metric: str
    candidate: float | None
    champion: float | None
    delta: float | None
    gated: bool


@dataclasses.dataclass
class Comparison:
    """Candidate vs champion metrics, one row per metric either run logged (gated metric first)."""

    model: str
    run_id: str
    against: str
    champion_version: str | None
    rows: list[MetricRow]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PublishResult:
    """What ``publish`` did: ``version`` is None when a gate failed (nothing was registered)."""

    model: str
    run_id: str
    report: GateReport
    version: str | None = None
    previous_challenger: str | None = None

    @property
    def ok(self) -> bool:
        return self.version is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "run_id": self.run_id,
            "ok": self.ok,
            "version": self.version,
            "previous_challenger": self.previous_challenger,
            "gates": self.report.to_dict(),
        }


@dataclasses.dataclass(frozen=True)
class Owners:
    """Who maintains a registered model: its owner (a hub user) and maintainer groups."""

    model: str
    owner: str | None
    maintainers: list[str]

    @classmethod
    def from_tags(cls, model: str, tags: Mapping[str, str]) -> Owners:
        return cls(model, model_owner(tags), model_maintainers(tags))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
