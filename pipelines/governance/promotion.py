"""Alias moves: bootstrap, promotion, rejection and rollback, each audited before the alias moves."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pipelines.core.config import AUDIT_KEY_ENV_VAR, PipelineConfig
from pipelines.core.contracts import Alias, Approval, AuditAction, AuditEntry, Candidate, GateResult, ModelRef
from pipelines.core.errors import AuditIntegrityError, ChampionMissingError
from pipelines.governance import audit
from pipelines.governance.audit import audit_lock, read_audit
from pipelines.governance.gate import PromotionError, write_gate_page
from pipelines.governance.registry import REJECTED_AT_TAG, Registry
from pipelines.steps.episodes import after_promotion
from pipelines.storage.episodes import change_open

log = logging.getLogger(__name__)
__all__ = [
    "PromotionError",
    "champion_matches_audit",
    "promote",
    "promote_candidate",
    "record_bootstrap",
    "reject",
    "reject_candidate",
    "rollback",
    "settle_approval",
]


def _apply(models: Registry, entry: AuditEntry) -> None:
    """Point the aliases where an audited move says they go (idempotent: also finishes an interrupted move)."""
    if entry.action in (AuditAction.PROMOTE, AuditAction.ROLLBACK) and entry.from_version:
        models.set_alias(Alias.PREVIOUS, models.version(entry.from_version))
    models.set_alias(Alias.CHAMPION, models.version(entry.to_version))
    if entry.action == AuditAction.PROMOTE:
        challenger = models.alias_version(Alias.CHALLENGER)
        if challenger is not None and challenger.version == entry.to_version:
            models.delete_alias(Alias.CHALLENGER)


def _finish_interrupted_move(config: PipelineConfig, models: Registry) -> None:
    """If the champion alias disagrees with the audit log's last move, that move was cut short: finish it.

    Entries are written before aliases move, so the log holds the decision; it is finished only when the verified
    log and its keyed head vouch for it (read_audit raises otherwise), never from a log without a key. A champion
    alias that is missing altogether is left alone: re-establishing one is an operator action (rollback_model).
    """
    last = audit.expected_champion(read_audit(config))
    current = models.alias_version(Alias.CHAMPION)
    if last is None or current is None or current.version == last.to_version:
        return
    if not config.audit_key:
        raise AuditIntegrityError(
            f"the champion alias points at v{current.version} but the audit log's last move ({last.action} at "
            f"{last.at[:19]}) made v{last.to_version} champion, and the log is not keyed, so it cannot vouch for that "
            f"move: nothing was moved. Set {AUDIT_KEY_ENV_VAR}, check the log, and set the champion with rollback_model"
        )
    log.warning(
        "the champion alias points at v%s but the audit log's last move (%s at %s) made v%s champion: an alias move was "
        "interrupted; finishing it",
        current.version,
        last.action,
        last.at[:19],
        last.to_version,
    )
    _apply(models, last)


def _record(
    config: PipelineConfig,
    action: AuditAction,
    model: str,
    from_version: str | None,
    to_version: str,
    reason: str,
    by: str,
    run_id: str,
    gate: GateResult | None,
) -> AuditEntry:
    """Append one audited decision (call under `audit_lock`, before any alias moves)."""
    return audit.append(
        config,
        AuditEntry(
            action=action,
            model=model,
            from_version=from_version,
            to_version=to_version,
            reason=reason,
            approved_by=by,
            airflow_run_id=run_id,
            gate=gate,
        ),
    )


def champion_matches_audit(config: PipelineConfig) -> bool:
    """Return whether the champion alias is the version the audit log's last move named (both absent counts)."""
    return Registry.open(config).champion_matches(audit.expected_champion(read_audit(config)))


def promote(
    config: PipelineConfig,
    candidate: ModelRef,
    reason: str,
    approved_by: str,
    run_id: str,
    gate: GateResult | None,
    models: Registry | None = None,
) -> AuditEntry:
    """Move `champion` to the candidate and `previous` to the old champion; audit the move (the entry goes first).

    `models`: the task's open registry, if it has one.
    """
    models = models or Registry.open(config)
    with audit_lock(config):
        _finish_interrupted_move(config, models)
        old = models.champion()
        entry = _record(
            config,
            AuditAction.PROMOTE,
            candidate.name,
            old.version,
            candidate.version,
            reason,
            approved_by,
            run_id,
            gate,
        )
        _apply(models, entry)
        return entry


def reject(
    config: PipelineConfig,
    candidate: ModelRef,
    reason: str,
    decided_by: str,
    run_id: str,
    gate: GateResult | None,
    models: Registry | None = None,
) -> AuditEntry:
    """Record that a candidate was not promoted (gate failed, approval refused or timed out); champion unchanged.

    `models`: the task's open registry, if it has one.
    """
    models = models or Registry.open(config)
    with audit_lock(config):
        _finish_interrupted_move(config, models)
        models.tag(candidate, "promotion.rejected", reason)
        models.tag(candidate, REJECTED_AT_TAG, datetime.now(UTC).isoformat())
        challenger = models.alias_version(Alias.CHALLENGER)
        if challenger is not None and challenger.version == candidate.version:
            models.delete_alias(Alias.CHALLENGER)  # a rejected candidate holds no alias
        champion = models.alias_version(Alias.CHAMPION)
        return _record(
            config,
            AuditAction.REJECT,
            candidate.name,
            champion.version if champion else None,
            candidate.version,
            reason,
            decided_by,
            run_id,
            gate,
        )


def rollback(
    config: PipelineConfig, target_version: str | None, reason: str, requested_by: str, run_id: str
) -> AuditEntry:
    """Move `champion` back to `previous` (or to a named version that was champion before); audit the move.

    With the champion alias missing (deleted, or a restored registry) a named former champion is
    re-established: the audited `restore` action, the only way back once a champion existed.
    """
    from mlflow.exceptions import MlflowException

    models = Registry.open(config)
    with audit_lock(config):
        _finish_interrupted_move(config, models)
        current = models.alias_version(Alias.CHAMPION)
        if target_version is None:
            target = models.alias_version(Alias.PREVIOUS)
            if target is None or current is None:
                raise PromotionError(
                    "there is no 'previous' champion to roll back to"
                    if current is not None
                    else "the champion alias is missing: name the version to restore (target_version)"
                )
        else:
            try:
                target = models.version(str(target_version))
            except MlflowException as exc:
                raise PromotionError(
                    f"{models.name} has no version {target_version!r}: pick one from the audit log"
                ) from exc
        former = audit.former_champions(read_audit(config))
        if target.version not in former:
            raise PromotionError(
                f"version {target.version} of {models.name} was never champion: rollback only returns to a former "
                f"champion ({former})"
            )
        if current is not None and target.version == current.version:
            raise PromotionError(f"version {target.version} is already the champion")
        entry = _record(
            config,
            AuditAction.ROLLBACK if current is not None else AuditAction.RESTORE,
            models.name,
            current.version if current is not None else None,
            target.version,
            reason,
            requested_by,
            run_id,
            None,
        )
        _apply(models, entry)
        return entry


def record_bootstrap(config: PipelineConfig, models: Registry, candidate: ModelRef, run_id: str) -> AuditEntry:
    """Make the first champion (no gate: there is nothing to compare with), audited before the alias moves.

    Refused with ChampionMissingError when a former champion is on record: then the gate cannot be skipped.
    """
    with audit_lock(config):
        on_record = models.former_champion()
        if on_record:
            raise ChampionMissingError(
                f"v{candidate.version} was not made champion: the 'champion' alias is missing, but {on_record}. A new "
                "model only replaces a champion through the gate. Re-establish the champion with the rollback_model "
                f"DAG (target_version), then retrain; v{candidate.version} stays registered as 'challenger'"
            )
        entry = _record(
            config,
            AuditAction.BOOTSTRAP,
            candidate.name,
            None,
            candidate.version,
            "no champion existed",
            "retrain_model",
            run_id,
            None,
        )
        _apply(models, entry)
        return entry


def reject_candidate(config: PipelineConfig, candidate: Candidate, gate: GateResult, run_id: str) -> AuditEntry:
    """Reject a candidate the gate failed (or a first model below the floors), with the gate's reasons."""
    prefix = "first model not made champion: " if gate.bootstrap else "gate failed: "
    entry = reject(config, candidate.ref, prefix + "; ".join(gate.reasons), "gate", run_id, gate)
    if gate.pair:
        write_gate_page(
            config, gate, f"rejected by the gate; v{candidate.version} was not promoted ({entry.at[:19]} UTC)"
        )
    return entry


def settle_approval(
    config: PipelineConfig, candidate: Candidate | None, gate: GateResult | None, approval: Approval | None, run_id: str
) -> AuditEntry | None:
    """After the approval step: audit a Reject or a timeout (its default answer) and return the entry; else None.

    None as well when there was nothing to approve: no candidate or gate (the run waited for data or failed
    before the gate), a first model, a failed gate (rejected by reject_candidate), or no approval required.
    """
    if candidate is None or gate is None or gate.bootstrap or not gate.passed or not config.promotion.require_approval:
        return None
    models = Registry.open(config)
    champion = models.alias_version(Alias.CHAMPION)
    if champion is not None and champion.version == candidate.version:
        return None
    who = (approval.responded_by if approval else None) or "timeout"
    entry = reject(config, candidate.ref, f"approval refused ({who})", who, run_id, gate, models)
    said = "no answer before the deadline" if who == "timeout" else f"rejected by {who}"
    write_gate_page(config, gate, f"{said}; v{candidate.version} was not promoted ({entry.at[:19]} UTC)")
    return entry


def promote_candidate(
    config: PipelineConfig, candidate: Candidate, gate: GateResult, approval: Approval | None, run_id: str
) -> AuditEntry:
    """Promote a candidate whose gate passed (and, when required, whose approval said Approve)."""
    if gate.bootstrap or not gate.passed or gate.comparison is None:
        raise PromotionError(f"candidate v{candidate.version} did not pass the gate: it cannot be promoted")
    if config.promotion.require_approval and not (approval and approval.approved):
        raise PromotionError(f"candidate v{candidate.version} has no approval: it cannot be promoted")
    approved_by = (approval.responded_by if approval else None) or "gate (no approval required)"
    models = Registry.open(config)
    trained_because = models.model_card(candidate.ref).reason
    reason = (
        f"gate passed ({config.promotion.metric} {gate.comparison.describe()}); retrained because: {trained_because}"
    )
    entry = promote(config, candidate.ref, reason, approved_by, run_id, gate, models)
    change_open(config, lambda episode: after_promotion(episode, candidate.version, entry.at[:10]), run_id)
    how = f"approved by {approval.responded_by}" if approval and approval.approved else "passed the gate"
    write_gate_page(config, gate, f"{how}; v{candidate.version} promoted to champion at {entry.at[:19]} UTC")
    return entry
