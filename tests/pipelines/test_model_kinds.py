"""Multiclass and regression models end to end through the library: train, score, monitor, labels, gate.

Binary is covered by the rest of the suite; these pin what each other kind gets: its predictions contract, its
labels' validation, its realised metrics, its estimate before labels, and the gate on its primary metric
(lower-is-better for regression).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import START, write_config

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.core.contracts import Alias
from pipelines.core.errors import ConfigError, TrainerError
from pipelines.core.kinds import Kind
from pipelines.flows import evaluation, nightly, retraining, scoring
from pipelines.governance import gate
from pipelines.governance.registry import Registry
from pipelines.steps.labels import read_labels
from pipelines.storage import history
from pipelines.storage.partitions import partition_dir

DAYS, ROWS = 10, 1500


def _lake(folder, kind, **overrides):
    config = load_config(write_config(folder, kind=kind, **overrides))
    sample_data.generate(config.data_root, START, DAYS, ROWS, label_delay_days=3, kind=kind)
    window = retraining.select_training_window(config)
    candidate = retraining.train_candidate(config, window, {"airflow_run_id": "pytest", "reason": "bootstrap"})
    assert retraining.bootstrap_or_challenge(config, candidate) == Alias.CHAMPION
    return config, candidate


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    return _lake(tmp_path_factory.mktemp("multiclass"), "multiclass")


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    return _lake(tmp_path_factory.mktemp("regression"), "regression")


def _night(config, ds):
    validated, scored = _score(config, ds)
    return nightly.monitor_night(config, validated, scored, f"run-{ds}")


def _score(config, ds):
    validated = nightly.validate_partition(config, ds, f"run-{ds}")
    return validated, scoring.score_partition(config, ds, validated.model, f"run-{ds}")


def test_kind_defaults_choose_each_kinds_metric_and_floors(tmp_path):
    multi = load_config(write_config(tmp_path, "m.yaml", kind="multiclass"))
    regress = load_config(write_config(tmp_path, "r.yaml", kind="regression"))
    binary = load_config(write_config(tmp_path, "b.yaml"))
    assert (multi.retraining.metric, multi.promotion.metric, multi.promotion.floors) == ("macro_f1", "macro_f1", {})
    assert (regress.retraining.metric, regress.retraining.realised_floor) == ("rmse", None)
    assert (binary.retraining.metric, binary.promotion.floors, binary.retraining.realised_floor) == (
        "roc_auc",
        {"roc_auc": 0.65},
        0.65,
    )
    with pytest.raises(ConfigError, match="'roc_auc' are not regression metrics"):
        load_config(write_config(tmp_path, "x.yaml", kind="regression", promotion={"metric": "roc_auc"}))
    with pytest.raises(ConfigError, match="model.reference"):
        load_config(write_config(tmp_path, "e.yaml", model={"external": True}))


def test_multiclass_predictions_hold_the_class_its_probability_and_one_probability_per_class(multiclass):
    config, candidate = multiclass
    card = Registry.open(config).model_card(candidate.ref)
    assert card.kind == "multiclass" and card.classes == ["high", "low", "medium"]
    ds = (START + timedelta(days=DAYS - 1)).isoformat()
    _, scored = _score(config, ds)
    table = pq.read_table(scored.path)
    assert table.schema.field("prediction").type == pa.string()
    probabilities = table.column("probabilities").combine_chunks()
    assert [f.name for f in probabilities.type] == card.classes
    proba = np.column_stack([probabilities.field(i).to_numpy() for i in range(3)])
    assert np.allclose(proba.sum(axis=1), 1.0)
    top = np.asarray(card.classes)[proba.argmax(axis=1)]
    assert (table.column("prediction").to_numpy(zero_copy_only=False) == top).all()
    assert np.allclose(table.column("score").to_numpy(), proba.max(axis=1))
    assert scored.engine == "sklearn" and "this multiclass model scores with scikit-learn" in scored.engine_reason
    # another engine reads the contract as it is: DuckDB queries the struct's fields by class
    import duckdb

    top = duckdb.sql(
        f"SELECT prediction, probabilities.high AS high, score FROM read_parquet('{scored.path}') "
        "WHERE prediction = 'high' LIMIT 5"
    ).fetchall()
    assert top and all(high == score for _, high, score in top)


def test_multiclass_night_is_estimated_then_measured_and_an_unseen_class_is_reported(multiclass):
    config, _ = multiclass
    ds = (START + timedelta(days=5)).isoformat()
    summary = _night(config, ds)
    assert set(summary.estimated_metrics) == {"accuracy", "macro_f1"}
    stats = history.night(config, ds, config.model.registered_name, summary.model_version)["drift_stats"]
    assert stats["prediction"]["method"] == "jensenshannon"  # the predicted classes' shares are drift-tested
    assert stats["score"]["method"] == "wasserstein"
    # a class the model never saw, for a few ids of the night: reported, counted as errors, nothing crashes
    labels_file = partition_dir(config.data_root, "labels", ds) / "part-0000.parquet"
    frame = pd.read_parquet(labels_file)
    frame.loc[:9, "risk_tier"] = "catastrophic"
    frame.to_parquet(labels_file, index=False)
    assert any("never saw" in issue for issue in read_labels(config, ds, ["high", "low", "medium"]).issues)
    evaluation.evaluate_labels(config)
    entry = history.night(config, ds, config.model.registered_name, summary.model_version)
    realised = entry["realised_metrics"]
    assert {"accuracy", "macro_f1", "log_loss", "per_class_recall"} <= set(realised)
    assert set(realised["per_class_recall"]) == {"high", "low", "medium"}
    assert entry["metric"] == "macro_f1" and entry["realised_metric"] == pytest.approx(realised["macro_f1"])
    assert abs(summary.estimated_metrics["accuracy"] - realised["accuracy"]) < 0.1  # CBPE on unshifted data
    assert any("never saw" in issue for issue in realised["labels"]["issues"])


def test_regression_predicts_values_and_reports_nan_and_infinite_labels(regression):
    config, candidate = regression
    card = Registry.open(config).model_card(candidate.ref)
    assert card.kind == "regression" and set(candidate.metrics) >= {"mae", "rmse", "r2"}
    ds = (START + timedelta(days=6)).isoformat()
    summary = _night(config, ds)
    table = pq.read_table(partition_dir(config.data_root, "predictions", ds) / "predictions.parquet")
    assert table.schema.field("prediction").type == pa.float64()
    assert np.array_equal(table.column("prediction").to_numpy(), table.column("score").to_numpy())
    assert set(summary.estimated_metrics) == {"mae", "rmse"}  # direct loss estimation
    labels_file = partition_dir(config.data_root, "labels", ds) / "part-0000.parquet"
    frame = pd.read_parquet(labels_file)
    frame.loc[:4, "loss_amount"] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
    frame.to_parquet(labels_file, index=False)
    labels = read_labels(config, ds)
    assert any("5 label(s) are missing or not a finite number" in issue for issue in labels.issues)
    assert np.isfinite(labels.labels["target"].to_numpy()).all()
    evaluation.evaluate_labels(config)
    realised = history.night(config, ds, config.model.registered_name, summary.model_version)["realised_metrics"]
    assert {"mae", "rmse", "r2"} <= set(realised)
    assert realised["labelled_rows"] == ROWS - 5
    # the estimate is shown beside the realised value; on unshifted data it is close
    assert abs(summary.estimated_metrics["mae"] - realised["mae"]) / realised["mae"] < 0.25


def test_regression_gate_compares_a_lower_is_better_metric_and_states_it(regression):
    config, champion = regression
    window = retraining.select_training_window(config, window="sliding")
    # a worse candidate: the same window with a much weaker model (a few shallow trees)
    weak = config.model_copy(
        update={"model": config.model.model_copy(update={"hyperparameters": {"max_iter": 2, "max_depth": 1}})}
    )
    candidate = retraining.train_candidate(weak, window, {"airflow_run_id": "pytest", "reason": "weak"})
    assert candidate.metrics["rmse"] > champion.metrics["rmse"]
    result = gate.compare(config, Registry.open(config), candidate, Registry.open(config).champion())
    assert not result.passed
    assert result.comparison.difference < 0  # the gain is the rmse reduction: negative when rmse rose
    assert any("rmse gain (its reduction)" in reason for reason in result.reasons)
    assert result.metrics["candidate"]["rmse"] > result.metrics["champion"]["rmse"]


def test_a_lower_is_better_gate_passes_a_candidate_that_lowers_the_error(regression):
    config, _ = regression
    y = np.linspace(0, 100, 400)
    good, bad = y + np.random.default_rng(1).normal(0, 1, 400), y + np.random.default_rng(2).normal(0, 10, 400)
    better = gate.paired_bootstrap(
        y,
        gate.Outputs(good, good),
        gate.Outputs(bad, bad),
        "rmse",
        0.5,
        300,
        kind=Kind.REGRESSION,
    )
    assert better.difference > 0 and better.ci_low > 0
    worse = gate.paired_bootstrap(
        y, gate.Outputs(bad, bad), gate.Outputs(good, good), "rmse", 0.5, 300, kind=Kind.REGRESSION
    )
    assert worse.difference < 0 and worse.ci_high < 0


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        ("tests.user_code.trainers:raises", "raised ValueError: the feature store is down"),
        ("tests.user_code.trainers:not_an_estimator", "returned dict, which has no fit, predict, predict_proba"),
        ("tests.user_code.nowhere:linear", "cannot be imported"),
    ],
)
def test_a_trainer_that_fails_is_a_clear_error_naming_the_function(tmp_path, trainer, message):
    config = load_config(write_config(tmp_path, model={"trainer": trainer}))
    sample_data.generate(config.data_root, START, 6, 400, label_delay_days=0)
    window = retraining.select_training_window(config, window="sliding")
    with pytest.raises(TrainerError, match=message) as raised:
        retraining.train_candidate(config, window, {"reason": "test"})
    assert trainer in str(raised.value)


def test_a_user_trainer_pipeline_is_trained_registered_and_scored(tmp_path):
    config = load_config(
        write_config(tmp_path, kind="regression", model={"trainer": "tests.user_code.trainers:linear"})
    )
    sample_data.generate(config.data_root, START, 8, 600, label_delay_days=2, kind="regression")
    window = retraining.select_training_window(config)
    candidate = retraining.train_candidate(config, window, {"airflow_run_id": "pytest", "reason": "bootstrap"})
    assert retraining.bootstrap_or_challenge(config, candidate) == Alias.CHAMPION
    model = Registry.open(config).load_model(candidate.ref)
    assert type(model[-1]).__name__ == "LinearRegression"
    _, scored = _score(config, (START + timedelta(days=7)).isoformat())
    assert scored.rows == 600 and "model.trainer" in scored.engine_reason


def test_binary_kind_metrics_are_unchanged_by_the_generalisation(tmp_path):
    rows = sample_data.generate_chunk(date(2026, 9, 1), 0, 50, 7, sample_data.DriftSpec())
    assert rows["defaulted"].isin([0, 1]).all()  # the binary generator's stream is what it was


def test_the_overview_shows_one_row_per_model_with_its_kind_metric_and_link(multiclass, regression, tmp_path):
    from pipelines.core.config import ModelSource
    from pipelines.surfaces.monitoring_page import render_overview, render_page

    multi, _ = multiclass
    regress, _ = regression
    for config in (multi, regress):
        _night(config, (START + timedelta(days=8)).isoformat())
    sources = [
        ModelSource(tmp_path / "tickets.yaml", "__tickets", multi),
        ModelSource(tmp_path / "demand.yaml", "__demand", regress),
        ModelSource(tmp_path / "bad.yaml", "__bad", error="bad.yaml: <script>alert(1)</script> is not valid"),
    ]
    page = render_overview(sources, "/monitoring", {"retrain_model__demand": 2})
    rows = page.split("<tbody>")[1].split("</tr>")[:-1]
    assert len(rows) == 3
    tickets, demand, bad = rows
    assert 'href="/monitoring/model/tickets/"' in tickets and ">multiclass<" in tickets and "macro_f1" in tickets
    assert ">v1<" in tickets and (START + timedelta(days=8)).isoformat() in tickets
    assert ">regression<" in demand and "rmse" in demand and demand.endswith("<td>2</td>")
    assert "<script>" not in bad and "&lt;script&gt;" in bad
    model_page = render_page(regress, "/monitoring/model/demand", overview="/monitoring/")
    assert "realised rmse" in model_page and 'href="/monitoring/"' in model_page
    assert "/monitoring/model/demand/reports/ds=" in model_page


def test_a_shift_in_predicted_class_shares_is_output_drift_not_feature_drift(multiclass, tmp_path):
    from pipelines.steps.drift import drift_report

    config, candidate = multiclass
    reference = pd.read_parquet(Registry.open(config).cached_artifact(candidate.ref, "reference_sample.parquet"))
    current = reference.sample(n=2000, random_state=1).reset_index(drop=True)
    same, _ = drift_report(config, current, reference, tmp_path / "same")
    assert not same.columns["prediction"]["drifted"]
    current["prediction"] = "high"  # every row now predicted in one class: the features did not move
    moved, _ = drift_report(config, current, reference, tmp_path / "moved")
    assert moved.columns["prediction"]["drifted"] and moved.score_drifted
    assert "prediction" not in moved.drifted_columns and moved.share == same.share


def test_a_regression_model_is_scored_by_its_verified_compiled_trees(tmp_path):
    config = load_config(
        write_config(
            tmp_path, kind="regression", scoring={"engine": "compiled"}, model={"hyperparameters": {"max_iter": 30}}
        )
    )
    sample_data.generate(config.data_root, START, 6, 600, label_delay_days=1, kind="regression")
    window = retraining.select_training_window(config, window="sliding")
    candidate = retraining.train_candidate(config, window, {"airflow_run_id": "pytest", "reason": "bootstrap"})
    assert retraining.bootstrap_or_challenge(config, candidate) == Alias.CHAMPION
    ds = (START + timedelta(days=5)).isoformat()
    _, scored = _score(config, ds)
    assert scored.engine == "compiled" and scored.engine_rows["compiled"] > 0
    table = pq.read_table(scored.path).to_pandas()
    rows = pd.read_parquet(partition_dir(config.data_root, "incoming", ds))
    expected = Registry.open(config).load_model(candidate.ref).predict(rows[config.features.all])
    assert np.allclose(table["prediction"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert np.array_equal(table["prediction"].to_numpy(), table["score"].to_numpy())
