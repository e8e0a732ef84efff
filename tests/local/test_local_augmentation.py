"""`kubetune run --local` says how many training rows dataset.augmentation added."""

from __future__ import annotations

from kubetune.local.runner import format_metrics


def test_the_rows_added_by_each_kind_are_printed():
    metrics = {
        "steps": 4,
        "augmentation": [{"kind": "paraphrase", "added": 31}, {"kind": "backTranslation", "added": 9}],
    }
    assert format_metrics(metrics) == "steps 4, 31 rows added by paraphrase, 9 rows added by backTranslation"
