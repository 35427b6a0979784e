"""Gate, promotion, rejection and rollback on a real MLflow registry, with the hash-chained audit log."""

from datetime import date

import pytest

from harness import sample_data
from pipelines.core.config import load_config
from pipelines.core.contracts import Alias, Approval, Candidate, Comparison, GateResult, PromotionPath
from pipelines.core.errors import AuditIntegrityError, NoChampionError
from pipelines.flows import retraining
from pipelines.governance.audit import read_audit
from pipelines.governance.gate import compare
from pipelines.governance.promotion import PromotionError, promote, reject, reject_candidate, rollback
from pipelines.governance.registry import Registry
from pipelines.steps.training import fit_and_evaluate, load_labelled
from pipelines.surfaces.monitoring_page import render_page, resolve_model_report
from tests.conftest import write_config


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """20 labelled days; v1 bootstrapped on days 1-10, v2 trained on days 1-20, v3 on shuffled labels."""
    config = load_config(write_config(tmp_path_factory.mktemp("promotion")))
    sample_data.generate(config.data_root, date(2026, 9, 1), 20, 2000, label_delay_days=0)
    first = retraining.train_candidate(
        config, retraining.select_training_window(config, "2026-09-10"), {"reason": "boot"}
    )
    assert retraining.bootstrap_or_challenge(config, first, "run-boot") == "champion"
    better = retraining.train_candidate(config, retraining.select_training_window(config), {"reason": "drift"})
    assert retraining.bootstrap_or_challenge(config, better, "run-2") == "challenger"
    frame, digests = load_labelled(config, [date(2026, 9, d) for d in range(1, 21)])
    frame[config.target] = frame[config.target].sample(frac=1.0, random_state=1).to_numpy()
    trained = fit_and_evaluate(config, frame)
    worse_ref = Registry.open(config).log_candidate(trained, digests, {"reason": "shuffled labels"})
    worse = Candidate(
        name=worse_ref.name,
        version=worse_ref.version,
        run_id=worse_ref.run_id,
        metrics=trained.metrics,
        train_days=trained.train_days,
        holdout_days=trained.holdout_days,
    )
    return config, first, better, worse


def test_bootstrap_is_audited(lake):
    config, first, _, _ = lake
    entries = read_audit(config)
    assert entries[0].action == "bootstrap" and entries[0].to_version == first.version


def test_a_better_candidate_passes_with_the_uncertainty_shown(lake):
    config, first, better, _ = lake
    models = Registry.open(config)
    gate = compare(config, models, better, models.champion())
    assert gate.champion == first.version
    assert set(gate.evaluation_days) == set(better.holdout_days)
    assert gate.comparison.ci_low <= gate.comparison.difference <= gate.comparison.ci_high
    assert gate.passed == (gate.comparison.ci_low > config.promotion.min_gain), gate.reasons  # significance
    assert gate.metrics["candidate"]["roc_auc"] > 0.65
    for key in ("candidate_html", "champion_html", "comparison_json", "gate_html"):
        assert gate.reports[key].endswith((".html", ".json"))
    pair = f"v{better.version}_vs_v{first.version}"
    # the side-by-side page: both models, the difference and its interval, both training windows, the days
    side = resolve_model_report(config, pair, "gate.html").read_text()
    c = gate.comparison
    assert f"<b>{c.difference:+.4f}</b>, 95% paired bootstrap interval [{c.ci_low:+.4f}, {c.ci_high:+.4f}]" in side
    assert gate.train_days["candidate"] == list(better.train_days)
    assert f"{better.train_days[0]} to {better.train_days[-1]} ({len(better.train_days)} partitions)" in side
    assert f"{gate.evaluation_days[0]} to {gate.evaluation_days[-1]}" in side
    assert "<td>roc_auc <b>(the gate's metric)</b></td><td>higher is better</td>" in side
    assert "log_loss</td><td>lower is better</td>" in side and "<script" not in side
    assert 'href="candidate.html"' in side and 'href="champion.html"' in side
    assert str(resolve_model_report(config, pair, "candidate.html")) == gate.reports["candidate_html"]
    for bad_pair, name in (
        (pair, "../../monitoring/history.db"),
        ("..", "candidate.html"),
        (pair, "model.pkl"),
        ("v9_vs_v1", "candidate.html"),
    ):
        assert resolve_model_report(config, bad_pair, name) is None
    page = render_page(config, "/monitoring")
    assert "Champion history (audit log" in page and ">bootstrap<" in page


@pytest.mark.slow  # trains two models on small windows
def test_a_candidate_whose_gain_may_be_noise_is_rejected_with_its_interval(lake):
    config, first, _, _ = lake
    same = retraining.train_candidate(
        config, retraining.select_training_window(config, "2026-09-10"), {"reason": "again"}
    )
    models = Registry.open(config)
    gate = compare(config, models, same, models.champion())  # the same data and seed: a gain of exactly 0
    assert not gate.passed
    assert "roc_auc gain +0.0000 (95% CI +0.0000..+0.0000) is not significant" in gate.reasons[0]
    assert "promotion.require_significance" in gate.reasons[0]
    lenient = config.model_copy(
        update={"promotion": config.promotion.model_copy(update={"require_significance": False})}
    )
    assert compare(lenient, models, same, models.champion()).passed  # the point estimate alone would pass


def test_a_first_model_below_the_floors_is_registered_but_not_made_champion(tmp_path, lake):
    from pipelines.governance.gate import evaluate_gate, promotion_path

    config = lake[0]
    strict = load_config(write_config(tmp_path, promotion={"floors": {"roc_auc": 0.99}}))
    import shutil

    shutil.copytree(config.data_root / "incoming", strict.data_root / "incoming")
    shutil.copytree(config.data_root / "labels", strict.data_root / "labels")
    first = retraining.train_candidate(
        strict, retraining.select_training_window(strict, "2026-09-10"), {"reason": "boot"}
    )
    alias = retraining.bootstrap_or_challenge(strict, first, "run-boot")
    assert alias == "refused" and Registry.open(strict).alias_version(Alias.CHAMPION) is None
    gate = evaluate_gate(strict, first, alias)
    assert not gate.passed and promotion_path(strict, gate) == PromotionPath.REJECT
    assert "below the floor 0.99 (promotion.floors)" in gate.reasons[0]
    assert "lower promotion.floors.roc_auc in the config and retrain" in gate.reasons[0]
    assert Registry.open(strict).client.get_model_version(strict.model.registered_name, first.version)  # registered
    reject_candidate(strict, first, gate, "run-boot")
    with pytest.raises(NoChampionError) as info:  # what every night says until a model passes
        Registry.open(strict).champion()
    message = str(info.value)
    assert f"retrain_model trained v{first.version} as the first model on" in message
    assert "below the floor 0.99 (promotion.floors)" in message and "then run retrain_model again" in message
    assert "none is on record" not in message


def test_a_worse_candidate_is_rejected_and_the_champion_stays(lake):
    config, first, _, worse = lake
    champion_before = Registry.open(config).champion()
    gate = compare(config, Registry.open(config), worse, champion_before)
    assert not gate.passed
    assert any("below the floor" in r for r in gate.reasons)
    reject(config, worse.ref, "; ".join(gate.reasons), "gate", "run-3", gate)
    assert Registry.open(config).champion() == champion_before
    tags = Registry.open(config).client.get_model_version(worse.name, worse.version).tags
    assert tags["gate.passed"] == "false" and "below the floor" in tags["gate.rejected_because"]
    assert read_audit(config)[-1].action == "reject"


def test_promotion_then_rollback_are_audited(lake):
    config, first, better, worse = lake
    promote(config, better.ref, "drift on 3 nights", "alice", "run-4", None)
    assert Registry.open(config).champion().version == better.version
    assert Registry.open(config).alias_version("previous").version == first.version
    with pytest.raises(PromotionError, match="never champion"):
        rollback(config, worse.version, "try", "bob", "run-5")
    with pytest.raises(PromotionError, match="has no version '99'"):
        rollback(config, "99", "try", "bob", "run-5")
    entry = rollback(config, None, "bad promotion", "bob", "run-6")
    assert Registry.open(config).champion().version == first.version
    assert entry.from_version == better.version and entry.approved_by == "bob"
    actions = [e.action for e in read_audit(config)]
    assert actions[-2:] == ["promote", "rollback"]


def test_the_audit_log_detects_rewriting(lake, tmp_path):
    import sqlalchemy as sa

    from pipelines.storage import history

    config, *_ = lake
    forge = """UPDATE audit_log SET entry = replace(entry, '"approved_by": "alice"', '"approved_by": "mallory"')"""
    undo = """UPDATE audit_log SET entry = replace(entry, '"approved_by": "mallory"', '"approved_by": "alice"')"""
    with history.engine(config).begin() as conn:
        conn.execute(sa.text("DROP TRIGGER audit_log_no_update"))
        assert conn.execute(sa.text(forge)).rowcount >= 1
    try:
        with pytest.raises(AuditIntegrityError, match="was altered at entry"):
            read_audit(config)
    finally:
        with history.engine(config).begin() as conn:
            conn.execute(sa.text(undo))
        history._ENGINES.clear()  # the next engine puts the trigger back
    assert read_audit(config)


def test_promotion_refuses_a_failed_gate_or_a_missing_approval(lake):
    from pipelines.governance.promotion import promote_candidate

    config, _, better, worse = lake
    champion = Registry.open(config).champion()
    with pytest.raises(PromotionError, match="did not pass the gate"):
        promote_candidate(config, worse, GateResult(passed=False, candidate=worse.version), None, "run-x")
    strict = config.model_copy(update={"promotion": config.promotion.model_copy(update={"require_approval": True})})
    with pytest.raises(PromotionError, match="has no approval"):
        passed = GateResult(
            passed=True,
            candidate=better.version,
            champion=champion.version,
            comparison=Comparison(difference=0.1, ci_low=0.05, ci_high=0.15),
        )
        promote_candidate(strict, better, passed, Approval(chosen_options=["Reject"], responded_by="bob"), "run-x")
    assert Registry.open(config).champion() == champion


def test_concurrent_promotions_serialise_and_keep_the_audit_chain(lake):
    """Two processes promote at the same moment: the file lock orders them and the hash chain stays valid."""
    import multiprocessing

    config, first, better, _ = lake
    before = len(read_audit(config))
    context = multiprocessing.get_context("spawn")
    jobs = [
        context.Process(target=_promote_in_process, args=(str(config.data_root.parent / "pipeline.yaml"), c, tag))
        for c, tag in ((first, "p1"), (better, "p2"))
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
        assert job.exitcode == 0
    entries = read_audit(config)  # raises if two appends interleaved and broke the chain
    assert [e.airflow_run_id for e in entries[before:]] in (["p1", "p2"], ["p2", "p1"])
    last = entries[-1]
    assert Registry.open(config).champion().version == last.to_version
    assert entries[-1].from_version == entries[-2].to_version


def _promote_in_process(config_path, candidate, tag):
    promote(load_config(config_path), candidate.ref, "concurrency test", "pytest", tag, None)


def test_a_promotion_during_scoring_does_not_mix_versions(lake, monkeypatch):
    import pandas as pd

    from pipelines.flows import scoring
    from pipelines.storage.partitions import partition_dir

    config, first, better, _ = lake
    small = config.model_copy(update={"scoring": config.scoring.model_copy(update={"batch_rows": 1024})})
    start = Registry.open(config).champion()
    other = better if start.version == first.version else first
    real = scoring.predict_scores
    calls = {"n": 0}

    def promote_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            promote(config, other.ref, "promoted while scoring", "pytest", "mid", None)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "predict_scores", promote_midway)
    scoring.score_partition(small, "2026-09-20", start, "run-mid")
    out = pd.read_parquet(partition_dir(config.data_root, "predictions", "2026-09-20"))
    assert calls["n"] >= 2
    assert set(out["model_version"]) == {start.version}
    assert Registry.open(config).champion().version == other.version


def test_an_unanswered_or_refused_approval_is_audited_and_nothing_else_is(lake):
    from pipelines.governance.promotion import settle_approval

    config, _, _, worse = lake
    asked = config.model_copy(update={"promotion": config.promotion.model_copy(update={"require_approval": True})})
    passed = GateResult(
        passed=True,
        candidate=worse.version,
        champion="1",
        comparison=Comparison(difference=0.1, ci_low=0.05, ci_high=0.15),
    )
    before = len(read_audit(config))
    assert settle_approval(asked, None, None, None, "run-s") is None  # waited for data: nothing to settle
    assert settle_approval(asked, worse, passed.model_copy(update={"passed": False}), None, "run-s") is None
    assert settle_approval(asked, worse, passed.model_copy(update={"bootstrap": True}), None, "run-s") is None
    assert settle_approval(config, worse, passed, None, "run-s") is None  # no approval was required
    assert len(read_audit(config)) == before
    refused = settle_approval(asked, worse, passed, Approval(chosen_options=["Reject"], responded_by="bob"), "run-r")
    assert (refused.action, refused.to_version, refused.approved_by) == ("reject", worse.version, "bob")
    assert refused.reason == "approval refused (bob)" and refused.gate == passed
    page = resolve_model_report(asked, passed.pair, "gate.html")  # the gate page says which answer was given
    assert f"<b>Decision:</b> rejected by bob; v{worse.version} was not promoted" in page.read_text()
    timed_out = settle_approval(asked, worse, passed, None, "run-t")
    assert timed_out.reason == "approval refused (timeout)" and timed_out.approved_by == "timeout"
    assert f"<b>Decision:</b> no answer before the deadline; v{worse.version} was not promoted" in page.read_text()
    assert [e.airflow_run_id for e in read_audit(config)[before:]] == ["run-r", "run-t"]


def test_reject_candidate_audits_the_gates_reasons(lake):
    from pipelines.governance.promotion import reject_candidate

    config, _, _, worse = lake
    champion = Registry.open(config).champion()
    failed = GateResult(passed=False, candidate=worse.version, champion=champion.version, reasons=["a", "b"])
    entry = reject_candidate(config, worse, failed, "run-rc")
    assert (entry.action, entry.reason, entry.approved_by) == ("reject", "gate failed: a; b", "gate")
    assert entry.from_version == champion.version and entry.gate == failed
    first = reject_candidate(config, worse, failed.model_copy(update={"bootstrap": True}), "run-rc2")
    assert first.reason == "first model not made champion: a; b"
    assert Registry.open(config).champion() == champion
