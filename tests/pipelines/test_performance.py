import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from pipelines.steps.performance import calibration_table, estimated_performance, fit_calibrator, realised_performance


def test_realised_metrics_equal_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 5000)
    s = np.clip(0.3 * y + rng.random(5000) * 0.7, 0, 1)
    m = realised_performance(y, s, 0.5)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["log_loss"] == pytest.approx(log_loss(y, np.clip(s, 1e-7, 1 - 1e-7)))
    assert m["accuracy"] == pytest.approx(((s >= 0.5) == y).mean())
    assert sum(b["rows"] for b in m["calibration"]["bins"]) == 5000


def test_calibration_error_is_zero_for_perfect_calibration_and_large_when_off():
    rng = np.random.default_rng(2)
    p = rng.random(200_000)
    y = (rng.random(200_000) < p).astype(int)
    assert calibration_table(y, p)["expected_calibration_error"] < 0.01
    assert calibration_table(y, p**3)["expected_calibration_error"] > 0.1


def _scores(n, seed, shift=0.0):
    """Scores of a well-calibrated synthetic model and labels drawn from them."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.5 + shift, 1.3, n)
    p = 1 / (1 + np.exp(-logit))
    return p, (rng.random(n) < p).astype(int)


def test_cbpe_tracks_realised_auc_and_accuracy_when_nothing_changed():
    val_s, val_y = _scores(20_000, 1)
    calibrator = fit_calibrator(val_s, val_y)
    for seed in range(2, 7):
        s, y = _scores(20_000, seed)
        est = estimated_performance(s, 0.3, calibrator)
        assert est["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=0.02)
        assert est["accuracy"] == pytest.approx(((s >= 0.3) == y).mean(), abs=0.02)


def test_cbpe_follows_a_covariate_shift_of_the_scores():
    val_s, val_y = _scores(20_000, 1)
    calibrator = fit_calibrator(val_s, val_y)
    s, y = _scores(20_000, 9, shift=1.5)
    est = estimated_performance(s, 0.3, calibrator)
    assert est["accuracy"] == pytest.approx(((s >= 0.3) == y).mean(), abs=0.03)
    assert est["roc_auc"] == pytest.approx(roc_auc_score(y, s), abs=0.03)


def test_cbpe_handles_empty_and_single_class():
    calibrator = fit_calibrator(np.array([0.1, 0.9]), np.array([0, 1]))
    empty = estimated_performance(np.array([]), 0.5, calibrator)
    assert np.isnan(empty["roc_auc"]) and np.isnan(empty["accuracy"])
    import warnings

    scores = np.array([0.2, 0.4, 0.6, 0.8])
    for label, accuracy in ((1, 0.5), (0, 0.5)):  # a calibrator that says every row is positive, or none is
        certain = fit_calibrator(np.array([0.1, 0.9]), np.array([label, label]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no 0/0 on the way: the AUC of one class is undefined, said as NaN
            one_class = estimated_performance(scores, 0.5, certain)
        assert np.isnan(one_class["roc_auc"]) and one_class["accuracy"] == pytest.approx(accuracy)


def test_the_calibration_error_weights_each_bin_by_its_rows():
    # 90 rows in bin 0 off by 0.05, 10 rows in bin 9 off by 0.5: weighted (0.9 * 0.05 + 0.1 * 0.5) = 0.095,
    # where an unweighted mean over the two bins would say 0.275
    score = np.r_[np.full(90, 0.05), np.full(10, 0.95)]
    y = np.r_[np.zeros(90, int), np.r_[np.ones(4, int), np.zeros(6, int)]]
    table = calibration_table(y, score)
    assert table["expected_calibration_error"] == pytest.approx(0.9 * 0.05 + 0.1 * abs(0.95 - 0.4))
    assert [(b["bin"], b["rows"]) for b in table["bins"]] == [(0, 90), (9, 10)]
    assert table["bins"][1]["observed_rate"] == pytest.approx(0.4)


class _AsIs:
    """A calibrator that returns the scores themselves (optionally shifted out of [0, 1]) as probabilities."""

    def __init__(self, shift=0.0):
        self.shift = shift

    def predict(self, score):
        return score + self.shift


def _expected_auc(score, p):
    """The area under the expected ROC curve by its definition: pairs (positive weight p_i, negative 1 - p_j)."""
    above = (score[:, None] > score[None, :]) + 0.5 * (score[:, None] == score[None, :])
    return float((p[:, None] * (1 - p)[None, :] * above).sum() / (p.sum() * (1 - p).sum()))


def test_cbpe_is_the_expected_roc_curve_of_calibrated_probabilities_with_ties():
    rng = np.random.default_rng(4)
    score = np.round(0.05 + 0.9 * rng.random(400), 2)  # many ties, and no certain row at either end
    est = estimated_performance(score, 0.5, _AsIs())
    assert est["roc_auc"] == pytest.approx(_expected_auc(score, score), abs=1e-12)
    assert est["accuracy"] == pytest.approx(np.where(score >= 0.5, score, 1 - score).mean())
    for pair in (np.array([0.2, 0.6]), np.array([0.7, 0.9])):  # expected positives (or negatives) below one row
        assert estimated_performance(pair, 0.5, _AsIs())["roc_auc"] == pytest.approx(_expected_auc(pair, pair))


def test_cbpe_clips_probabilities_and_counts_a_score_at_the_threshold_as_positive():
    score = np.array([0.1, 0.3, 0.3, 0.9])
    est = estimated_performance(score, 0.3, _AsIs(shift=0.5))  # probabilities 0.6, 0.8, 0.8, 1.4 -> 1.0
    assert est["accuracy"] == pytest.approx((1 - 0.6 + 0.8 + 0.8 + 1.0) / 4)
    certain = estimated_performance(np.array([0.2, 0.8]), 0.5, _AsIs(shift=2.0))  # every row surely positive
    assert np.isnan(certain["roc_auc"]) and certain["accuracy"] == pytest.approx(0.5)
    never = estimated_performance(np.array([0.2, 0.8]), 0.5, _AsIs(shift=-1.0))  # clipped to 0: surely negative
    assert np.isnan(never["roc_auc"]) and never["accuracy"] == pytest.approx(0.5)


def test_calibration_bins_are_ten_equal_widths_with_both_ends_included():
    score = np.array([0.0, 0.0999, 0.1, 0.5, 0.95, 1.0])
    table = calibration_table(np.array([0, 0, 1, 0, 1, 1]), score)
    assert [(b["bin"], b["rows"]) for b in table["bins"]] == [(0, 2), (1, 1), (5, 1), (9, 2)]
    assert table["bins"][3] == {"bin": 9, "rows": 2, "mean_score": pytest.approx(0.975), "observed_rate": 1.0}


def test_precision_recall_f1_and_accuracy_follow_their_definitions_at_the_threshold():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.5, 0.2, 0.5, 0.1, 0.7, 0.3, 0.6])  # two scores exactly at the threshold
    m = realised_performance(y, s, 0.5)  # a score at the threshold is positive: TP 3, FP 2, FN 1, TN 2
    assert set(m) == {"roc_auc", "precision", "recall", "f1", "log_loss", "accuracy", "calibration"}
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / (0.6 + 0.75))
    assert m["accuracy"] == pytest.approx(5 / 8)


def test_a_night_without_positive_predictions_has_zero_precision_and_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's UndefinedMetricWarning would be an error here
        m = realised_performance(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]), 0.9)
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_log_loss_clips_certain_scores_to_one_in_ten_million():
    m = realised_performance(np.array([1, 0]), np.array([0.0, 0.0]), 0.5)  # a certain, wrong score stays finite
    assert m["log_loss"] == pytest.approx((-np.log(1e-7) - np.log(1 - 1e-7)) / 2, rel=1e-9)
