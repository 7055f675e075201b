"""train_heads' choice of the smoke head's one setting, the logit offset towards smoke (no ../shared needed)."""

from __future__ import annotations

import numpy as np

from detectors.training import train_heads as th
from detectors.training.catalog import Item

TASK = th.TASKS["smoke_cls"]  # offsets 0, 0.25, 0.5, 0.75, 1.0


def _scored(pos_margins: list[float], neg_margins: list[float]) -> tuple[list[Item], np.ndarray]:
    """Images with cross-validated log-probabilities whose smoke-minus-no_smoke margin is given."""
    items, rows = [], []
    for target, margins in (("smoke", pos_margins), ("no_smoke", neg_margins)):
        for i, m in enumerate(margins):
            items.append(Item("d", f"{target}{i}.jpg", target, target, "f"))
            z = np.array([0.0, m])
            rows.append(z - np.log(np.exp(z).sum()))
    return items, np.stack(rows)


def _choose(pos: list[float], neg: list[float]) -> tuple[float, dict]:
    items, logp = _scored(pos, neg)
    return th.choose_offset(TASK, items, logp, lambda m: None)


def test_smallest_offset_reaching_recall_095_is_chosen() -> None:
    offset, cv = _choose([2.0] * 18 + [-0.4] * 2, [-2.0] * 20)
    assert offset == 0.5 and cv["recall"] == 1.0


def test_when_no_offset_reaches_095_the_best_recall_within_the_f1_budget() -> None:
    # Two plumes never caught: recall tops out at 0.9, reached from offset 0.5.
    offset, cv = _choose([2.0] * 17 + [-0.4] + [-5.0] * 2, [-2.0] * 20)
    assert offset == 0.5 and cv["recall"] == 0.9


def test_recall_that_costs_more_than_001_f1_is_not_bought() -> None:
    # Offset 0.75 catches one more plume but calls ten clean images smoke.
    offset, cv = _choose([2.0] * 17 + [-0.6] + [-5.0] * 2, [-0.6] * 10 + [-2.0] * 10)
    assert offset == 0.0 and cv["recall"] == 0.85
