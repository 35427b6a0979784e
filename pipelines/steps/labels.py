"""Labels: read a night's label files and match them to the scored ids, reporting what does not fit.

Ids are matched by value whatever their stored types (int32 beside int64, text beside integers).
Coverage is matched ids over scored ids. A label repeated with the same value counts once; an id
labelled with two values, a missing or unusable label (not 0/1 for a binary model, NaN or infinite for
regression), a class the model never saw (multiclass: kept for accuracy and F1, reported), and a label for an id
that was never scored are left out of the metrics or reported, never raised.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from pipelines.core.config import PipelineConfig
from pipelines.core.errors import DataRootError
from pipelines.core.kinds import Kind
from pipelines.core.paths import LABELS
from pipelines.storage.parquet import read_parquet, read_schema
from pipelines.storage.partitions import partition_files

log = logging.getLogger(__name__)
_EXAMPLES = 5


@dataclass
class LabelSet:
    """One night's usable labels (`key` = id as matched, `target` 0/1, class text or a float), with what was left out
    and why."""

    ds: str
    labels: pd.DataFrame
    rows_read: int
    issues: list[str] = field(default_factory=list)
    fingerprint: str = ""


@dataclass
class LabelMatch:
    """Scores joined to labels, and the counts behind the coverage."""

    joined: pd.DataFrame  # columns id, score, target
    scored_ids: int
    matched_ids: int
    unscored_label_ids: int
    issues: list[str]

    @property
    def coverage(self) -> float:
        return self.matched_ids / self.scored_ids if self.scored_ids else 0.0

    def summary(self, labels: LabelSet) -> dict[str, object]:
        return {
            "fingerprint": labels.fingerprint,
            "label_rows": labels.rows_read,
            "scored_ids": self.scored_ids,
            "matched_ids": self.matched_ids,
            "unscored_label_ids": self.unscored_label_ids,
            "issues": self.issues,
        }


def fingerprint(files: list) -> str:
    """Return a digest of the label files' names, sizes and modification times (changes when labels land or change)."""
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def id_key(values: pd.Series) -> pd.Series:
    """Return ids as the text they stand for (integral floats lose their `.0`), so int, float and text ids can meet."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(str)
    if pd.api.types.is_integer_dtype(values):
        return values.astype("Int64").astype(str)
    if pd.api.types.is_float_dtype(values):
        integral = values.notna() & np.isfinite(values) & (values == values.round())
        text = values.astype(str)
        text[integral] = values[integral].astype("int64").astype(str)
        return text
    return values.astype(str)


def _examples(values: pd.Series) -> list[str]:
    return [str(v)[:40] for v in values.drop_duplicates().head(_EXAMPLES)]


def _binary(target: pd.Series) -> pd.Series:
    """Return the target as 0/1 floats; anything else (2, 'yes', NaN) becomes NaN."""
    if pd.api.types.is_bool_dtype(target):
        return target.astype(float)
    numeric = (
        pd.to_numeric(target, errors="coerce") if not pd.api.types.is_numeric_dtype(target) else target.astype(float)
    )
    return numeric.where(numeric.isin([0.0, 1.0]))


def _class_text(target: pd.Series) -> pd.Series:
    """Class labels as text (1, 1.0 and "1" are one class); missing stays NaN."""
    text = id_key(target).astype(object)
    return text.where(target.notna())


def _finite(target: pd.Series) -> pd.Series:
    """Regression labels as floats; text, NaN and infinities become NaN."""
    numbers = pd.to_numeric(target, errors="coerce") if not pd.api.types.is_numeric_dtype(target) else target
    numbers = numbers.astype(float)
    return numbers.where(np.isfinite(numbers.to_numpy()))


_USABLE = {Kind.BINARY: _binary, Kind.MULTICLASS: _class_text, Kind.REGRESSION: _finite}
_NOT_USABLE = {Kind.BINARY: "not 0/1", Kind.MULTICLASS: "not a class", Kind.REGRESSION: "not a finite number"}


def read_labels(config: PipelineConfig, ds: str, classes: list[str] | None = None) -> LabelSet:
    """Read `labels/ds=<ds>`: unreadable files and files without the id or target column are reported and skipped.

    `classes` (multiclass): the model's classes; labels of other classes are reported (they still count for
    accuracy and F1, a class the model cannot predict is an error it makes).
    """
    kind = config.model.kind
    issues, frames = [], []
    try:
        files = partition_files(config.data_root, LABELS, ds)
    except DataRootError as exc:
        files = []
        issues.append(f"{exc}: no label of this night was read")
    for file in files:
        try:
            names = read_schema(file).names
            missing = [c for c in (config.id_column, config.target) if c not in names]
            if missing:
                issues.append(f"label file {file.name} has no column {missing[0]!r}: skipped")
                continue
            raw = read_parquet(file, columns=[config.id_column, config.target]).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            issues.append(f"label file {file.name} is not readable Parquet ({str(exc).splitlines()[0][:200]}): skipped")
            continue
        # each file's ids become the text they stand for before files meet: text ids in one file and float ids in
        # another (12345 and 12345.0) must match, and a column mixing both types cannot be keyed afterwards
        frames.append(
            pd.DataFrame(
                {
                    "key": id_key(raw[config.id_column]),
                    "no_id": raw[config.id_column].isna(),
                    "target": _USABLE[kind](raw[config.target]),
                    "given": raw[config.target].astype(object),
                }
            )
        )
    empty = pd.DataFrame({"key": [], "no_id": [], "target": [], "given": []})
    every = pd.concat(frames, ignore_index=True) if frames else empty
    labels = every[["key", "target"]]
    no_id = every["no_id"].to_numpy(dtype=bool)
    if no_id.any():
        issues.append(f"{int(no_id.sum()):,} label(s) have no id: left out")
    bad = labels["target"].isna().to_numpy() & ~no_id
    if bad.any():
        shown = _examples(every.loc[bad, "given"])
        issues.append(f"{int(bad.sum()):,} label(s) are missing or {_NOT_USABLE[kind]} (for example {shown}): left out")
    valid = labels[~no_id & ~bad]
    unique = valid.drop_duplicates()
    if len(unique) < len(valid):
        issues.append(f"{len(valid) - len(unique):,} label row(s) repeat an id with the same value: counted once")
    values = unique.groupby("key")["target"].nunique()
    conflicting = values.index[values > 1]
    if len(conflicting):
        issues.append(
            f"{len(conflicting):,} id(s) are labelled with two different values (for example "
            f"{list(conflicting[:_EXAMPLES])}): left out of the metrics; fix the label export"
        )
    labels = unique[~unique["key"].isin(conflicting)]
    if kind is Kind.BINARY:
        labels = labels.astype({"target": "int64"})
    elif kind is Kind.REGRESSION:
        labels = labels.astype({"target": "float64"})
    elif classes:
        unseen = ~labels["target"].isin(classes)
        if unseen.any():
            issues.append(
                f"{int(unseen.sum()):,} label(s) name a class the model never saw in training (for example "
                f"{_examples(labels.loc[unseen, 'target'])}): they count as errors; retraining learns the class"
            )
    for issue in issues:
        log.warning("labels of %s: %s", ds, issue)
    return LabelSet(ds, labels.reset_index(drop=True), len(every), issues, fingerprint(files))


def match_labels(predictions: pd.DataFrame, labels: LabelSet) -> LabelMatch:
    """Join predictions (`id`, `score`, ...) to labels by id value; coverage = matched ids / scored ids."""
    scored = predictions.assign(key=id_key(predictions["id"]))
    joined = scored.merge(labels.labels, on="key", how="inner")
    joined = joined[[c for c in joined.columns if c != "key"]]
    unscored = int((~labels.labels["key"].isin(scored["key"])).sum())
    issues = list(labels.issues)
    if unscored:
        example = _examples(labels.labels.loc[~labels.labels["key"].isin(scored["key"]), "key"])
        issues.append(f"{unscored:,} labelled id(s) were never scored that night (for example {example}): left out")
    if len(labels.labels) and joined.empty:
        issues.append(
            f"no label id matches a scored id: label ids look like {_examples(labels.labels['key'])[:3]}, "
            f"scored ids like {_examples(scored['key'])[:3]}"
        )
    for issue in issues[len(labels.issues) :]:
        log.warning("labels of %s: %s", labels.ds, issue)
    return LabelMatch(joined.reset_index(drop=True), len(scored), len(joined), unscored, issues)
