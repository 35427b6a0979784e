"""The retrain decision: a written policy over the monitoring history."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd

from pipelines.core.cadence import partitions_between, unit
from pipelines.core.config import PipelineConfig
from pipelines.core.contracts import Decision, Rule
from pipelines.core.kinds import Metric, metric


def drifted(config: PipelineConfig, nights: pd.DataFrame) -> pd.Series:
    """Return, per night, whether its drift share (columns drifted or with a data-quality warning) is above the limit."""
    limit = config.retraining.drift_share_threshold
    if limit is None:
        return pd.Series(False, index=nights.index)
    return nights["drift_share"].astype(float) > limit


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _worse(spec: Metric, drop: float) -> str:
    """A drop in words: absolute for metrics in [0, 1], relative for the others."""
    direction = "below" if spec.higher_is_better else "above"
    return f"{drop:.3f} {direction}" if spec.bounded else f"{100 * drop:.1f}% worse than"


def _allowed(configured: float, chance: float) -> str:
    if chance > configured:
        return f"{chance:.3g}: what one night shows by chance, above the configured {configured:g}"
    return f"{configured:g}"


def _estimate(row: pd.Series, name: str) -> float | None:
    """Tonight's estimate of a metric: the kind's estimates, or (older rows) the estimated ROC AUC column."""
    estimates = row.get("estimated_metrics")
    if isinstance(estimates, dict) and name in estimates:
        return estimates[name]
    return row.get("estimated_roc_auc") if name == "roc_auc" else None


def decide(
    config: PipelineConfig,
    history: pd.DataFrame,
    ds: str,
    model_version: str,
    champion_metrics: dict[str, float],
    trained_until: date | None,
    force: bool = False,
    noise: dict[str, float] | None = None,
) -> Decision:
    """Apply `retraining` rules to the champion's history up to `ds`; any rule that fires means retrain.

    `noise` (the model card's `metric_noise`): the drop of a metric one night shows by chance; the realised and
    estimated drop rules allow at least that much, so a noisy metric does not fire on noise.
    """
    policy = config.retraining
    reasons = ["force_retrain was set on the run"] if force else []
    rules = [Rule.FORCE] if force else []

    def fired(rule: Rule, reason: str) -> None:
        rules.append(rule)
        reasons.append(reason)

    mine = history[(history["model_version"] == model_version) & (history["ds"] <= ds)].sort_values("ds")
    baseline = champion_metrics.get(policy.metric)

    scored = mine[mine["validation_success"].fillna(False).astype(bool) & mine["drift_share"].notna()]
    k, limit = policy.drift_consecutive_nights, policy.drift_share_threshold
    if limit is not None and len(scored) >= k:
        last = scored.tail(k)
        if drifted(config, last).all() and last["ds"].iloc[-1] == ds:
            shares = ", ".join(f"{d} {s:.2f}" for d, s in zip(last["ds"], last["drift_share"]))
            fired(
                Rule.DRIFT,
                f"drift share (columns drifted or with a data-quality warning) above {limit:g} for {k} nights in a row "
                f"({shares})",
            )

    spec = metric(config.model.kind, policy.metric)
    chance = (noise or {}).get(policy.metric, 0.0)
    evaluated = mine[mine["realised_metrics"].map(lambda m: isinstance(m, dict) and policy.metric in m)]
    if len(evaluated):
        row = evaluated.iloc[-1]
        value = row["realised_metrics"][policy.metric]
        if policy.realised_floor is not None and spec.misses(value, policy.realised_floor):
            fired(
                Rule.PERFORMANCE,
                f"realised {policy.metric} {value:.3f} on {row['ds']} is "
                f"{'below the floor' if spec.higher_is_better else 'above the ceiling'} {policy.realised_floor:g}",
            )
        if policy.realised_max_drop is not None and baseline is not None and _present(baseline):
            drop, allowed = spec.drop(baseline, value), max(policy.realised_max_drop, chance)
            if drop > allowed:
                fired(
                    Rule.PERFORMANCE,
                    f"realised {policy.metric} {value:.3f} on {row['ds']} is {_worse(spec, drop)} the champion's "
                    f"held-out {baseline:.3f} (allowed {_allowed(policy.realised_max_drop, chance)})",
                )

    tonight = mine[mine["ds"] == ds]
    if policy.estimated_max_drop is not None and len(tonight) and baseline is not None and _present(baseline):
        estimate = _estimate(tonight.iloc[-1], policy.metric)
        allowed = max(policy.estimated_max_drop, chance)
        if estimate is not None and _present(estimate) and spec.drop(baseline, estimate) > allowed:
            fired(
                Rule.PERFORMANCE,
                f"estimated {policy.metric} {estimate:.3f} is {_worse(spec, spec.drop(baseline, estimate))} the "
                f"champion's held-out {baseline:.3f} (allowed {_allowed(policy.estimated_max_drop, chance)})",
            )

    if policy.max_model_age_partitions is not None and trained_until is not None:
        age = partitions_between(config, trained_until, date.fromisoformat(ds))
        if age > policy.max_model_age_partitions:
            fired(
                Rule.AGE,
                f"the champion's data ends {age} partitions ({unit(config)}s) before {ds} "
                f"(retraining.max_model_age_partitions {policy.max_model_age_partitions})",
            )
    return Decision(retrain=bool(reasons), reasons=reasons, rules=rules, ds=ds, model_version=model_version)
