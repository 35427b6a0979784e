"""The retrain policy: unit rules on a history, and the whole loop on generated data with drift from a known day."""

import shutil
from datetime import date, timedelta

import pandas as pd
import pytest

from harness import sample_data
from pipelines.flows import nightly
from pipelines.steps.decision import decide
from pipelines.storage import history
from tests.conftest import score_night

pytestmark = pytest.mark.slow  # 22 generated nights monitored: make test-fast leaves it out


def _history(shares, version="1", realised=None, estimated=None, start=date(2026, 10, 1)):
    rows = []
    for i, share in enumerate(shares):
        rows.append(
            {
                "ds": (start + timedelta(days=i)).isoformat(),
                "model_version": version,
                "validation_success": True,
                "drift_share": share,
                "estimated_roc_auc": (estimated or {}).get(i, 0.8),
                "realised_metrics": {"roc_auc": realised[i]} if realised and i in realised else None,
            }
        )
    return pd.DataFrame(rows)


def _decide(config, frame, ds, force=False, trained_until=date(2026, 9, 30)):
    return decide(config, frame, ds, "1", {"roc_auc": 0.80}, trained_until, force)


def test_drift_must_persist_for_k_nights(config):
    frame = _history([0.0, 0.5, 0.5, 0.5, 0.0])
    assert not _decide(config, frame, "2026-10-03").retrain
    fired = _decide(config, frame, "2026-10-04")
    assert fired.retrain and "above 0.25 for 3 nights in a row" in fired.reasons[0]
    assert not _decide(config, frame, "2026-10-05").retrain


def test_realised_floor_and_drop(config):
    frame = _history([0.0] * 5, realised={1: 0.77, 2: 0.70})
    assert not _decide(config, frame, "2026-10-02").retrain  # 0.03 below 0.80: within 0.05
    reasons = _decide(config, frame, "2026-10-04").reasons
    assert any("0.100 below the champion's held-out 0.800" in r for r in reasons)
    low = _history([0.0] * 3, realised={2: 0.60})
    assert any("below the floor 0.65" in r for r in _decide(config, low, "2026-10-03").reasons)


def test_estimated_drop_age_and_force(config):
    frame = _history([0.0] * 3, estimated={2: 0.70})
    assert any("estimated roc_auc 0.700" in r for r in _decide(config, frame, "2026-10-03").reasons)
    old = _decide(config, _history([0.0]), "2026-10-01", trained_until=date(2026, 6, 1))
    assert old.retrain and "122 partitions (days)" in old.reasons[0]
    assert _decide(config, _history([0.0]), "2026-10-01", force=True).reasons == ["force_retrain was set on the run"]


def test_rules_set_to_null_are_off(tmp_path):
    from pipelines.core.config import load_config
    from tests.conftest import write_config

    config = load_config(
        write_config(tmp_path, retraining={"drift_share_threshold": None, "max_model_age_partitions": None})
    )
    frame = _history([0.9] * 5)
    assert not _decide(config, frame, "2026-10-05", trained_until=date(2020, 1, 1)).retrain


DRIFT_START = date(2026, 10, 8)


@pytest.fixture(scope="module")
def season(champion_lake, tmp_path_factory):
    """22 stable nights, then covariate drift from DRIFT_START: every night scored, monitored and decided."""
    data = tmp_path_factory.mktemp("season") / "data"
    shutil.copytree(champion_lake.data_root, data)
    config = champion_lake.model_copy(update={"data_root": data})
    drift = sample_data.DriftSpec(start=DRIFT_START, covariate=True)
    nights = [date(2026, 9, 16) + timedelta(days=i) for i in range(22 + 4)]
    decisions = {}
    for night in nights:
        sample_data.write_day(config.data_root, night, 2000, 7, drift, with_labels=False)
        ds = night.isoformat()
        validated, scored = score_night(config, ds, f"run-{ds}")
        summary = nightly.monitor_night(config, validated, scored, f"run-{ds}")
        decisions[ds] = nightly.decide_retraining(config, summary, [], force=False)
    return config, history.read_history(config).set_index("ds"), decisions


def test_stable_nights_raise_no_false_alarms(season):
    config, frame, decisions = season
    stable = frame[frame.index < DRIFT_START.isoformat()]
    assert len(stable) >= 20
    column_checks = len(stable) * len(config.features.all)
    false_alarms = int(stable["drifted_columns"].map(len).sum())
    assert false_alarms / column_checks <= 0.01, f"{false_alarms} false column alarms in {column_checks} checks"
    assert not any(decisions[ds].retrain for ds in stable.index)


def test_drift_is_detected_and_the_decision_fires_on_the_policy_night(season):
    config, frame, decisions = season
    drifted = frame[frame.index >= DRIFT_START.isoformat()]
    assert (drifted["drift_share"] > config.retraining.drift_share_threshold).all()
    k = config.retraining.drift_consecutive_nights
    expected = (DRIFT_START + timedelta(days=k - 1)).isoformat()
    fired = [ds for ds in sorted(decisions) if decisions[ds].retrain]
    assert fired[0] == expected
    assert "drift share (columns drifted or with a data-quality warning) above" in decisions[expected].reasons[0]
    assert frame.loc[expected, "decision"] == "retrain"


def test_model_age_counts_partitions_of_the_cadence(tmp_path):
    from pipelines.core.config import load_config
    from tests.conftest import write_config

    yearly = load_config(write_config(tmp_path, cadence="yearly", retraining={"max_model_age_partitions": 3}))
    young = decide(yearly, _history([0.0]), "2026-10-01", "1", {"roc_auc": 0.8}, date(2024, 1, 1))
    assert not young.retrain  # 2 years: within 3 partitions, though 1,000 days
    assert (young.ds, young.model_version) == ("2026-10-01", "1")  # the decision names its night and model
    old = decide(yearly, _history([0.0]), "2026-10-01", "1", {"roc_auc": 0.8}, date(2022, 1, 1))
    assert old.retrain and "4 partitions (years) before 2026-10-01" in old.reasons[0]


def test_a_drift_share_equal_to_the_threshold_is_not_drift(config):
    frame = _history([0.25, 0.25, 0.25])
    assert not _decide(config, frame, "2026-10-03").retrain  # the rule is "above", not "at least"
    assert _decide(config, _history([0.26, 0.26, 0.26]), "2026-10-03").retrain


def test_the_drift_streak_must_end_on_the_night_being_decided(config):
    frame = _history([0.5, 0.5, 0.5, None])  # tonight not measured (quarantined): yesterday's streak does not fire
    assert not _decide(config, frame, "2026-10-04").retrain


def _policy(config, **retraining):
    return config.model_copy(update={"retraining": config.retraining.model_copy(update=retraining)})


def test_each_rule_fires_above_its_limit_not_at_it(config):
    """Limits chosen exact in binary (0.75 - 0.5 == 0.25): at the limit no rule fires, just past it each one does."""
    strict = _policy(
        config,
        realised_floor=0.5,
        realised_max_drop=0.25,
        estimated_max_drop=0.25,
        max_model_age_partitions=10,
        drift_share_threshold=None,
    )
    baseline = {"roc_auc": 0.75}

    def reasons(frame, trained_until=date(2026, 9, 25)):
        return decide(strict, frame, "2026-10-01", "1", baseline, trained_until).reasons

    at_limits = _history([0.0], realised={0: 0.5}, estimated={0: 0.5})
    assert reasons(at_limits) == []  # realised == floor, drops == allowed, age 6 partitions
    assert reasons(at_limits, trained_until=date(2026, 9, 21)) == []  # age exactly 10 partitions
    past = _history([0.0], realised={0: 0.4999}, estimated={0: 0.4999})
    text = " | ".join(reasons(past, trained_until=date(2026, 9, 20)))
    for rule in (
        "below the floor 0.5",
        "below the champion's held-out 0.750 (allowed 0.25)",
        "estimated roc_auc 0.500 is 0.250 below",
        "11 partitions (days) before 2026-10-01",
    ):
        assert rule in text, rule


def test_a_champion_without_a_held_out_metric_is_judged_by_the_floor_alone(config):
    frame = _history([0.0], realised={0: 0.6}, estimated={0: 0.1})
    reasons = decide(config, frame, "2026-10-01", "1", {}, None).reasons
    assert reasons == ["realised roc_auc 0.600 on 2026-10-01 is below the floor 0.65"]


def test_the_estimate_rule_applies_to_roc_auc_only(config):
    frame = _history([0.0], estimated={0: 0.1})
    by_f1 = _policy(config, metric="f1", realised_floor=None)
    assert decide(by_f1, frame, "2026-10-01", "1", {"f1": 0.8, "roc_auc": 0.8}, None).reasons == []
    off = _policy(config, estimated_max_drop=None)
    assert decide(off, frame, "2026-10-01", "1", {"roc_auc": 0.8}, None).reasons == []


def test_quarantined_nights_neither_count_nor_break_a_streak(config):
    frame = _history([0.5, 0.5, 0.5])
    frame.loc[1, "validation_success"] = False  # a refused night in the middle: measured nights are 1, 3
    assert not _decide(config, frame, "2026-10-03").retrain
    unknown = _history([0.5, 0.5, 0.5])
    unknown["validation_success"] = unknown["validation_success"].astype(object)
    unknown.loc[1, "validation_success"] = None  # an unknown verdict counts as not scored
    assert not _decide(config, unknown, "2026-10-03").retrain
    fired = _decide(config, _history([0.3, 0.4, 0.5]), "2026-10-03").reasons[0]
    assert fired.endswith("(2026-10-01 0.30, 2026-10-02 0.40, 2026-10-03 0.50)")
    assert not _decide(_policy(config, drift_share_threshold=None), _history([0.9] * 3), "2026-10-03").retrain
