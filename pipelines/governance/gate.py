"""The champion/challenger gate: candidate and champion on the same held-out days, a paired bootstrap, the floors."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import CI_LEVEL, Alias, Candidate, Comparison, GateResult, ModelRef, PromotionPath
from pipelines.core.errors import PipelineError
from pipelines.core.kinds import METRICS, Kind
from pipelines.core.kinds import metric as metric_spec
from pipelines.core.paths import COMPARISONS, REPORTS
from pipelines.governance.registry import Registry
from pipelines.steps.gate_page import gate_page
from pipelines.steps.performance import kind_metrics, metric_value, performance_report_by_kind
from pipelines.steps.predictions import Outputs, predict
from pipelines.steps.segments import kept_values, split
from pipelines.steps.training import load_labelled, targets
from pipelines.storage import report_store
from pipelines.storage.atomic import write_atomic, write_json_atomic
from pipelines.storage.urls import GATE_PAGE, comparison_route, model_base

log = logging.getLogger(__name__)
SEGMENT_SAMPLES = 300  # bootstrap resamples per segment (the overall comparison uses promotion.bootstrap_samples)


class PromotionError(PipelineError):
    """A promotion or rollback that the registry, the gate or the audit log does not allow."""


def paired_bootstrap(
    y: np.ndarray,
    candidate: np.ndarray | Outputs,
    champion: np.ndarray | Outputs,
    metric: str,
    threshold: float,
    samples: int,
    seed: int = 0,
    kind: Kind = Kind.BINARY,
    classes: list[str] | None = None,
) -> Comparison:
    """Return the candidate's gain over the champion on a metric and its paired bootstrap interval (CI_LEVEL).

    The gain is the improvement: candidate minus champion for a higher-is-better metric, champion minus candidate
    for a lower-is-better one (rmse), so a positive gain is always better. Arrays are binary scores.
    """
    kind, classes = Kind(kind), classes or []
    spec = metric_spec(kind, metric)
    ours = candidate if isinstance(candidate, Outputs) else Outputs(candidate, (candidate >= threshold).astype(int))
    theirs = champion if isinstance(champion, Outputs) else Outputs(champion, (champion >= threshold).astype(int))

    def gain(index: np.ndarray | slice) -> float:
        rows = np.arange(len(y))[index]
        return spec.improvement(
            metric_value(kind, metric, y[rows], ours.take(rows), threshold, classes),
            metric_value(kind, metric, y[rows], theirs.take(rows), threshold, classes),
        )

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(samples):
        idx = rng.integers(0, len(y), len(y))
        if kind.classifies and len(np.unique(y[idx])) < 2:
            continue
        value = gain(idx)
        if np.isfinite(value):
            diffs.append(value)
    point = gain(slice(None))
    if not diffs:
        raise PromotionError(f"the gate's bootstrap found no resample where {metric} is defined: too few labelled rows")
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return Comparison(difference=point, ci_low=float(low), ci_high=float(high), samples=len(diffs))


def gain_failures(config: PipelineConfig, comparison: Comparison) -> list[str]:
    """Return why the gain is not enough: below min_gain, or (require_significance) its interval reaches down to it."""
    rules = config.promotion
    gain = f"{rules.metric} gain {comparison.describe()}"
    if not metric_spec(config.model.kind, rules.metric).higher_is_better:
        gain = f"{rules.metric} gain (its reduction) {comparison.describe()}"
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
        spec = metric_spec(config.model.kind, name)
        if name not in metrics:
            failures.append(f"candidate {name} could not be measured on its held-out data (promotion.floors)")
        elif spec.misses(metrics[name], floor):
            extra = (
                " The first champion must pass the floors too: if this is the best this data allows, lower "
                f"promotion.floors.{name} in the config and retrain"
                if first
                else ""
            )
            side = "below the floor" if spec.higher_is_better else "above the ceiling"
            failures.append(f"candidate {name} {metrics[name]:.4f} is {side} {floor:g} (promotion.floors).{extra}")
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
    kind, threshold, features = config.model.kind, config.model.decision_threshold, config.features.all
    y, frame = labels_of(config, frame)
    classes = models.model_card(candidate.ref).classes
    outputs = {
        "candidate": predict(models.load_model(candidate.ref), frame[features], kind, threshold, classes or None),
        "champion": predict(
            models.load_model(champion), frame[features], kind, threshold, models.model_card(champion).classes or None
        ),
    }
    if kind is Kind.MULTICLASS:
        outputs["champion"] = _aligned(outputs["champion"], models.model_card(champion).classes, classes)
    metrics = {who: kind_metrics(kind, y, o, threshold, classes) for who, o in outputs.items()}
    rules = config.promotion
    comparison = paired_bootstrap(
        y,
        outputs["candidate"],
        outputs["champion"],
        rules.metric,
        threshold,
        rules.bootstrap_samples,
        kind=kind,
        classes=classes,
    )
    reasons = gain_failures(config, comparison) + floor_failures(config, metrics["candidate"])
    by_segment, concerns = (
        segment_comparison(config, frame, y, outputs, threshold, classes) if config.monitoring.segments else ([], [])
    )
    result = GateResult(
        passed=not reasons,
        candidate=candidate.version,
        champion=champion.version,
        evaluation_days=days,
        metrics=metrics,
        comparison=comparison,
        reasons=reasons,
        segments=by_segment,
        concerns=concerns,
        train_days={"candidate": list(candidate.train_days), "champion": sorted(trained_on)},
    )
    folder = config.work_root / REPORTS / COMPARISONS / str(result.pair)
    for who, o in outputs.items():
        result.reports |= performance_report_by_kind(
            kind,
            frame.assign(target=y, score=o.score, prediction=o.prediction),
            threshold,
            folder,
            stem=who,
            target=config.target,
        )
    result.reports["gate_html"] = str(write_gate_page(config, result, publish=False))
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


def segment_comparison(
    config: PipelineConfig,
    frame: pd.DataFrame,
    y: np.ndarray,
    outputs: dict[str, Outputs],
    threshold: float,
    classes: list[str],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Candidate against champion on each segment of the evaluation rows (monitoring.segments), and the concerns.

    A concern is a segment holding at least promotion.segment_min_share of the rows on which the candidate is clearly
    worse: the whole interval of its gain below zero. Segments below monitoring.min_segment_rows are not compared.
    """
    rules, kind = config.promotion, config.model.kind
    samples = min(rules.bootstrap_samples, SEGMENT_SAMPLES)
    rows_in_all = max(len(y), 1)
    results, concerns = [], []
    for name, rows in split(frame, kept_values(config, frame)).items():
        if len(rows) < config.monitoring.min_segment_rows:
            continue
        if kind.classifies and len(np.unique(y[rows])) < 2:
            continue
        try:
            gain = paired_bootstrap(
                y[rows],
                outputs["candidate"].take(rows),
                outputs["champion"].take(rows),
                rules.metric,
                threshold,
                samples,
                kind=kind,
                classes=classes,
            )
        except PromotionError:
            continue
        share = len(rows) / rows_in_all
        results.append({"segment": name, "rows": int(len(rows)), "share": share, **gain.model_dump()})
        if share >= rules.segment_min_share and gain.ci_high < 0:
            concerns.append(
                f"the candidate is worse on {name} ({share:.0%} of the evaluation rows): {rules.metric} gain "
                f"{gain.describe()}"
            )
    return results, concerns


def labels_of(config: PipelineConfig, frame: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The labelled rows and their labels in the kind's form (0/1, class text, floats).

    The frame comes from `load_labelled`, whose labels `read_labels` already kept to the usable ones.
    """
    return targets(config.model.kind, frame[config.target]), frame


def _aligned(outputs: Outputs, have: list[str], want: list[str]) -> Outputs:
    """A multiclass model's probabilities in another model's class order (a class it lacks has probability 0)."""
    if have == want or outputs.probabilities is None:
        return outputs
    column = {c: i for i, c in enumerate(have)}
    proba = np.column_stack(
        [outputs.probabilities[:, column[c]] if c in column else np.zeros(len(outputs)) for c in want]
    )
    return Outputs(outputs.score, outputs.prediction, proba)


def write_gate_page(config: PipelineConfig, result: GateResult, answer: str | None = None, publish: bool = True) -> Any:
    """Write the comparison's side-by-side page (again, with `answer`: what was decided, by whom); return its path."""
    folder = config.work_root / REPORTS / COMPARISONS / str(result.pair)
    links = {f"candidate v{result.candidate}": "candidate.html", f"champion v{result.champion}": "champion.html"}
    page = gate_page(result, config.model.kind, config.promotion.metric, result.train_days, links, answer)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / GATE_PAGE, lambda temp: temp.write_text(page, encoding="utf-8"))
    if publish:
        report_store.publish(config, folder, names=[GATE_PAGE])
    return folder / GATE_PAGE


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
    result.summary = gate_summary(result, config)
    return result


def promotion_path(config: PipelineConfig, gate: GateResult) -> PromotionPath:
    """Return what happens after the gate: reject, done (a first champion), ask for approval, or promote."""
    if not gate.passed:
        return PromotionPath.REJECT
    if gate.bootstrap:
        return PromotionPath.DONE
    if gate.concerns:  # better overall, clearly worse on a large segment: a person decides
        return PromotionPath.ASK_APPROVAL
    return PromotionPath.ASK_APPROVAL if config.promotion.require_approval else PromotionPath.PROMOTE


def gate_summary(gate: GateResult, config: PipelineConfig | None = None, now: datetime | None = None) -> str:
    """Return the gate's comparison as Markdown for the approval screen: both models and the difference per metric,
    the interval, the training windows and evaluation days, the answer's deadline and the side-by-side page's link."""
    if gate.comparison is None:
        return gate.summary
    kind = config.model.kind if config else None
    lines = []
    for m in gate.metrics["candidate"]:
        c, p = gate.metrics["candidate"][m], gate.metrics["champion"].get(m, float("nan"))
        spec = METRICS[Kind(kind)].get(m) if kind else None
        direction = "" if spec is None else (" (higher is better)" if spec.higher_is_better else " (lower is better)")
        lines.append(f"| {m}{direction} | {c:.4f} | {p:.4f} | {c - p:+.4f} |")
    windows = gate.train_days
    trained = (
        f"Trained on: candidate {_span(windows.get('candidate', []))}; champion {_span(windows.get('champion', []))}.\n\n"
        if windows
        else ""
    )
    deadline = ""
    if config is not None:
        hours = config.promotion.approval_timeout_hours
        due = (now or datetime.now(UTC)) + timedelta(hours=hours)
        deadline = (
            f"Answer by about {due:%Y-%m-%d %H:%M} UTC ({hours:g} hours after this step started): no answer counts "
            "as Reject, which is why Reject is preselected.\n\n"
        )
    link = (
        f"[Open the side-by-side gate page]({config.alerts.base_url}"
        f"{comparison_route(str(gate.pair), GATE_PAGE, model_base(config.page_key))})"
        if config is not None
        else f"Gate page: {gate.reports.get('gate_html', '-')}"
    )
    return (
        f"Candidate v{gate.candidate} vs champion v{gate.champion}, evaluated on {_span(gate.evaluation_days)} "
        f"({', '.join(gate.evaluation_days)})\n\n"
        f"| metric | candidate | champion | difference |\n|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
        f"{CI_LEVEL:.0%} paired bootstrap interval of the difference: {gate.comparison.describe()}.\n\n"
        + trained
        + "".join(f"**Segment concern**: {c}.\n\n" for c in gate.concerns)
        + deadline
        + link
    )


def _span(days: list[str]) -> str:
    return f"{days[0]} to {days[-1]} ({len(days)} partitions)" if days else "-"
