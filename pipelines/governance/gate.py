"""The champion/challenger gate: candidate and champion on the same held-out days, a paired bootstrap, the floors."""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import CI_LEVEL, Alias, Candidate, Comparison, GateResult, ModelRef, PromotionPath
from pipelines.core.errors import PipelineError
from pipelines.core.paths import COMPARISONS, REPORTS
from pipelines.governance.registry import Registry
from pipelines.steps.performance import classification_metrics, performance_report
from pipelines.steps.training import load_labelled
from pipelines.storage import report_store
from pipelines.storage.atomic import write_json_atomic

log = logging.getLogger(__name__)


class PromotionError(PipelineError):
    """A promotion or rollback that the registry, the gate or the audit log does not allow."""


def _metric(name: str, y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    if name == "roc_auc":
        return float(roc_auc_score(y, score))
    fn = {"precision": precision_score, "recall": recall_score, "f1": f1_score}[name]
    return float(fn(y, (score >= threshold).astype(int), zero_division=0))


def paired_bootstrap(
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    metric: str,
    threshold: float,
    samples: int,
    seed: int = 0,
) -> Comparison:
    """Return the candidate-minus-champion metric difference and its paired bootstrap interval (CI_LEVEL)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(samples):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        diffs.append(
            _metric(metric, y[idx], candidate[idx], threshold) - _metric(metric, y[idx], champion[idx], threshold)
        )
    point = _metric(metric, y, candidate, threshold) - _metric(metric, y, champion, threshold)
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return Comparison(difference=point, ci_low=float(low), ci_high=float(high), samples=len(diffs))


def gain_failures(config: PipelineConfig, comparison: Comparison) -> list[str]:
    """Return why the gain is not enough: below min_gain, or (require_significance) its interval reaches down to it."""
    rules = config.promotion
    gain = f"{rules.metric} gain {comparison.describe()}"
    if comparison.difference < rules.min_gain:
        return [f"{gain} is below the required {rules.min_gain:+.4f} (promotion.min_gain)"]
    if rules.require_significance and comparison.ci_low <= rules.min_gain:
        return [
            f"{gain} is not significant: the interval's lower end is not above promotion.min_gain "
            f"{rules.min_gain:+.4f}, so the gain may be noise (promotion.require_significance)"
        ]
    return []


def floor_failures(config: PipelineConfig, metrics: dict[str, float], first: bool = False) -> list[str]:
    """Return one sentence per promotion floor the candidate's held-out metrics miss."""
    failures = []
    for name, floor in config.promotion.floors.items():
        if metrics[name] < floor:
            extra = (
                " The first champion must pass the floors too: if this is the best this data allows, lower "
                f"promotion.floors.{name} in the config and retrain"
                if first
                else ""
            )
            failures.append(
                f"candidate {name} {metrics[name]:.4f} is below the floor {floor:g} (promotion.floors).{extra}"
            )
    return failures


def compare(config: PipelineConfig, models: Registry, candidate: Candidate, champion: ModelRef) -> GateResult:
    """Compare candidate and champion on the newest labelled days neither trained on; save the comparison."""
    trained_on = set(models.model_card(champion).train_days)
    days = [d for d in candidate.holdout_days if d not in trained_on]
    if not days:
        raise PromotionError(
            f"no labelled day is unseen by both v{candidate.version} and v{champion.version}: "
            "wait for newer labels before comparing them"
        )
    frame, _ = load_labelled(config, [date.fromisoformat(d) for d in days])
    y = frame[config.target].to_numpy()
    threshold, features = config.model.decision_threshold, config.features.all
    scores = {
        "candidate": models.load_model(candidate.ref).predict_proba(frame[features])[:, 1],
        "champion": models.load_model(champion).predict_proba(frame[features])[:, 1],
    }
    metrics = {who: classification_metrics(y, s, threshold) for who, s in scores.items()}
    rules = config.promotion
    comparison = paired_bootstrap(
        y, scores["candidate"], scores["champion"], rules.metric, threshold, rules.bootstrap_samples
    )
    reasons = gain_failures(config, comparison) + floor_failures(config, metrics["candidate"])
    result = GateResult(
        passed=not reasons,
        candidate=candidate.version,
        champion=champion.version,
        evaluation_days=days,
        metrics=metrics,
        comparison=comparison,
        reasons=reasons,
    )
    folder = config.work_root / REPORTS / COMPARISONS / str(result.pair)
    for who, s in scores.items():
        result.reports |= performance_report(frame.assign(target=y, score=s), threshold, folder, stem=who)
    write_json_atomic(folder / "comparison.json", result.model_dump(mode="json"))
    result.reports["comparison_json"] = str(folder / "comparison.json")
    report_store.publish(config, folder)
    models.tag(candidate.ref, "gate.passed", str(result.passed).lower())
    models.tag(candidate.ref, "gate.comparison", comparison.model_dump_json())
    if reasons:
        models.tag(candidate.ref, "gate.rejected_because", "; ".join(reasons))
    log.info(
        "gate v%s vs v%s on %s: %s %s",
        candidate.version,
        champion.version,
        days,
        "PASS" if result.passed else "FAIL",
        reasons,
    )
    return result


def evaluate_gate(config: PipelineConfig, candidate: Candidate, alias: Alias) -> GateResult:
    """Run the gate for a challenger; a first model has nothing to be compared with, only the floors."""
    alias = Alias(alias)  # an enum crosses XCom as its value
    if alias == Alias.CHAMPION:
        return GateResult(
            bootstrap=True,
            passed=True,
            candidate=candidate.version,
            summary="First model: no champion to compare with.",
        )
    if alias == Alias.REFUSED:
        reasons = floor_failures(config, candidate.metrics, first=True)
        return GateResult(
            bootstrap=True,
            passed=False,
            candidate=candidate.version,
            reasons=reasons,
            summary="first model below the floors: " + "; ".join(reasons),
        )
    models = Registry.open(config)
    result = compare(config, models, candidate, models.champion())
    result.summary = gate_summary(result)
    return result


def promotion_path(config: PipelineConfig, gate: GateResult) -> PromotionPath:
    """Return what happens after the gate: reject, done (a first champion), ask for approval, or promote."""
    if not gate.passed:
        return PromotionPath.REJECT
    if gate.bootstrap:
        return PromotionPath.DONE
    return PromotionPath.ASK_APPROVAL if config.promotion.require_approval else PromotionPath.PROMOTE


def gate_summary(gate: GateResult) -> str:
    """Return the gate's comparison as Markdown for the approval screen."""
    if gate.comparison is None:
        return gate.summary
    rows = "\n".join(
        f"| {m} | {gate.metrics['candidate'][m]:.4f} | {gate.metrics['champion'][m]:.4f} |"
        for m in gate.metrics["candidate"]
    )
    return (
        f"Candidate v{gate.candidate} vs champion v{gate.champion} on {', '.join(gate.evaluation_days)}\n\n"
        f"| metric | candidate | champion |\n|---|---|---|\n{rows}\n\n"
        f"{CI_LEVEL:.0%} paired bootstrap interval of the difference: {gate.comparison.describe()}.\n\n"
        f"Comparison: {gate.reports.get('comparison_json')}"
    )
