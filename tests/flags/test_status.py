from __future__ import annotations

from pathlib import Path

import pytest

from flags import default_document, effective_stages, set_endpoint_stage
from shim.stages import FixedStages, Stage
from tests.flags.helpers import decider_for, write_toggles


async def test_split_follows_the_rollout(toggles_path: Path) -> None:
    doc = set_endpoint_stage(default_document(), "/ws/training", Stage.SHADOW, sample_rate=0.5)
    doc = set_endpoint_stage(doc, "/ws/training", Stage.LIVE, percent=25, sample_rate=0.1)
    write_toggles(toggles_path, doc)
    async with decider_for(toggles_path) as decider:
        splits = decider.effective_stages(["/ws", "/ws/training"], sample_keys=4000)
    assert splits["/ws"].shares == {Stage.LEGACY: 1.0}
    training = splits["/ws/training"]
    assert abs(training.shares[Stage.LIVE] - 0.25) < 0.03
    assert training.sample_rates == pytest.approx({Stage.LIVE: 0.1, Stage.SHADOW: 0.5})
    described = training.describe()
    assert described.startswith("shadow 7")
    assert "live 2" in described and "(sample 0.1)" in described


def test_works_with_any_decider() -> None:
    splits = effective_stages(FixedStages({"/ws": Stage.NEW}), ["/ws", "/x"], sample_keys=10)
    assert splits["/ws"].describe() == "new 100.0%"
    assert splits["/x"].shares == {Stage.LEGACY: 1.0}
    with pytest.raises(ValueError):
        effective_stages(FixedStages(), ["/ws"], sample_keys=0)
