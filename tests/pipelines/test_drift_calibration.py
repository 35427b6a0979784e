"""Drift thresholds calibrated to the data: few false alarms on small partitions, real shifts still caught at once."""

import numpy as np
import pandas as pd
import pytest

from pipelines.core.config import load_config
from pipelines.steps.drift import SCORE, calibrate_thresholds, column_tests, drift_report, drift_statistic
from tests.conftest import write_config

pytestmark = pytest.mark.slow  # many generated nights per shape: make test-fast leaves it out


def column_values(frame: pd.DataFrame, column: str, numeric: bool) -> np.ndarray:
    """Return a column's non-null values as Evidently tests them (numbers as float, categories as text)."""
    values = frame[column]
    if numeric:
        array = values.to_numpy(dtype=float, na_value=np.nan)
        return array[np.isfinite(array)]
    return values.dropna().astype(str).to_numpy()


NUMERIC = ["normal", "skewed", "counts", "flag", "uniform"]
CATEGORICAL = ["many_levels", "few_levels", "rare_levels"]


def _stable(rows: int, seed: int) -> pd.DataFrame:
    """Generated stable data of several shapes (not the demo's): symmetric, skewed, counts, 0/1, bounded, categories."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "normal": rng.normal(10, 3, rows),
            "skewed": rng.lognormal(3, 1, rows),
            "counts": rng.poisson(2.5, rows).astype(float),
            "flag": (rng.random(rows) < 0.3).astype(float),
            "uniform": rng.uniform(0, 1, rows),
            "many_levels": rng.choice([f"l{i}" for i in range(15)], rows, p=np.arange(15, 0, -1) / 120),
            "few_levels": rng.choice(["a", "b", "c"], rows, p=[0.6, 0.3, 0.1]),
            "rare_levels": rng.choice(["x", "y", "z", "w"], rows, p=[0.9, 0.05, 0.04, 0.01]),
            SCORE: rng.beta(2, 8, rows),
        }
    )
    frame.loc[rng.random(rows) < 0.03, "skewed"] = np.nan
    return frame


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    return load_config(write_config(folder, features={"numeric": NUMERIC, "categorical": CATEGORICAL}))


def _verdicts(config, thresholds, reference, night):
    tests = column_tests(config, thresholds)
    numeric = set(NUMERIC) | {SCORE}
    drifted = {}
    for column in [*NUMERIC, *CATEGORICAL]:
        method, threshold = tests[column]
        stat = drift_statistic(
            method,
            column_values(reference, column, column in numeric),
            column_values(night, column, column in numeric),
            column in numeric,
        )
        drifted[column] = stat < threshold if method in ("ks", "chisquare") else stat >= threshold
    return drifted


@pytest.mark.parametrize("rows,nights", [(150, 150), (1_000, 80), (50_000, 20)])
def test_false_column_alarms_on_stable_data_stay_at_or_below_one_percent(config, rows, nights):
    reference = _stable(50_000, seed=1)  # the reference sample a model stores (training.reference_sample_rows)
    thresholds = calibrate_thresholds(config, reference, rows)
    alarms = [
        flag
        for n in range(nights)
        for flag in _verdicts(config, thresholds, reference, _stable(rows, 100 + n)).values()
    ]
    rate = sum(alarms) / len(alarms)
    print(f"{rows} rows a night: {sum(alarms)} false column alarms in {len(alarms)} column-nights ({rate:.2%})")
    assert rate <= 0.01
    if rows == 150:  # small partitions: noise above the configured 0.1, so the thresholds had to rise
        assert thresholds["normal"]["threshold"] > config.monitoring.drift.numeric_threshold
        assert thresholds["normal"]["chunk_rows"] == 150


def test_a_half_sd_shift_in_one_column_is_caught_on_its_first_night_at_1000_rows(config):
    reference = _stable(50_000, seed=1)
    thresholds = calibrate_thresholds(config, reference, 1_000)
    caught = []
    for n in range(10):
        night = _stable(1_000, seed=500 + n)
        night["normal"] += 0.5 * 3  # half a standard deviation
        verdicts = _verdicts(config, thresholds, reference, night)
        caught.append(verdicts["normal"])
        assert sum(verdicts.values()) <= 2  # the others mostly quiet
    assert all(caught)


def test_without_calibration_small_partitions_alarm_often(config):
    """The reason calibration exists: the configured 0.1 sits inside the noise of 150-row nights."""
    reference = _stable(50_000, seed=1)
    plain = {c: {"method": m, "threshold": t} for c, (m, t) in column_tests(config).items()}
    alarms = [flag for n in range(40) for flag in _verdicts(config, plain, reference, _stable(150, 100 + n)).values()]
    assert sum(alarms) / len(alarms) > 0.05


@pytest.mark.parametrize("method", ["wasserstein", "jensenshannon", "psi", "ks", "chisquare"])
def test_our_statistic_is_the_one_evidently_reports(tmp_path, method):
    """Calibration measures the statistic the nightly Evidently report tests, with nulls in the data."""
    kinds = {
        "wasserstein": ["normal", "skewed", "counts"],
        "ks": ["normal", "skewed", "counts"],
        "chisquare": ["many_levels"],
    }.get(method, ["normal", "skewed", "counts", "many_levels"])
    per_column = {c: {"method": method, "threshold": 0.5} for c in kinds}
    config = load_config(
        write_config(
            tmp_path,
            features={"numeric": ["normal", "skewed", "counts"], "categorical": ["many_levels"]},
            monitoring={"drift": {"per_column": per_column}},
        )
    )
    reference, night = _stable(3_000, seed=1), _stable(400, seed=2)
    night["skewed"] *= 1.3
    summary, paths = drift_report(config, night, reference, tmp_path / "report")
    evidently_values = _evidently_values(paths["drift_json"])
    for column in kinds:
        numeric = column != "many_levels"
        ours = drift_statistic(
            method, column_values(reference, column, numeric), column_values(night, column, numeric), numeric
        )
        assert ours == pytest.approx(evidently_values[column], rel=1e-9, abs=1e-12), column
        # the night's verdicts use the vectorised pass's statistic: the same number
        assert summary.columns[column]["statistic"] == pytest.approx(ours, rel=1e-9, abs=1e-12), column


def _evidently_values(snapshot_json):
    """Each column's drift value as Evidently's own snapshot (drift.json) holds it."""
    import json

    data = json.loads(open(snapshot_json, encoding="utf-8").read())
    return {
        m["config"]["column"]: float(m["value"])
        for m in data["metrics"]
        if m.get("config", {}).get("type") == "evidently:metric_v2:ValueDrift"
    }


def test_the_report_tests_each_column_at_its_calibrated_threshold(config, tmp_path):
    reference = _stable(5_000, seed=1)
    thresholds = calibrate_thresholds(config, reference, 150)
    night = _stable(150, seed=9)
    summary, paths = drift_report(config, night, reference, tmp_path, thresholds)
    for column, found in summary.columns.items():
        assert found["threshold"] == pytest.approx(thresholds[column]["threshold"])
    # the HTML shows them too: Evidently prints "The drift threshold is 0.xx"
    page = open(paths["drift_html"], encoding="utf-8").read()
    assert f"{thresholds['normal']['threshold']:0.2f}" in page


def test_per_column_overrides_and_p_value_direction(tmp_path):
    per_column = {"normal": {"method": "ks", "threshold": 0.01}}
    config = load_config(
        write_config(
            tmp_path,
            features={"numeric": ["normal", "skewed"], "categorical": []},
            monitoring={"drift": {"per_column": per_column}},
        )
    )
    assert column_tests(config)["normal"] == ("ks", 0.01) and column_tests(config)["skewed"][0] == "wasserstein"
    reference, same, moved = _stable(3_000, seed=1), _stable(1_000, seed=2), _stable(1_000, seed=3)
    moved["normal"] += 3.0
    calm, _ = drift_report(config, same, reference, tmp_path / "calm")
    shifted, _ = drift_report(config, moved, reference, tmp_path / "moved")
    assert calm.columns["normal"]["method"] == "ks" and calm.columns["normal"]["kind"] == "p_value"
    assert not calm.columns["normal"]["drifted"] and calm.columns["normal"]["statistic"] > 0.01  # a high p-value: calm
    assert shifted.columns["normal"]["drifted"] and shifted.columns["normal"]["statistic"] < 0.01
