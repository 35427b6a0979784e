"""The gate's rules at their boundaries, without a registry: the interval, the gain rule, the floors, the verdicts."""

import numpy as np
import pytest
from scipy import stats

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import Alias, Candidate, Comparison, GateResult, PromotionPath
from pipelines.governance.gate import (
    evaluate_gate,
    floor_failures,
    gain_failures,
    gate_summary,
    paired_bootstrap,
    promotion_path,
)


def _rules(config: PipelineConfig, **promotion) -> PipelineConfig:
    return config.model_copy(update={"promotion": config.promotion.model_copy(update=promotion)})


def _delong_se(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of AUC(a) - AUC(b) on the same rows (DeLong et al. 1988): an oracle independent of resampling."""
    pos, neg = y == 1, y == 0

    def components(s):
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        return psi.mean(axis=1), psi.mean(axis=0)

    (va, wa), (vb, wb) = components(a), components(b)
    s10, s01 = np.cov(np.vstack([va, vb])), np.cov(np.vstack([wa, wb]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / pos.sum() + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / neg.sum()
    return float(np.sqrt(var))


def test_the_bootstrap_interval_is_a_95_percent_interval():
    """Its width matches 2 x 1.96 DeLong standard errors; a 90% interval would be 16% narrower."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1500)
    champion = y * 0.8 + rng.normal(0, 1, 1500)
    candidate = champion + y * 0.15 + rng.normal(0, 0.5, 1500)
    result = paired_bootstrap(y, candidate, champion, "roc_auc", 0.5, samples=2000)
    expected = 2 * stats.norm.ppf(0.975) * _delong_se(y, candidate, champion)
    assert (result.ci_high - result.ci_low) / expected == pytest.approx(1.0, abs=0.07)
    assert result.ci_low < result.difference < result.ci_high
    assert result.samples == 2000
    assert "95% CI" in result.describe()


def test_gain_rule_boundaries(config):
    strict = _rules(config, min_gain=0.01, require_significance=True)
    assert gain_failures(strict, Comparison(difference=0.03, ci_low=0.0101, ci_high=0.05)) == []
    at_gain = gain_failures(strict, Comparison(difference=0.03, ci_low=0.01, ci_high=0.05))
    assert len(at_gain) == 1 and "is not significant" in at_gain[0]  # the lower end must be above min_gain
    below = gain_failures(strict, Comparison(difference=0.0099, ci_low=0.02, ci_high=0.05))
    assert len(below) == 1 and "is below the required +0.0100" in below[0]
    assert gain_failures(strict, Comparison(difference=0.01, ci_low=0.011, ci_high=0.05)) == []  # equal gain is enough
    lenient = _rules(config, min_gain=0.01, require_significance=False)
    assert gain_failures(lenient, Comparison(difference=0.01, ci_low=-0.2, ci_high=0.05)) == []


def test_floors_name_each_missed_metric(config):
    rules = _rules(config, floors={"roc_auc": 0.7, "recall": 0.5})
    metrics = {"roc_auc": 0.7, "precision": 0.1, "recall": 0.4999, "f1": 0.2}
    failures = floor_failures(rules, metrics)
    assert failures == ["candidate recall 0.4999 is below the floor 0.5 (promotion.floors)."]  # equal to a floor passes
    assert "lower promotion.floors.recall" in floor_failures(rules, metrics, first=True)[0]


def test_the_verdict_after_the_gate(config):
    passed = GateResult(passed=True, candidate="2", champion="1")
    assert promotion_path(config, GateResult(passed=False, candidate="2")) == PromotionPath.REJECT
    assert promotion_path(config, GateResult(passed=False, candidate="1", bootstrap=True)) == PromotionPath.REJECT
    assert promotion_path(config, GateResult(passed=True, candidate="1", bootstrap=True)) == PromotionPath.DONE
    assert promotion_path(_rules(config, require_approval=True), passed) == PromotionPath.ASK_APPROVAL
    assert promotion_path(_rules(config, require_approval=False), passed) == PromotionPath.PROMOTE


def test_a_first_model_is_judged_by_the_floors_alone(config):
    candidate = Candidate(
        name="m",
        version="1",
        run_id="r",
        metrics={"roc_auc": 0.6, "precision": 0.5, "recall": 0.5, "f1": 0.5},
        train_days=["2026-09-01"],
        holdout_days=["2026-09-02"],
    )
    first = evaluate_gate(config, candidate, Alias.CHAMPION)
    assert first.passed and first.bootstrap and first.comparison is None and first.pair is None
    refused = evaluate_gate(config, candidate, "refused")  # an enum arrives from XCom as its value
    assert not refused.passed and refused.bootstrap
    assert refused.reasons == floor_failures(config, candidate.metrics, first=True) and refused.reasons
    assert refused.summary.startswith("first model below the floors: candidate roc_auc 0.6000")


def test_the_approval_summary_shows_both_models_and_the_interval():
    gate = GateResult(
        passed=True,
        candidate="3",
        champion="2",
        evaluation_days=["2026-10-01", "2026-10-02"],
        metrics={"candidate": {"roc_auc": 0.81, "f1": 0.5}, "champion": {"roc_auc": 0.78, "f1": 0.45}},
        comparison=Comparison(difference=0.03, ci_low=0.01, ci_high=0.05),
        reports={"comparison_json": "/x/comparison.json"},
    )
    text = gate_summary(gate)
    assert "Candidate v3 vs champion v2, evaluated on 2026-10-01 to 2026-10-02 (2 partitions)" in text
    # one row per metric, with the difference
    assert "|---|---|---|---|\n| roc_auc | 0.8100 | 0.7800 | +0.0300 |\n| f1 | 0.5000 | 0.4500 | +0.0500 |\n\n" in text
    first = gate.model_copy(update={"comparison": None, "summary": "First model: no champion to compare with."})
    assert gate_summary(first) == "First model: no champion to compare with."
    assert "95% paired bootstrap interval of the difference: +0.0300 (95% CI +0.0100..+0.0500)" in text
    assert gate.pair == "v3_vs_v2"


def test_the_approval_form_links_the_gate_page_and_shows_the_windows_the_directions_and_the_deadline(config):
    from datetime import UTC, datetime

    gate = GateResult(
        passed=True,
        candidate="3",
        champion="2",
        evaluation_days=["2026-10-01", "2026-10-02"],
        metrics={"candidate": {"roc_auc": 0.81, "log_loss": 0.40}, "champion": {"roc_auc": 0.78, "log_loss": 0.45}},
        comparison=Comparison(difference=0.03, ci_low=0.01, ci_high=0.05),
        train_days={"candidate": ["2026-09-20", "2026-09-21", "2026-09-22"], "champion": ["2026-09-01", "2026-09-02"]},
        reports={"comparison_json": "/srv/data/reports/models/v3_vs_v2/comparison.json"},
    )
    text = gate_summary(gate, config, now=datetime(2026, 10, 3, 6, 0, tzinfo=UTC))
    assert "| roc_auc (higher is better) | 0.8100 | 0.7800 | +0.0300 |" in text
    assert "| log_loss (lower is better) | 0.4000 | 0.4500 | -0.0500 |" in text
    assert "Trained on: candidate 2026-09-20 to 2026-09-22 (3 partitions); champion 2026-09-01 to 2026-09-02" in text
    hours = config.promotion.approval_timeout_hours
    due = datetime(2026, 10, 3, 6, 0, tzinfo=UTC) + __import__("datetime").timedelta(hours=hours)
    assert f"Answer by about {due:%Y-%m-%d %H:%M} UTC ({hours:g} hours after this step started)" in text
    assert text.endswith(
        f"[Open the side-by-side gate page]({config.alerts.base_url}/monitoring/models/v3_vs_v2/gate.html)"
    )
    assert "/srv/data" not in text  # no server path in the form
