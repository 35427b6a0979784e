"""Segments: bounded splits, intervals, the nightly worst-segment list on generated data, and the gate's concerns."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.core.contracts import Comparison, GateResult, PromotionPath
from pipelines.core.kinds import Kind
from pipelines.core.paths import LABELS
from pipelines.flows import evaluation, nightly
from pipelines.governance import gate
from pipelines.governance.registry import Registry
from pipelines.steps import segments
from pipelines.steps.predictions import Outputs
from pipelines.storage import history
from pipelines.storage.partitions import partition_dir
from pipelines.surfaces.monitoring_page import render_page
from tests.conftest import copy_lake, score_night, write_config
from tests.pipelines.test_episode_loop import FIRST, ROWS, _with

CHANGED = "loan_purpose=home_improvement"  # 12% of the rows


def test_a_column_of_many_values_splits_into_a_bounded_number_of_segments():
    values = pd.Series([f"v{i % 500}" for i in range(5000)] + ["big"] * 3000 + [None] * 100)
    kept = {"c": segments.largest_values(values, 3)}
    assert kept["c"][0] == "big" and len(kept["c"]) == 3
    parts = segments.split(pd.DataFrame({"c": values}), kept)
    assert len(parts) == 4 and "c=(other)" in parts  # 3 kept values and the rest
    assert sum(len(rows) for rows in parts.values()) == len(values)  # every row in exactly one segment
    assert segments.largest_values(pd.Series([None, None, "a"]), 5) == ["(missing)", "a"]
    assert segments.largest_values(pd.Series(["b", "a", "b", "a"]), 1) == ["a"]  # ties by name: stable


def test_a_segment_metric_comes_with_an_interval_that_narrows_with_rows():
    rng = np.random.default_rng(0)

    def width(n):
        y = rng.integers(0, 2, n)
        score = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
        value, low, high = segments.metric_interval(Kind.BINARY, "roc_auc", y, Outputs(score, score > 0.5), 0.5, [])
        assert low < value < high
        return high - low

    assert width(4000) < width(200) / 2
    one_class = segments.metric_interval(
        Kind.BINARY, "roc_auc", np.ones(50), Outputs(np.ones(50), np.ones(50)), 0.5, []
    )
    assert np.isnan(one_class[0]) and np.isnan(one_class[1])


def _write_night(config, day, label_day, changed_from):
    """Features of `day`, and the labels of `label_day` (random in the changed segment from `changed_from` on)."""
    sample_data.write_day(config.data_root, day, ROWS, 7, sample_data.DriftSpec(), with_labels=False)
    frame = sample_data.generate_chunk(label_day, 0, ROWS, 7, sample_data.DriftSpec())
    target = sample_data.TARGETS["binary"]
    if label_day >= changed_from:  # a concept change in one segment: its labels no longer follow the features
        inside = (frame["loan_purpose"] == "home_improvement").to_numpy()
        coin = np.random.default_rng(label_day.toordinal()).random(inside.sum()) < frame[target].mean()
        frame.loc[inside, target] = coin.astype(frame[target].dtype)
    folder = partition_dir(config.data_root, LABELS, label_day)
    folder.mkdir(parents=True, exist_ok=True)
    frame[["application_id", target]].to_parquet(folder / "part-0000.parquet", index=False)


@pytest.fixture(scope="module")
def segmented(champion_lake, tmp_path_factory):
    config = copy_lake(champion_lake, tmp_path_factory.mktemp("segments"))
    config = _with(config, monitoring={"segments": ["loan_purpose", "region"], "segment_values": 4})
    changed = FIRST + timedelta(days=1)
    late = config.label_delay_partitions
    for i in range(late + 2):
        night = FIRST + timedelta(days=i)
        _write_night(config, night, night - timedelta(days=late), changed)
        ds = night.isoformat()
        validated, scored = score_night(config, ds, f"run-{ds}")
        nightly.monitor_night(config, validated, scored, f"run-{ds}")
        evaluation.evaluate_labels(config)
    return config, history.read_history(config).set_index("ds"), changed


def test_a_segment_whose_metric_falls_while_the_overall_holds_tops_the_list_on_its_first_labelled_night(segmented):
    config, nights, changed = segmented
    before, after = nights.loc[FIRST.isoformat()], nights.loc[changed.isoformat()]
    assert isinstance(after["segment_realised"], dict), "the changed night's labels were evaluated"
    top = after["segment_realised"]["worst"][0]
    assert top["segment"] == CHANGED
    assert top["low"] < top["value"] < top["high"] and top["high"] < top["reference"]  # clearly below
    assert before["segment_realised"]["worst"][0]["segment"] != CHANGED
    models = Registry.open(config)
    held_out = models.model_card(models.champion()).metrics["roc_auc"]
    assert (
        held_out - after["realised_roc_auc"] < config.retraining.realised_max_drop
    )  # the overall holds: no rule fires
    assert top["reference"] == pytest.approx(held_out)  # a model trained before segments: its overall held-out metric
    facts = after["segment_realised"]["segments"]
    # bounded: 4 kept values and (other) per column
    assert {s.split("=")[0] for s in facts} == {"loan_purpose", "region"}
    assert sum(s.startswith("loan_purpose=") for s in facts) <= 5
    assert (
        sum(f["rows"] for s, f in facts.items() if s.startswith("region="))
        == after["realised_metrics"]["labelled_rows"]
    )


def test_each_night_records_segment_shares_score_drift_and_estimates(segmented):
    config, nights, _ = segmented
    estimates = nights.loc[FIRST.isoformat(), "segment_estimates"]["segments"]
    purpose = estimates[CHANGED]
    assert purpose["rows"] > 0 and abs(purpose["share"] - purpose["reference_share"]) < 0.05
    assert purpose["score_drift"] is not None and 0 < purpose["estimated"] < 1
    page = render_page(config, "/monitoring")
    assert "Segments (loan_purpose, region)" in page and 'id="segments-realised"' in page
    assert CHANGED in page


def test_a_candidate_better_overall_but_clearly_worse_on_a_large_segment_goes_to_approval(tmp_path):
    config = load_config(write_config(tmp_path, monitoring={"segments": ["region"]}))
    rng = np.random.default_rng(1)
    n = 6000
    region = np.where(np.arange(n) < 1200, "NORTH", "SOUTH")  # NORTH: 20% of the rows
    y = rng.integers(0, 2, n)
    noise = rng.random(n)
    good, poor = 0.3 * y + 0.7 * noise, 0.05 * y + 0.95 * noise
    candidate = np.where(region == "NORTH", poor, np.clip(good + 0.15 * (y - 0.5), 0, 1))
    champion = good
    outputs = {"candidate": Outputs(candidate, candidate > 0.5), "champion": Outputs(champion, champion > 0.5)}
    found, concerns = gate.segment_comparison(config, pd.DataFrame({"region": region}), y, outputs, 0.5, [])
    by_name = {f["segment"]: f for f in found}
    assert by_name["region=NORTH"]["ci_high"] < 0 < by_name["region=SOUTH"]["ci_low"]
    assert len(concerns) == 1 and "region=NORTH (20% of the evaluation rows)" in concerns[0]
    passed = GateResult(
        passed=True,
        candidate="2",
        champion="1",
        comparison=Comparison(difference=0.02, ci_low=0.01, ci_high=0.03),
        metrics={"candidate": {"roc_auc": 0.8}, "champion": {"roc_auc": 0.78}},
        concerns=concerns,
    )
    assert gate.promotion_path(config, passed) == PromotionPath.ASK_APPROVAL
    assert gate.promotion_path(config, passed.model_copy(update={"concerns": []})) == PromotionPath.PROMOTE
    assert "Segment concern" in gate.gate_summary(passed)
    small = config.model_copy(update={"promotion": config.promotion.model_copy(update={"segment_min_share": 0.25})})
    assert gate.segment_comparison(small, pd.DataFrame({"region": region}), y, outputs, 0.5, [])[1] == []


def test_segment_columns_must_be_features(tmp_path):
    from pipelines.core.errors import ConfigError

    with pytest.raises(ConfigError, match="monitoring.segments names columns that are not features: \\['nope'\\]"):
        load_config(write_config(tmp_path, monitoring={"segments": ["nope"]}))
