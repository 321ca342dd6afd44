"""Check ``extras_confidence``: mean top-1 softmax confidence at a temperature; and its gate protocol."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlab.checks.base import Check, Params, RunContext
from robustlab.errors import SuiteError
from robustlab.metric_keys import key
from robustlab.scorecard import CheckResult, Scorecard


@dataclass(frozen=True)
class ConfidenceParams(Params):
    temperature: float = 1.0

    def validate(self) -> None:
        if self.temperature <= 0:
            raise SuiteError(f"extras_confidence.temperature must be positive, got {self.temperature}.")


class ConfidenceCheck(Check):
    name = "extras_confidence"
    family = "extras_confidence"
    description = "Mean top-1 softmax confidence (robustlab-extras)."
    Params = ConfidenceParams

    def run(self, ctx: RunContext) -> CheckResult:
        t = float(getattr(self.params, "temperature"))
        res = self.new_result()

        def batch(start: int, stop: int) -> list[float]:
            with torch.no_grad():
                logits = ctx.model(ctx.data.images(slice(start, stop)).to(ctx.device)).float()
            return torch.softmax(logits / t, dim=1).max(dim=1).values.cpu().tolist()

        conf = [c for part in ctx.map_batches(ctx.store.scope(self.id, {"temperature": t}), len(ctx.data), batch, desc=self.name) for c in part]
        res.add_metric(key(self.family, "mean_confidence"), sum(conf) / len(conf), n=len(conf))
        return res


def confidence_protocol(card: Scorecard) -> dict[str, str]:
    """Confidences at different temperatures are not comparable: the temperature is the protocol."""
    return {c.id: f"temperature {c.params.get('temperature')}" for c in card.checks if c.check == "extras_confidence"}
