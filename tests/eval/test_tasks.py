"""Downstream tasks built from the real images in ../shared/data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from biofm.core.errors import BadInputError
from biofm.eval.tasks import TASKS, build_tasks


def test_every_task_builds_from_real_data(shared_data: Path) -> None:
    tasks = {t.name: t for t in build_tasks(shared_data)}
    assert set(tasks) == set(TASKS)
    for t in tasks.values():
        assert len(t.images) == len(t.target) > 50, t.name
        assert len({im.pixels.shape[1:] for im in t.images}) == 1, t.name  # one size per task
    modality = Counter(tasks["dsb_modality"].target.tolist())
    assert set(modality) == {"fluorescence", "histology", "brightfield"}
    ph3 = tasks["ph3_mitosis"]
    assert all(im.channels == ["DNA", "cell body"] for im in ph3.images)  # PH3 withheld
    assert 5 <= ph3.info["positives"] < len(ph3.images) / 2
    assert {im.pixels.shape[0] for im in tasks["cp_same_field"].images} >= {3, 5, 6}
    assert set(tasks["defocus"].target.tolist()) == set(map(float, range(11)))
    counts = np.expm1(tasks["dsb_nuclei"].target)
    assert counts.min() >= 1 and counts.max() > 20


def test_same_seed_same_tasks_and_unknown_names(shared_data: Path) -> None:
    a, b = (build_tasks(shared_data, ("defocus", "digits"), seed=3) for _ in range(2))
    for x, y in zip(a, b, strict=True):
        assert [im.meta["id"] for im in x.images] == [im.meta["id"] for im in y.images]
    with pytest.raises(BadInputError, match="unknown tasks"):
        build_tasks(shared_data, ("mnist",))
