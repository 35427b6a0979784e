"""Compiled trees: the champion's HistGradientBoosting compiled to a shared library (treelite + tl2cgen), verified.

A model version is compiled when it is registered (`compile_model`, never failing the registration) and the
library is logged with the platform, compiler and library versions it was built with. Scoring uses it only when
it was built for this platform, loads, and scores the model's reference sample and generated rows with missing
and unseen values in every feature within 1e-9 of scikit-learn (`load_verified`). Rows the compiled trees cannot
score the way scikit-learn does (a missing or unseen category: scikit-learn sends those the missing-value way,
the compiled categorical split does not) are scored by scikit-learn in the same pass (`predict_routed`).
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.config import PipelineConfig
from pipelines.core.kinds import Kind

log = logging.getLogger(__name__)

ARTIFACT = "compiled"  # the artifact folder of a model version's run
LIBRARY, BUILD = "model.so", "build.json"
TOLERANCE = 1e-9
UNSEEN = "\x00unseen-in-training"


@dataclass(frozen=True)
class Build:
    """How and where a compiled library was built, or why none was (`error`)."""

    platform: str
    compiler: str
    treelite: str
    tl2cgen: str
    scikit_learn: str
    seconds: float = 0.0
    trees: int = 0
    error: str | None = None

    @classmethod
    def here(cls, compiler: str = "gcc") -> Build:
        return cls(
            platform_tag(),
            compiler_version(compiler),
            _version("treelite"),
            _version("tl2cgen"),
            _version("scikit-learn"),
        )

    @classmethod
    def read(cls, folder: Path) -> Build:
        return cls(**json.loads((folder / BUILD).read_text()))


def not_compilable_reason(config: PipelineConfig) -> str:
    """Why this model is scored by scikit-learn whatever scoring.engine says ("" when it may be compiled)."""
    if config.model.external:
        return "the model was registered outside this product (model.external): scikit-learn or pyfunc scores it"
    if config.model.trainer:
        return f"model.trainer {config.model.trainer} builds the model: compiled trees cover the built-in trainer only"
    if config.model.kind is Kind.MULTICLASS:
        return "compiled trees cover binary and regression models; this multiclass model scores with scikit-learn"
    return ""


def compilable(config: PipelineConfig) -> bool:
    return not not_compilable_reason(config)


def platform_tag() -> str:
    """The platform a shared library is built for: OS, machine, C library and Python ABI."""
    libc = "-".join(platform.libc_ver()) or "unknown-libc"
    return f"{sys.platform}-{platform.machine()}-{libc}-cp{sys.version_info.major}{sys.version_info.minor}"


def compiler_version(compiler: str) -> str:
    """The first line of `<compiler> --version`, or `missing` when there is no such program."""
    path = shutil.which(compiler)
    if path is None:
        return "missing"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.splitlines() or ["unknown"])[0]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "missing"


def compile_model(model: Any, folder: Path, compiler: str = "gcc", threads: int = 0) -> Build:
    """Compile the pipeline's classifier into `folder/model.so` and describe it in `folder/build.json`.

    Never raises: a model treelite cannot import, a machine without the compiler or a failed build leaves no
    library and a build record whose `error` says why (scoring then uses scikit-learn and records that reason).
    """
    folder.mkdir(parents=True, exist_ok=True)
    build = Build.here(compiler)
    started = time.monotonic()
    trees, error = 0, None
    try:
        if build.compiler == "missing":
            raise RuntimeError(f"no C compiler {compiler!r} on this machine")
        import tl2cgen
        import treelite

        imported = treelite.sklearn.import_model(model[-1])
        trees = imported.num_tree
        # parallel_comp splits the generated C into files compiled side by side (about 2x faster on 2 cores)
        tl2cgen.export_lib(
            imported,
            toolchain=compiler,
            libpath=str(folder / LIBRARY),
            params={"parallel_comp": 8},
            nthread=threads or None,
        )
    except Exception as exc:  # noqa: BLE001  (any failure means "score with scikit-learn", with the reason)
        error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        (folder / LIBRARY).unlink(missing_ok=True)
    build = replace(build, seconds=time.monotonic() - started, trees=trees, error=error)
    (folder / BUILD).write_text(json.dumps(asdict(build), indent=2))
    if error:
        log.warning("the model could not be compiled (%s): it will be scored by scikit-learn", error)
    else:
        log.info("compiled %d trees in %.1f s (%s, %s)", trees, build.seconds, build.compiler, build.platform)
    return build


class ArrowEncoder:
    """The pipeline's column encoding done on Arrow record batches (no pandas, no Python loop over values).

    Built from the fitted OrdinalEncoder: a known category becomes its index, a null what the encoder makes of
    a missing value, anything else NaN (unseen); numeric columns pass through as float64. `load_verified` only
    uses it after it gave exactly the pipeline's own encoding on the check rows.
    """

    def __init__(self, model: Any) -> None:
        import pyarrow as pa

        columns = model[0]
        encoder = columns.named_transformers_["categorical"]
        # what the encoder makes of a missing value, per column: NaN, or the code of a learned "missing" category
        null_codes = encoder.transform(pd.DataFrame({n: [None] for n in encoder.feature_names_in_}))[0]
        self.categorical: list[tuple[str, Any, np.ndarray, float]] = []
        for name, categories, null_code in zip(encoder.feature_names_in_, encoder.categories_, null_codes, strict=True):
            text = [(i, c) for i, c in enumerate(categories) if isinstance(c, str)]
            positions = np.array([i for i, _ in text] + [np.nan], dtype=float)  # the last: not a known category
            self.categorical.append((name, pa.array([c for _, c in text], pa.string()), positions, float(null_code)))
        self.numeric = [str(c) for c in columns.transformers_[1][2]] if len(columns.transformers_) > 1 else []

    def encode(self, batch: Any) -> np.ndarray:
        import pyarrow.compute as pc

        out = np.empty((batch.num_rows, len(self.categorical) + len(self.numeric)))
        for j, (name, known, positions, null_code) in enumerate(self.categorical):
            column = batch.column(name)
            index = pc.index_in(column, value_set=known).to_numpy(zero_copy_only=False)
            index = np.where(np.isnan(index.astype(float)), len(positions) - 1, index).astype(np.int64)
            codes = positions[index]
            codes[pc.is_null(column).to_numpy(zero_copy_only=False)] = null_code
            out[:, j] = codes
        for j, name in enumerate(self.numeric, start=len(self.categorical)):
            out[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
        return out


class CompiledModel:
    """A loaded, verified library beside the scikit-learn pipeline it was compiled from."""

    def __init__(self, model: Any, predictor: Any, build: Build) -> None:
        self.model, self.predictor, self.build = model, predictor, build
        self.categorical = int(np.sum(model[-1].is_categorical_)) if model[-1].is_categorical_ is not None else 0
        self.encoder: ArrowEncoder | None = None  # set by load_verified when it encodes exactly as the pipeline

    def predict_routed(self, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the scores (positive-class probabilities, or a regressor's values) and which rows the library
        scored (the others: scikit-learn)."""
        import tl2cgen

        encoded = np.ascontiguousarray(encoded, dtype=np.float64)
        # the encoder turns a missing and an unseen category alike into NaN: those rows go to scikit-learn
        exact = ~np.isnan(encoded[:, : self.categorical]).any(axis=1)
        scores = np.empty(len(encoded))
        compiled = int(exact.sum())
        if compiled:
            rows = encoded if compiled == len(encoded) else encoded[exact]
            scores[exact] = np.asarray(self.predictor.predict(tl2cgen.DMatrix(rows))).reshape(len(rows), -1)[:, -1]
        if compiled < len(encoded):
            scores[~exact] = sklearn_scores(self.model[-1], encoded[~exact])
        return scores, exact


def sklearn_scores(estimator: Any, encoded: np.ndarray) -> np.ndarray:
    """What the compiled trees must reproduce: a classifier's positive-class probability, a regressor's value."""
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(encoded))[:, 1]
    return np.asarray(estimator.predict(encoded), dtype=float)


def load_verified(
    model: Any, folder: Path, reference: pd.DataFrame, features: list[str], threads: int = 0
) -> tuple[CompiledModel | None, str]:
    """Return the verified compiled model and "" or (None, why scikit-learn must score instead)."""
    try:
        build = Build.read(folder)
    except (OSError, ValueError, TypeError) as exc:
        return None, f"no usable build record ({type(exc).__name__}: {exc})"
    if build.error:
        return None, f"the model was not compiled at registration: {build.error}"
    if build.platform != platform_tag():
        return None, f"the library was built for {build.platform}, this worker is {platform_tag()}"
    try:
        import tl2cgen

        predictor = tl2cgen.Predictor(str(folder / LIBRARY), nthread=threads or None)
    except Exception as exc:  # noqa: BLE001  (a corrupt or foreign library: fall back, with the reason)
        return None, f"the library does not load ({type(exc).__name__}: {str(exc).strip()[:200]})"
    try:
        compiled = CompiledModel(model, predictor, build)
        rows = verification_rows(model, reference, features)
        worst, encoder = 0.0, ArrowEncoderCheck(model)
        # the check rows a chunk at a time: the encodings (several float copies of rows x features) stay small
        for start in range(0, len(rows), CHECK_CHUNK_ROWS):
            chunk = rows.iloc[start : start + CHECK_CHUNK_ROWS]
            encoded = model[:-1].transform(chunk)
            expected = sklearn_scores(model[-1], encoded)
            got, _ = compiled.predict_routed(encoded)
            difference = np.abs(got - expected)
            worst = max(worst, float(np.max(np.where(np.isnan(difference), np.inf, difference))))
            encoder.check(chunk, encoded)
    except Exception as exc:  # noqa: BLE001  (a library of another model: wrong feature count, for one)
        return None, f"the library cannot score this model's rows ({type(exc).__name__}: {str(exc).strip()[:200]})"
    if not worst <= TOLERANCE:
        return None, f"its scores differ from scikit-learn's by up to {worst:.3g} on {len(rows):,} check rows"
    log.info("compiled model verified on %s rows (max difference %.2g)", f"{len(rows):,}", worst)
    compiled.encoder = encoder.result()
    return compiled, ""


CHECK_CHUNK_ROWS = 2_000


class ArrowEncoderCheck:
    """Whether the Arrow encoder gives exactly the pipeline's encoding on every chunk of the check rows."""

    def __init__(self, model: Any) -> None:
        self.model, self.ok = model, True
        self.encoder: ArrowEncoder | None = None
        try:
            self.encoder = ArrowEncoder(model)
        except Exception as exc:  # noqa: BLE001  (an encoder it does not know: the pipeline's own encoding)
            log.info(
                "no Arrow encoding for this pipeline (%s: %s): encoding with the pipeline", type(exc).__name__, exc
            )
            self.ok = False

    def check(self, rows: pd.DataFrame, encoded: np.ndarray) -> None:
        if self.ok:
            self.ok = _verified_encoder(self.model, rows, encoded) is not None

    def result(self) -> ArrowEncoder | None:
        return self.encoder if self.ok else None


def _verified_encoder(model: Any, rows: pd.DataFrame, encoded: np.ndarray) -> ArrowEncoder | None:
    """The Arrow encoder when it gives exactly the pipeline's encoding of the check rows, else None (pandas path)."""
    import pyarrow as pa

    try:
        encoder = ArrowEncoder(model)
        numeric = {n: pa.array(rows[n].to_numpy(dtype=float, na_value=np.nan)) for n in encoder.numeric}
        text = {
            n: pa.array([v if isinstance(v, str) else None for v in rows[n].tolist()], pa.string())
            for n, *_ in encoder.categorical
        }
        batch = pa.RecordBatch.from_pydict({**text, **numeric})
        if np.array_equal(encoder.encode(batch), np.asarray(encoded, dtype=float), equal_nan=True):
            return encoder
        log.info("the Arrow encoding differs from the pipeline's on the check rows: encoding with the pipeline")
    except Exception as exc:  # noqa: BLE001  (an encoder it does not know: the pipeline's own encoding)
        log.info("no Arrow encoding for this pipeline (%s: %s): encoding with the pipeline", type(exc).__name__, exc)
    return None


def verification_rows(
    model: Any,
    reference: pd.DataFrame,
    features: list[str],
    base_rows: int = 2000,
    probe_rows: int = 6_000,
    alone_rows: int = 30_000,
) -> pd.DataFrame:
    """The reference sample, plus copies of its rows with features missing, unseen, and each known category in turn.

    Up to `alone_rows` // 600 features (50), each feature is probed alone (200 rows each way). A wider model gets
    `probe_rows` rows in which each cell is missing, unseen or (categorical) cycled through the known categories with
    a chance of 10% each: every feature is still probed in hundreds of rows, and the check's size is bounded in rows
    whatever the width (rows x features would reach gigabytes at a thousand features).
    """
    base = reference[features].head(base_rows).reset_index(drop=True)
    columns = model[0]
    encoder: Any = columns.named_transformers_.get("categorical") if hasattr(columns, "named_transformers_") else None
    fitted = hasattr(encoder, "categories_")  # an encoder of no column (no categorical feature) is never fitted
    known_by_column: dict[str, list[Any]] = (
        {c: list(k) for c, k in zip(encoder.feature_names_in_, encoder.categories_, strict=True)} if fitted else {}
    )
    if len(features) * 600 > alone_rows and len(base):
        return pd.concat([base, _random_probes(base, features, known_by_column, probe_rows)], ignore_index=True)
    variants = [base]
    few = base.head(200)
    for position, column in enumerate(features):
        missing = few.copy()
        missing[column] = None if column in known_by_column else np.nan
        unseen = few.copy()
        if column in known_by_column:
            unseen[column] = UNSEEN
            known = known_by_column[column]
            cycled = few.copy()
            cycled[column] = [known[i % len(known)] for i in range(len(cycled))] if known else None
            variants.append(cycled)
        else:
            unseen[column] = np.where(np.arange(len(unseen)) % 2 == 0, 1e12, -1e12) * (position + 1)
        variants += [missing, unseen]
    return pd.concat(variants, ignore_index=True)


def _random_probes(
    base: pd.DataFrame, features: list[str], known_by_column: dict[str, list[Any]], rows: int
) -> pd.DataFrame:
    """`rows` copies of base rows with each cell missing, unseen or cycled through the known categories (10% each)."""
    rng = np.random.default_rng(0)
    probes = base.iloc[np.arange(rows) % len(base)].reset_index(drop=True)
    for position, column in enumerate(features):
        state = rng.random(rows)
        missing, unseen, cycled = state < 0.1, (state >= 0.1) & (state < 0.2), (state >= 0.2) & (state < 0.3)
        if column in known_by_column:
            values = probes[column].astype(object).to_numpy()
            known = known_by_column[column]
            values[unseen] = UNSEEN
            if known:
                values[cycled] = [known[i % len(known)] for i in range(int(cycled.sum()))]
            values[missing] = None
        else:
            values = probes[column].to_numpy(dtype=float, na_value=np.nan).copy()
            values[unseen] = np.where(np.arange(int(unseen.sum())) % 2 == 0, 1e12, -1e12) * (position + 1)
            values[missing] = np.nan
        probes[column] = values
    return probes
