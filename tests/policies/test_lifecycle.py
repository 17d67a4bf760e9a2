"""Lifecycle rules: first match wins on index fields, the window crosses midnight,
and the bounds a pass stops at come from the rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from policies.lifecycle import Lifecycle, LifecycleConfig
from tests.storage.test_tiers import record


def lifecycle(window: str = "22:00-06:00", **extra: object) -> Lifecycle:
    settings: dict[str, object] = {
        "high_watermark": 0.85,
        "low_watermark": 0.75,
        "window": window,
        "interval": 60,
        "purge_when": "committed",
        "zstd_level": 3,
        "message_keep_days": 90,
        "rule": [],
        **extra,
    }
    return Lifecycle(LifecycleConfig.model_validate(settings))


def test_first_matching_rule_wins_on_index_fields() -> None:
    rules = lifecycle(
        rule=[
            {
                "name": "secondary-capture",
                "match": {"SOPClassUID": {"glob": "1.2.840.10008.5.1.4.1.1.7*"}},
                "keep_days": 15,
            },
            {
                "name": "ct-mr",
                "match": {"Modality": {"regex": "^(CT|MR)$"}},
                "warm_codec": "jpeg-ls",
            },
            {"name": "ct1", "match": {"calling_ae": "CT1"}, "purge": False},
        ]
    )
    ct = record("1.1", 0.0)
    assert rules.policy(ct).name == "ct-mr"  # before the calling-AE rule
    assert rules.policy(ct).warm_codec == "jpeg-ls"
    sc = replace(ct, sop_class_uid="1.2.840.10008.5.1.4.1.1.7.4")
    assert rules.policy(sc).keep_days == 15
    us = replace(ct, modality="US")
    assert rules.policy(us).name == "ct1"
    assert not rules.policy(us).purge
    nothing = replace(us, calling_ae="US2")
    assert rules.policy(nothing).name == ""  # the defaults: stay hot, purge when needed
    assert rules.policy(nothing).purge
    assert rules.shortest_keep_days == 15
    assert rules.shortest_hot_days == 7.0
    assert rules.packs


def test_the_window_may_cross_midnight() -> None:
    night = lifecycle("22:00-06:00")
    assert night.in_window(datetime(2026, 12, 1, 23, 30))
    assert night.in_window(datetime(2026, 12, 2, 5, 59))
    assert not night.in_window(datetime(2026, 12, 2, 6, 0))
    assert not night.in_window(datetime(2026, 12, 2, 13, 0))
    lunch = lifecycle("12:00-13:30")
    assert lunch.in_window(datetime(2026, 12, 2, 12, 0))
    assert not lunch.in_window(datetime(2026, 12, 2, 13, 30))
    assert lifecycle("").in_window(datetime(2026, 12, 2, 13, 0))


def test_without_rules_nothing_packs_and_only_the_disk_purges() -> None:
    plain = lifecycle()
    assert not plain.packs
    assert plain.shortest_keep_days is None
    assert plain.shortest_hot_days is None
