"""Gate, promotion, rejection and rollback on a real MLflow registry, with the hash-chained audit log."""

from datetime import date

import pytest

from pipelines import registry, retraining, sample_data
from pipelines.config import load_config
from pipelines.monitoring_page import render_page, resolve_model_report
from pipelines.errors import AuditIntegrityError
from pipelines.promotion import PromotionError, evaluate_gate, promote, read_audit, reject, rollback
from pipelines.training import fit_and_evaluate, load_labelled
from tests.conftest import write_config


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """20 labelled days; v1 bootstrapped on days 1-10, v2 trained on days 1-20, v3 on shuffled labels."""
    config = load_config(write_config(tmp_path_factory.mktemp("promotion")))
    sample_data.generate(config.data_root, date(2026, 9, 1), 20, 2000, label_delay_days=0)
    first = retraining.train_candidate(config, retraining.select_training_window(config, "2026-09-10"), {"reason": "boot"})
    assert retraining.bootstrap_or_challenge(config, first, "run-boot") == "champion"
    better = retraining.train_candidate(config, retraining.select_training_window(config), {"reason": "drift"})
    assert retraining.bootstrap_or_challenge(config, better, "run-2") == "challenger"
    frame, digests = load_labelled(config, [date(2026, 9, d) for d in range(1, 21)])
    frame[config.target] = frame[config.target].sample(frac=1.0, random_state=1).to_numpy()
    trained = fit_and_evaluate(config, frame)
    worse_ref = registry.log_candidate(config, trained, digests, {"reason": "shuffled labels"})
    worse = {"name": worse_ref.name, "version": worse_ref.version, "run_id": worse_ref.run_id,
             "holdout_days": trained.holdout_days}
    return config, first, better, worse


def _ref(c):
    return registry.ModelRef(c["name"], c["version"], c["run_id"])


def test_bootstrap_is_audited(lake):
    config, first, _, _ = lake
    entries = read_audit(config)
    assert entries[0]["action"] == "bootstrap" and entries[0]["to_version"] == first["version"]


def test_a_better_candidate_passes_with_the_uncertainty_shown(lake):
    config, first, better, _ = lake
    gate = evaluate_gate(config, better, registry.champion(config))
    assert gate.champion == first["version"]
    assert set(gate.evaluation_days) == set(better["holdout_days"])
    assert gate.comparison["ci_low"] <= gate.comparison["difference"] <= gate.comparison["ci_high"]
    assert gate.passed == (gate.comparison["ci_low"] > config.promotion.min_gain), gate.reasons  # significance
    assert gate.metrics["candidate"]["roc_auc"] > 0.65
    for key in ("candidate_html", "champion_html", "comparison_json"):
        assert gate.reports[key].endswith((".html", ".json"))
    pair = f"v{better['version']}_vs_v{first['version']}"
    assert str(resolve_model_report(config, pair, "candidate.html")) == gate.reports["candidate_html"]
    for bad_pair, name in ((pair, "../../monitoring/history.db"), ("..", "candidate.html"), (pair, "model.pkl"),
                           ("v9_vs_v1", "candidate.html")):
        assert resolve_model_report(config, bad_pair, name) is None
    page = render_page(config, "/monitoring")
    assert "Champion history (audit log" in page and ">bootstrap<" in page


def test_a_candidate_whose_gain_may_be_noise_is_rejected_with_its_interval(lake):
    config, first, _, _ = lake
    same = retraining.train_candidate(config, retraining.select_training_window(config, "2026-09-10"), {"reason": "again"})
    gate = evaluate_gate(config, same, registry.champion(config))  # the same data and seed: a gain of exactly 0
    assert not gate.passed
    assert "roc_auc gain +0.0000 (95% CI +0.0000..+0.0000) is not significant" in gate.reasons[0]
    assert "promotion.require_significance" in gate.reasons[0]
    lenient = config.model_copy(update={"promotion": config.promotion.model_copy(
        update={"require_significance": False})})
    assert evaluate_gate(lenient, same, registry.champion(config)).passed  # the point estimate alone would pass


def test_a_first_model_below_the_floors_is_registered_but_not_made_champion(tmp_path, lake):
    from pipelines.promotion import gate_or_bootstrap, promotion_path

    config = lake[0]
    strict = load_config(write_config(tmp_path, promotion={"floors": {"roc_auc": 0.99}}))
    import shutil

    shutil.copytree(config.data_root / "incoming", strict.data_root / "incoming")
    shutil.copytree(config.data_root / "labels", strict.data_root / "labels")
    first = retraining.train_candidate(strict, retraining.select_training_window(strict, "2026-09-10"), {"reason": "boot"})
    alias = retraining.bootstrap_or_challenge(strict, first, "run-boot")
    assert alias == "refused" and registry.alias_version(strict, registry.CHAMPION) is None
    gate = gate_or_bootstrap(strict, first, alias)
    assert not gate["passed"] and promotion_path(strict, gate) == "reject_candidate"
    assert "below the floor 0.99 (promotion.floors)" in gate["reasons"][0]
    assert "lower promotion.floors.roc_auc in the config and retrain" in gate["reasons"][0]
    assert registry.client(strict).get_model_version(strict.model.registered_name, first["version"])  # registered


def test_a_worse_candidate_is_rejected_and_the_champion_stays(lake):
    config, first, _, worse = lake
    champion_before = registry.champion(config)
    gate = evaluate_gate(config, worse, champion_before)
    assert not gate.passed
    assert any("below the floor" in r for r in gate.reasons)
    reject(config, _ref(worse), "; ".join(gate.reasons), "gate", "run-3", gate.as_dict())
    assert registry.champion(config) == champion_before
    tags = registry.client(config).get_model_version(worse["name"], worse["version"]).tags
    assert tags["gate.passed"] == "false" and "below the floor" in tags["gate.rejected_because"]
    assert read_audit(config)[-1]["action"] == "reject"


def test_promotion_then_rollback_are_audited(lake):
    config, first, better, worse = lake
    promote(config, _ref(better), "drift on 3 nights", "alice", "run-4", {"difference": 0.01})
    assert registry.champion(config).version == better["version"]
    assert registry.alias_version(config, "previous").version == first["version"]
    with pytest.raises(PromotionError, match="never champion"):
        rollback(config, worse["version"], "try", "bob", "run-5")
    with pytest.raises(PromotionError, match="has no version '99'"):
        rollback(config, "99", "try", "bob", "run-5")
    entry = rollback(config, None, "bad promotion", "bob", "run-6")
    assert registry.champion(config).version == first["version"]
    assert entry["from_version"] == better["version"] and entry["approved_by"] == "bob"
    actions = [e["action"] for e in read_audit(config)]
    assert actions[-2:] == ["promote", "rollback"]


def test_the_audit_log_detects_rewriting(lake, tmp_path):
    config, *_ = lake
    text = config.audit_log.read_text()
    try:
        config.audit_log.write_text(text.replace('"approved_by": "alice"', '"approved_by": "mallory"'))
        with pytest.raises(AuditIntegrityError, match="was altered at line"):
            read_audit(config)
    finally:
        config.audit_log.write_text(text)


def test_promotion_refuses_a_failed_gate_or_a_missing_approval(lake):
    from pipelines.promotion import promote_after_gate

    config, _, better, worse = lake
    champion = registry.champion(config)
    with pytest.raises(PromotionError, match="did not pass the gate"):
        promote_after_gate(config, worse, {"bootstrap": False, "passed": False}, None, "run-x")
    strict = config.model_copy(update={"promotion": config.promotion.model_copy(update={"require_approval": True})})
    with pytest.raises(PromotionError, match="has no approval"):
        promote_after_gate(strict, better, {"bootstrap": False, "passed": True}, {"chosen_options": ["Reject"]}, "run-x")
    assert registry.champion(config) == champion


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
    assert [e["airflow_run_id"] for e in entries[before:]] in (["p1", "p2"], ["p2", "p1"])
    last = entries[-1]
    assert registry.champion(config).version == last["to_version"]
    assert entries[-1]["from_version"] == entries[-2]["to_version"]


def _promote_in_process(config_path, candidate, tag):
    promote(load_config(config_path), _ref(candidate), "concurrency test", "pytest", tag, None)


def test_a_promotion_during_scoring_does_not_mix_versions(lake, monkeypatch):
    import pandas as pd

    from pipelines import scoring
    from pipelines.lake import partition_dir

    config, first, better, _ = lake
    small = config.model_copy(update={"scoring": config.scoring.model_copy(update={"batch_rows": 1024})})
    start = registry.champion(config)
    other = better if start.version == first["version"] else first
    real = scoring.predict_scores
    calls = {"n": 0}

    def promote_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            promote(config, _ref(other), "promoted while scoring", "pytest", "mid", None)
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "predict_scores", promote_midway)
    scoring.score_partition(small, "2026-09-20", "run-mid")
    out = pd.read_parquet(partition_dir(config.data_root, "predictions", "2026-09-20"))
    assert calls["n"] >= 2
    assert set(out["model_version"]) == {start.version}
    assert registry.champion(config).version == other["version"]
