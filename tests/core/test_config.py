"""Config loading: numbers given where a field also takes words."""

from __future__ import annotations

from biofm.core.config import load_config
from biofm.train.config import PretrainConfig


def test_number_given_for_a_text_field_is_read_as_text() -> None:
    cfg = load_config(PretrainConfig, None, ["data.crops_per_field=4"])
    assert cfg.data.crops_per_field == "4"
    cfg = load_config(PretrainConfig, None, ["data.crops_per_field=area"])
    assert cfg.data.crops_per_field == "area"
