"""Champion/challenger: the gate, promotion, rejection and rollback, each recorded in a hash-chained audit log."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from pipelines import audit, registry
from pipelines.audit import audit_lock, read_audit
from pipelines.config import PipelineConfig
from pipelines.errors import ChampionMissingError, PipelineError
from pipelines.lake import REPORTS, write_json_atomic
from pipelines.training import classification_metrics, load_labelled

log = logging.getLogger(__name__)
PREVIOUS = "previous"
REFUSED = "refused"  # a first model below the floors: registered, given no alias


class PromotionError(PipelineError):
    """A promotion or rollback that the registry or the audit log does not allow."""


def _metric(name: str, y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    if name == "roc_auc":
        return float(roc_auc_score(y, score))
    fn = {"precision": precision_score, "recall": recall_score, "f1": f1_score}[name]
    return float(fn(y, (score >= threshold).astype(int), zero_division=0))


def paired_bootstrap(
    y: np.ndarray, candidate: np.ndarray, champion: np.ndarray, metric: str, threshold: float, samples: int, seed: int = 0
) -> dict[str, float]:
    """Return the candidate-minus-champion metric difference and its 95% paired bootstrap interval."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(samples):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        diffs.append(_metric(metric, y[idx], candidate[idx], threshold) - _metric(metric, y[idx], champion[idx], threshold))
    point = _metric(metric, y, candidate, threshold) - _metric(metric, y, champion, threshold)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {"difference": point, "ci_low": float(low), "ci_high": float(high), "samples": len(diffs)}


@dataclass
class GateResult:
    """The gate's verdict and the evidence behind it."""

    passed: bool
    candidate: str
    champion: str | None
    evaluation_days: list[str]
    metrics: dict[str, dict[str, float]]
    comparison: dict[str, float] | None
    reasons: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trained_days(config: PipelineConfig, ref: registry.ModelRef) -> set[str]:
    tags = registry.client(config).get_model_version(ref.name, ref.version).tags
    first, _, rest = (tags.get("training.days") or "").partition("..")
    if not first:
        return set()
    last = rest.split(" ")[0]
    days = np.arange(np.datetime64(first), np.datetime64(last) + 1)
    return {str(d) for d in days}


def evaluate_gate(config: PipelineConfig, candidate: dict[str, Any], champion: registry.ModelRef) -> GateResult:
    """Compare candidate and champion on the newest labelled days neither trained on; save the comparison."""
    from pipelines.monitoring import performance_report

    cand = registry.ModelRef(candidate["name"], candidate["version"], candidate["run_id"])
    days = [d for d in candidate["holdout_days"] if d not in _trained_days(config, champion)]
    if not days:
        raise PromotionError(
            f"no labelled day is unseen by both v{cand.version} and v{champion.version}: "
            "wait for newer labels before comparing them"
        )
    frame, _ = load_labelled(config, [date.fromisoformat(d) for d in days])
    y = frame[config.target].to_numpy()
    threshold, features = config.model.decision_threshold, config.features.all
    scores = {
        "candidate": registry.load_model(config, cand).predict_proba(frame[features])[:, 1],
        "champion": registry.load_model(config, champion).predict_proba(frame[features])[:, 1],
    }
    metrics = {who: classification_metrics(y, s, threshold) for who, s in scores.items()}
    rules = config.promotion
    comparison = paired_bootstrap(y, scores["candidate"], scores["champion"], rules.metric, threshold, rules.bootstrap_samples)
    reasons = gain_failures(config, comparison) + floor_failures(config, metrics["candidate"])
    folder = config.data_root / REPORTS / "models" / f"v{cand.version}_vs_v{champion.version}"
    paths = {}
    for who, s in scores.items():
        paths |= performance_report(config, frame.assign(target=y, score=s), folder, stem=who)
    result = GateResult(not reasons, cand.version, champion.version, days, metrics, comparison, reasons, paths)
    write_json_atomic(folder / "comparison.json", result.as_dict())
    result.reports["comparison_json"] = str(folder / "comparison.json")
    client = registry.client(config)
    client.set_model_version_tag(cand.name, cand.version, "gate.passed", str(result.passed).lower())
    client.set_model_version_tag(cand.name, cand.version, "gate.comparison", json.dumps(comparison))
    if reasons:
        client.set_model_version_tag(cand.name, cand.version, "gate.rejected_because", "; ".join(reasons)[:4900])
    log.info("gate v%s vs v%s on %s: %s %s", cand.version, champion.version, days, "PASS" if result.passed else "FAIL", reasons)
    return result


def gain_failures(config: PipelineConfig, comparison: dict[str, float]) -> list[str]:
    """Return why the gain is not enough: below min_gain, or (require_significance) its interval reaches down to it."""
    rules = config.promotion
    gain = (f"{rules.metric} gain {comparison['difference']:+.4f} (95% CI {comparison['ci_low']:+.4f}.."
            f"{comparison['ci_high']:+.4f})")
    if comparison["difference"] < rules.min_gain:
        return [f"{gain} is below the required {rules.min_gain:+.4f} (promotion.min_gain)"]
    if rules.require_significance and comparison["ci_low"] <= rules.min_gain:
        return [f"{gain} is not significant: the interval's lower end is not above promotion.min_gain "
                f"{rules.min_gain:+.4f}, so the gain may be noise (promotion.require_significance)"]
    return []


def floor_failures(config: PipelineConfig, metrics: dict[str, float], first: bool = False) -> list[str]:
    """Return one sentence per promotion floor the candidate's held-out metrics miss."""
    failures = []
    for name, floor in config.promotion.floors.items():
        if metrics[name] < floor:
            extra = (" The first champion must pass the floors too: if this is the best this data allows, lower "
                     f"promotion.floors.{name} in the config and retrain" if first else "")
            failures.append(f"candidate {name} {metrics[name]:.4f} is below the floor {floor:g} (promotion.floors).{extra}")
    return failures


def _apply(config: PipelineConfig, entry: dict[str, Any]) -> None:
    """Point the aliases where an audited move says they go (idempotent: also finishes an interrupted move)."""
    name = entry["model"]
    if entry["action"] in ("promote", "rollback") and entry.get("from_version"):
        registry.set_alias(config, PREVIOUS, _ref(config, name, entry["from_version"]))
    registry.set_alias(config, registry.CHAMPION, _ref(config, name, entry["to_version"]))
    if entry["action"] == "promote":
        challenger = registry.alias_version(config, registry.CHALLENGER)
        if challenger is not None and challenger.version == str(entry["to_version"]):
            registry.client(config).delete_registered_model_alias(name, registry.CHALLENGER)


def _ref(config: PipelineConfig, name: str, version: str) -> registry.ModelRef:
    mv = registry.client(config).get_model_version(name, str(version))
    return registry.ModelRef(name, str(mv.version), mv.run_id)


def _finish_interrupted_move(config: PipelineConfig) -> None:
    """If the champion alias disagrees with the audit log's last move, that move was cut short: finish it.

    Entries are written before aliases move, so the log holds the decision. A champion alias that is
    missing altogether is left alone: re-establishing one is an operator action (rollback_model).
    """
    last = audit.expected_champion(read_audit(config))
    current = registry.alias_version(config, registry.CHAMPION)
    if last is None or current is None or current.version == str(last["to_version"]):
        return
    log.warning(
        "the champion alias points at v%s but the audit log's last move (%s at %s) made v%s champion: an alias move was "
        "interrupted; finishing it", current.version, last["action"], last["at"][:19], last["to_version"],
    )
    _apply(config, last)


def champion_matches_audit(config: PipelineConfig) -> bool:
    """Return whether the champion alias is the version the audit log's last move named (both absent counts)."""
    last = audit.expected_champion(read_audit(config))
    current = registry.alias_version(config, registry.CHAMPION)
    return (last is None and current is None) or (
        last is not None and current is not None and current.version == str(last["to_version"])
    )


def promote(
    config: PipelineConfig, candidate: registry.ModelRef, reason: str, approved_by: str, run_id: str, gate: dict | None
) -> dict[str, Any]:
    """Move `champion` to the candidate and `previous` to the old champion; audit the move (the entry goes first)."""
    with audit_lock(config):
        _finish_interrupted_move(config)
        old = registry.champion(config)
        entry = audit.append(config, {
            "action": "promote", "model": candidate.name, "from_version": old.version,
            "to_version": candidate.version, "reason": reason, "approved_by": approved_by, "airflow_run_id": run_id,
            "gate": gate,
        })
        _apply(config, entry)
        return entry


def reject(config: PipelineConfig, candidate: registry.ModelRef, reason: str, decided_by: str, run_id: str, gate: dict | None) -> dict[str, Any]:
    """Record that a candidate was not promoted (gate failed, approval refused or timed out); champion unchanged."""
    with audit_lock(config):
        _finish_interrupted_move(config)
        registry.client(config).set_model_version_tag(candidate.name, candidate.version, "promotion.rejected", reason[:4900])
        champion = registry.alias_version(config, registry.CHAMPION)
        return audit.append(config, {
            "action": "reject", "model": candidate.name, "from_version": champion.version if champion else None,
            "to_version": candidate.version, "reason": reason, "approved_by": decided_by, "airflow_run_id": run_id,
            "gate": gate,
        })


def rollback(config: PipelineConfig, target_version: str | None, reason: str, requested_by: str, run_id: str) -> dict[str, Any]:
    """Move `champion` back to `previous` (or to a named version that was champion before); audit the move.

    With the champion alias missing (deleted, or a restored registry) a named former champion is
    re-established: the audited `restore` action, the only way back once a champion existed.
    """
    from mlflow.exceptions import MlflowException

    with audit_lock(config):
        _finish_interrupted_move(config)
        name = config.model.registered_name
        current = registry.alias_version(config, registry.CHAMPION)
        if target_version is None:
            target = registry.alias_version(config, PREVIOUS)
            if target is None or current is None:
                raise PromotionError(
                    "there is no 'previous' champion to roll back to" if current is not None else
                    "the champion alias is missing: name the version to restore (target_version)"
                )
        else:
            try:
                target = _ref(config, name, str(target_version))
            except MlflowException as exc:
                raise PromotionError(f"{name} has no version {target_version!r}: pick one from the audit log") from exc
        former = audit.former_champions(read_audit(config))
        if target.version not in former:
            raise PromotionError(
                f"version {target.version} of {name} was never champion: rollback only returns to a former "
                f"champion ({former})"
            )
        if current is not None and target.version == current.version:
            raise PromotionError(f"version {target.version} is already the champion")
        entry = audit.append(config, {
            "action": "rollback" if current is not None else "restore", "model": name,
            "from_version": current.version if current is not None else None, "to_version": target.version,
            "reason": reason, "approved_by": requested_by, "airflow_run_id": run_id, "gate": None,
        })
        _apply(config, entry)
        return entry


def record_bootstrap(config: PipelineConfig, candidate: registry.ModelRef, run_id: str) -> dict[str, Any]:
    """Make the first champion (no gate: there is nothing to compare with), audited before the alias moves.

    Refused with ChampionMissingError when a former champion is on record: then the gate cannot be skipped.
    """
    with audit_lock(config):
        on_record = registry.former_champion(config)
        if on_record:
            raise ChampionMissingError(
                f"v{candidate.version} was not made champion: the 'champion' alias is missing, but {on_record}. A new "
                "model only replaces a champion through the gate. Re-establish the champion with the rollback_model "
                f"DAG (target_version), then retrain; v{candidate.version} stays registered as 'challenger'"
            )
        entry = audit.append(config, {
            "action": "bootstrap", "model": candidate.name, "from_version": None, "to_version": candidate.version,
            "reason": "no champion existed", "approved_by": "retrain_model", "airflow_run_id": run_id, "gate": None,
        })
        _apply(config, entry)
        return entry


def gate_or_bootstrap(config: PipelineConfig, candidate: dict[str, Any], alias: str) -> dict[str, Any]:
    """Run the gate for a challenger; a first model has nothing to be compared with, only the floors."""
    if alias == registry.CHAMPION:
        return {"bootstrap": True, "passed": True, "candidate": candidate["version"], "summary": "first model"}
    if alias == REFUSED:
        reasons = floor_failures(config, candidate["metrics"], first=True)
        return {"bootstrap": True, "passed": False, "candidate": candidate["version"], "reasons": reasons,
                "summary": "first model below the floors: " + "; ".join(reasons)}
    champion = registry.champion(config)
    gate = {"bootstrap": False, **evaluate_gate(config, candidate, champion).as_dict()}
    return gate | {"summary": gate_summary(gate)}


def promotion_path(config: PipelineConfig, gate: dict[str, Any]) -> str:
    """Return the next task of retrain_model: done, reject_candidate, approve_promotion or auto_approve."""
    if not gate["passed"]:
        return "reject_candidate"
    if gate["bootstrap"]:
        return "done"
    return "approve_promotion" if config.promotion.require_approval else "auto_approve"


def gate_summary(gate: dict[str, Any]) -> str:
    """Return the gate's comparison as Markdown for the approval screen."""
    if gate.get("bootstrap"):
        return "First model: no champion to compare with."
    rows = "\n".join(
        f"| {m} | {gate['metrics']['candidate'][m]:.4f} | {gate['metrics']['champion'][m]:.4f} |"
        for m in gate["metrics"]["candidate"]
    )
    c = gate["comparison"]
    return (
        f"Candidate v{gate['candidate']} vs champion v{gate['champion']} on {', '.join(gate['evaluation_days'])}\n\n"
        f"| metric | candidate | champion |\n|---|---|---|\n{rows}\n\n"
        f"Difference {c['difference']:+.4f}, 95% paired bootstrap interval {c['ci_low']:+.4f}..{c['ci_high']:+.4f}.\n\n"
        f"Comparison: {gate['reports'].get('comparison_json')}"
    )


def settle_unapproved(
    config: PipelineConfig, candidate: dict[str, Any], gate: dict[str, Any], approval: dict[str, Any] | None, run_id: str
) -> dict[str, Any] | None:
    """After the approval step: audit a Reject or a timeout (its default answer) and return the entry; else None."""
    if gate.get("bootstrap") or not gate.get("passed") or not config.promotion.require_approval:
        return None
    champion = registry.alias_version(config, registry.CHAMPION)
    if champion is not None and champion.version == candidate["version"]:
        return None
    who = _responder(approval) or "timeout"
    ref = registry.ModelRef(candidate["name"], candidate["version"], candidate["run_id"])
    return reject(config, ref, f"approval refused ({who})", str(who), run_id, gate)


def _responder(approval: dict[str, Any] | None) -> str | None:
    """Return who answered the approval step (name, else id); None when nobody did (timeout or no step)."""
    user = (approval or {}).get("responded_by_user")
    if isinstance(user, dict):
        return user.get("name") or user.get("id")
    return user or None


def promote_after_gate(
    config: PipelineConfig, candidate: dict[str, Any], gate: dict[str, Any], approval: dict[str, Any] | None, run_id: str
) -> dict[str, Any]:
    """Promote a candidate whose gate passed (and, when required, whose approval said Approve)."""
    if not gate or gate.get("bootstrap") or not gate.get("passed"):
        raise PromotionError(f"candidate v{candidate['version']} did not pass the gate: it cannot be promoted")
    if config.promotion.require_approval and (approval or {}).get("chosen_options") != ["Approve"]:
        raise PromotionError(f"candidate v{candidate['version']} has no approval: it cannot be promoted")
    approved_by = _responder(approval) or "gate (no approval required)"
    ref = registry.ModelRef(candidate["name"], candidate["version"], candidate["run_id"])
    trained_because = registry.client(config).get_model_version(ref.name, ref.version).tags.get("reason", "unknown")
    c = gate["comparison"]
    reason = (
        f"gate passed ({config.promotion.metric} {c['difference']:+.4f}, 95% CI {c['ci_low']:+.4f}..{c['ci_high']:+.4f}); "
        f"retrained because: {trained_because}"
    )
    return promote(config, ref, reason, str(approved_by), run_id, gate)
