"""One alarm per problem on generated nights, through the library the DAGs call (real MLflow, history, reports).

Two worlds from the shared champion lake, each night scored, monitored, labels evaluated and decided, and a
retraining run (as retrain_model runs it) after every night that requested one:

- a lasting, harmless shift (covariate drift only): one request, once the labelled days since the onset exist;
  the candidate trained on the shifted data is not better, the shift is rebaselined (audited), and the same
  shift never requests again;
- a champion below a realised floor that retraining cannot reach: a request at once, then one trained candidate
  per moved window, one "retraining is not helping" alert, rejected candidates without alias whose artifacts
  retention removes.
"""

from datetime import date, timedelta
from pathlib import Path

import pytest

from harness import sample_data
from pipelines.core.contracts import Alias, AuditAction, EpisodeState, PromotionPath, RetrainRequest
from pipelines.flows import evaluation, nightly, retraining
from pipelines.governance import gate, promotion
from pipelines.governance.audit import read_audit
from pipelines.governance.registry import ARTIFACTS_REMOVED_TAG, REFERENCE_ARTIFACT, Registry
from pipelines.storage import episodes, history
from pipelines.surfaces import alerts
from pipelines.surfaces.monitoring_page import render_page
from tests.conftest import copy_lake, score_night

pytestmark = pytest.mark.slow  # two worlds of nightly runs: make test-fast leaves them out

FIRST = date(2026, 9, 13)  # the champion lake holds 2026-09-01 .. 09-12, labels through 09-09
ROWS = 2000


def _with(config, **sections):
    return config.model_copy(
        update={name: getattr(config, name).model_copy(update=values) for name, values in sections.items()}
    )


def _retrain(config, decision, run_id):
    """What retrain_model does on the night's request; returns (window, candidate, gate result, lesson)."""
    requests = [
        RetrainRequest(
            ds=decision.ds, reasons=decision.reasons, episode=decision.episode.id, window=decision.request_window
        )
    ]
    window = retraining.select_training_window(config, None, retraining.requested_window(requests))
    candidate = retraining.train_candidate(config, window, {"airflow_run_id": run_id, "reason": decision.ds})
    result = gate.evaluate_gate(config, candidate, retraining.bootstrap_or_challenge(config, candidate, run_id))
    rejection = None
    if gate.promotion_path(config, result) == PromotionPath.REJECT:
        rejection = promotion.reject_candidate(config, candidate, result, run_id)
    else:
        promotion.promote_candidate(config, candidate, result, None, run_id)
    lesson = retraining.learn_from_rejection(config, candidate, result, window, rejection, None, run_id)
    return window, candidate, result, lesson


def _nights(config, last, drift, labels_late=3):
    """Score, monitor, evaluate and decide each night FIRST..last; retrain after each request."""
    decisions, runs = {}, {}
    night = FIRST
    while night <= last:
        sample_data.write_day(config.data_root, night, ROWS, 7, drift, with_labels=False)
        late = night - timedelta(days=labels_late)
        sample_data.write_day(config.data_root, late, ROWS, 7, drift, with_labels=True, with_features=False)
        ds = night.isoformat()
        validated, scored = score_night(config, ds, f"run-{ds}")
        summary = nightly.monitor_night(config, validated, scored, f"run-{ds}")
        labelled = evaluation.evaluate_labels(config)
        decisions[ds] = nightly.decide_retraining(config, summary, labelled, force=False)
        if decisions[ds].request:
            runs[ds] = _retrain(config, decisions[ds], f"retrain-{ds}")
        night += timedelta(days=1)
    return decisions, runs


@pytest.fixture(scope="module")
def harmless(champion_lake, tmp_path_factory):
    config = copy_lake(champion_lake, tmp_path_factory.mktemp("harmless"))
    config = _with(
        config,
        training={"min_partitions_since_onset": 3, "holdout_partitions": 1},
        promotion={"min_gain": 0.01},
    )
    drift = sample_data.DriftSpec(start=FIRST + timedelta(days=3), covariate=True)
    decisions, runs = _nights(config, FIRST + timedelta(days=14), drift)
    return config, decisions, runs, drift.start


def test_one_lasting_shift_requests_once_when_the_labels_since_its_onset_exist(harmless):
    config, decisions, runs, onset = harmless
    k = config.retraining.drift_consecutive_nights
    opened = (onset + timedelta(days=k - 1)).isoformat()  # caught on the k-th drifted partition
    fired = sorted(ds for ds, d in decisions.items() if d.retrain)
    assert fired[0] == opened and decisions[opened].alert == "opened" and not decisions[opened].request
    ready = onset + timedelta(days=config.training.min_partitions_since_onset - 1 + config.label_delay_partitions)
    assert ready.isoformat() in decisions[opened].outcome  # the opening alert says when retraining runs
    assert [ds for ds, d in decisions.items() if d.request] == [ready.isoformat()]
    assert [ds for ds, d in decisions.items() if d.alert == "opened"] == [opened]
    assert list(runs) == [ready.isoformat()]  # one run, and it trained
    window, candidate, _, _ = runs[ready.isoformat()]
    assert window.mode == "since_drift_onset" and window.onset == onset.isoformat()
    assert candidate.train_days[0] == onset.isoformat()


def test_a_rejected_candidate_rebaselines_the_harmless_shift_and_it_fires_no_more(harmless):
    config, decisions, runs, onset = harmless
    ((asked, (window, candidate, result, lesson)),) = runs.items()
    assert not result.passed, result.reasons  # trained on the shifted data, not better
    assert lesson.action == "rebaselined" and not lesson.not_helping
    entry = lesson.rebaseline
    assert entry.action == AuditAction.REBASELINE and entry.approved_by == "gate" and entry.gate == result
    assert f"v{candidate.version}" in entry.reason and window.days[0] in entry.reason
    assert [e.action for e in read_audit(config)][-2:] == [AuditAction.REJECT, AuditAction.REBASELINE]
    models = Registry.open(config)
    champion = models.champion()
    assert models.baseline_run(champion) == entry.note
    assert Path(models.cached_artifact(champion, REFERENCE_ARTIFACT)).parts[-2] == entry.note
    after = {ds: d for ds, d in decisions.items() if ds > asked}
    assert len(after) >= 4 and not any(d.retrain or d.request or d.alert for d in after.values())
    nights = history.read_history(config).set_index("ds")
    assert (nights.loc[list(after), "drift_share"] <= config.retraining.drift_share_threshold).all()
    (episode,) = episodes.episodes(config)
    assert episode.state == EpisodeState.CLOSED and "rebaselined" in episode.outcome
    assert episode.candidates == [candidate.version] and episode.requests == 1


def test_rejected_candidates_hold_no_alias_and_are_tagged_with_why(harmless):
    config, _, runs, _ = harmless
    ((_, (_, candidate, result, _)),) = runs.items()
    models = Registry.open(config)
    assert models.alias_version(Alias.CHALLENGER) is None
    tags = models.client.get_model_version(candidate.name, candidate.version).tags
    assert tags["promotion.rejected"].startswith("gate failed: ") and result.reasons[0] in tags["promotion.rejected"]
    assert "promotion.rejected_at" in tags and ARTIFACTS_REMOVED_TAG not in tags  # kept 30 days by default


def test_the_page_shows_the_episode_and_each_night_s_request_outcome(harmless):
    config, decisions, runs, _ = harmless
    page = render_page(config, "/monitoring")
    (episode,) = episodes.episodes(config)
    assert f'id="episode-{episode.id}"' in page and "rebaselined" in page
    assert f'href="#episode-{episode.id}"' in page  # the nights of the episode link to it
    assert "Rejected candidates: 1" in page
    opened = next(d for d in decisions.values() if d.alert == "opened")
    alert = alerts.retrain_decision_alert(config, opened, "https://airflow/run")
    assert alert.links["Episode"].endswith(f"#episode-{episode.id}") and opened.outcome in alert.text()


@pytest.fixture(scope="module")
def hopeless(champion_lake, tmp_path_factory):
    config = copy_lake(champion_lake, tmp_path_factory.mktemp("hopeless"))
    config = _with(
        config,
        retraining={"realised_floor": 0.99, "drift_share_threshold": None, "retry_after_partitions": 3},
        training={"holdout_partitions": 1},
        promotion={"min_gain": 0.01, "keep_rejected_days": 0},
    )
    decisions, runs = _nights(config, FIRST + timedelta(days=9), sample_data.DriftSpec())
    return config, decisions, runs


def test_a_floor_retraining_cannot_reach_trains_once_per_moved_window_and_says_so_once(hopeless):
    config, decisions, runs = hopeless
    first = (FIRST + timedelta(days=config.label_delay_partitions)).isoformat()  # the first realised metric
    assert min(ds for ds, d in decisions.items() if d.retrain) == first
    assert decisions[first].request and decisions[first].alert == "opened"  # performance acts at once
    asked = sorted(runs)
    assert asked[0] == first and len(asked) >= 2
    for earlier, later in zip(asked, asked[1:]):
        trained_until = runs[earlier][1].holdout_days[-1]
        labelled_until = (date.fromisoformat(later) - timedelta(days=config.label_delay_partitions)).isoformat()
        moved = (date.fromisoformat(labelled_until) - date.fromisoformat(trained_until)).days
        assert moved == config.retry_after_partitions  # the next candidate only once the window moved, not before
    assert all(not result.passed for _, _, result, _ in runs.values())
    said = [ds for ds, (_, _, _, lesson) in runs.items() if lesson.not_helping]
    assert said == [first]  # one "retraining is not helping" alert for the episode
    lesson = runs[first][3]
    alert = alerts.not_helping_alert(config, lesson, "https://airflow/run")
    assert "retraining is not helping" in alert.subject and "a person has to look" in alert.subject
    assert alerts.not_helping_alert(config, runs[asked[1]][3], "r") is None
    waiting = [d for ds, d in decisions.items() if d.retrain and not d.request]
    assert waiting and all("retraining did not help" in d.outcome for d in waiting if d.ds > first)
    (episode,) = episodes.episodes(config)
    assert episode.open and episode.state == EpisodeState.BACKOFF and episode.requests == len(asked)


def test_retention_removes_rejected_artifacts_and_keeps_the_record(hopeless):
    config, _, runs = hopeless
    models = Registry.open(config)
    versions = [candidate.version for _, candidate, _, _ in runs.values()]
    cleaned = {str(v.version) for v in models.rejected_versions() if ARTIFACTS_REMOVED_TAG in v.tags}
    assert cleaned == set(versions)  # keep_rejected_days 0: each run cleans what was rejected
    for version in versions:
        run = models.client.get_run(models.version(version).run_id)
        folder = Path(run.info.artifact_uri.removeprefix("file://"))
        assert not folder.exists() or not any(folder.iterdir())
        assert run.data.metrics  # the run's record stays: metrics, tags, the audit entry
    assert {e.to_version for e in read_audit(config) if e.action == AuditAction.REJECT} == set(versions)
    assert models.alias_version(Alias.CHALLENGER) is None
    page = render_page(config, "/monitoring")
    assert f"Rejected candidates: {len(versions)}" in page and f"{len(versions)} removed so far" in page


def test_an_operator_acknowledges_a_shift_by_hand_audited_and_it_fires_no_more(champion_lake, tmp_path):
    config = copy_lake(champion_lake, tmp_path)
    drift = sample_data.DriftSpec(start=FIRST, covariate=True)
    k = config.retraining.drift_consecutive_nights
    decisions = {}
    for i in range(k + 3):
        night = FIRST + timedelta(days=i)
        sample_data.write_day(config.data_root, night, ROWS, 7, drift, with_labels=False)
        ds = night.isoformat()
        validated, scored = score_night(config, ds, f"run-{ds}")
        summary = nightly.monitor_night(config, validated, scored, f"run-{ds}")
        by = "alice" if i == k else None  # the night after the episode opened, triggered with acknowledge_drift
        decisions[ds] = nightly.decide_retraining(config, summary, [], False, by, f"run-{ds}")
    nights = sorted(decisions)
    assert decisions[nights[k - 1]].alert == "opened" and decisions[nights[k - 1]].episode.onset == nights[0]
    acknowledged = decisions[nights[k]]
    assert not acknowledged.retrain and not acknowledged.request  # the drift rule does not count that night
    entry = read_audit(config)[-1]
    assert entry.action == AuditAction.REBASELINE and entry.approved_by == "alice" and entry.airflow_run_id
    assert f"rebaselined to {nights[0]} .. {nights[k]}" in entry.reason
    (episode,) = episodes.episodes(config)
    assert not episode.open and "acknowledged (alice)" in episode.outcome
    for ds in nights[k + 1 :]:
        assert not decisions[ds].retrain and decisions[ds].episode is None, decisions[ds]
    shares = history.read_history(config).set_index("ds")["drift_share"]
    assert (shares[nights[: k + 1]] > config.retraining.drift_share_threshold).all()
    assert (shares[nights[k + 1 :]] <= config.retraining.drift_share_threshold).all()


def test_stable_data_requests_at_most_once_in_a_hundred_partitions(tmp_path):
    """100 stable generated nights through the drift statistics the nights use, the rules and the episode planner."""
    import numpy as np
    import pandas as pd

    from pipelines.core.config import load_config
    from pipelines.steps.decision import decide
    from pipelines.steps.drift import SCORE, calibrate_thresholds, column_statistics, judge_columns
    from pipelines.steps.episodes import Readiness, plan
    from tests.conftest import write_config

    config = load_config(write_config(tmp_path))
    features = config.features.all

    def night(day, rows, seed):
        frame = sample_data.generate_chunk(day, 0, rows, seed, sample_data.DriftSpec())[features]
        return frame.assign(**{SCORE: np.random.default_rng(day.toordinal()).beta(2, 6, rows)})

    reference = night(date(2026, 1, 1), 20_000, seed=1)
    thresholds = calibrate_thresholds(config, reference, ROWS)
    rows, requests, alerts_sent, episode = [], [], [], None
    for n in range(100):
        day = date(2026, 3, 1) + timedelta(days=n)
        columns, _ = column_statistics(config, night(day, ROWS, seed=7), reference, thresholds)
        judge_columns(columns, config.monitoring.drift.fdr)
        flagged = [c for c in features if columns[c]["drifted"]]
        rows.append(
            {
                "ds": day.isoformat(),
                "model_version": "1",
                "validation_success": True,
                "drift_share": len(flagged) / len(features),
                "estimated_roc_auc": 0.8,
                "estimated_metrics": {"roc_auc": 0.8},
                "realised_metrics": None,
            }
        )
        fired = decide(config, pd.DataFrame(rows), day.isoformat(), "1", {"roc_auc": 0.8}, day, False)
        episode, decision = plan(config, episode, fired, lambda rules: Readiness(True))
        if episode is not None and episode.id is None:
            episode = episode.model_copy(update={"id": len(alerts_sent) + 1})
        requests += [day] if decision.request else []
        alerts_sent += [day] if decision.alert else []
    flagged_share = sum(r["drift_share"] for r in rows) / len(rows)
    print(f"100 stable nights: mean drift share {flagged_share:.3f}, requests {requests}, alerts {alerts_sent}")
    assert len(requests) <= 1 and len(alerts_sent) <= 1
