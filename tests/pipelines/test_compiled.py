"""Compiled trees (treelite + tl2cgen): equal to scikit-learn where used, and a fallback with its reason otherwise."""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipelines.governance.registry import REFERENCE_ARTIFACT, Registry
from pipelines.steps import compiled
from tests.conftest import copy_lake, score_with_champion


@pytest.fixture(scope="module")
def demo(champion_lake, tmp_path_factory):
    """The demo champion, compiled once, and its reference sample."""
    models = Registry.open(champion_lake)
    ref = models.champion()
    model = models.load_model(ref)
    folder = tmp_path_factory.mktemp("compiled") / compiled.ARTIFACT
    build = compiled.compile_model(model, folder)
    reference = pd.read_parquet(models.cached_artifact(ref, REFERENCE_ARTIFACT))
    return model, folder, build, reference, champion_lake.features.all


@pytest.fixture(scope="module")
def categorical_model(tmp_path_factory):
    """A model whose splits are on two categorical features (one with many levels), 5% of values missing."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    rng = np.random.default_rng(7)
    n = 20_000
    frame = pd.DataFrame(
        {
            "colour": rng.choice(["red", "green", "blue", "amber"], n),
            "city": rng.choice([f"c{i}" for i in range(40)], n),
            "x": rng.normal(size=n),
            "y": rng.normal(size=n),
        }
    )
    effect = frame["colour"].map({"red": 1.5, "green": -1.0, "blue": 0.2, "amber": -0.4})
    effect += frame["city"].str[1:].astype(int).mod(5).sub(2) * 0.6
    label = (rng.random(n) < 1 / (1 + np.exp(-(effect + frame["x"])))).astype(int)
    for column in frame:  # NaN, not None: the encoder then treats a missing category as missing, not as a level
        frame.loc[rng.random(n) < 0.05, column] = np.nan
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    columns = ColumnTransformer(
        [("categorical", encoder, ["colour", "city"]), ("numeric", "passthrough", ["x", "y"])],
        verbose_feature_names_out=False,
    )
    classifier = HistGradientBoostingClassifier(categorical_features=[0, 1], max_iter=60, random_state=0)
    model = Pipeline([("columns", columns), ("classifier", classifier)]).fit(frame, label)
    folder = tmp_path_factory.mktemp("categorical") / compiled.ARTIFACT
    build = compiled.compile_model(model, folder)
    return model, folder, build, frame.head(3000), list(frame.columns)


def _rows_of_every_kind(reference, features, categorical):
    """Reference rows, and copies with a missing number, a missing category and a category unseen in training."""
    base = reference[features].head(500).reset_index(drop=True)
    numeric = [f for f in features if f not in categorical]
    kinds = {"reference": base}
    kinds["missing numeric"] = base.assign(**{numeric[0]: np.nan, numeric[-1]: np.nan})
    kinds["missing category"] = base.assign(**{categorical[0]: None})
    kinds["unseen category"] = base.assign(**{categorical[-1]: "never-seen-in-training"})
    return kinds


@pytest.mark.parametrize("which", ["demo", "categorical_model"])
def test_compiled_scores_equal_scikit_learn_on_every_kind_of_row(request, which):
    model, folder, build, reference, features = request.getfixturevalue(which)
    assert build.error is None and build.trees > 0
    assert (folder / compiled.LIBRARY).is_file()
    fast, reason = compiled.load_verified(model, folder, reference, features)
    assert reason == "" and fast is not None
    assert fast.encoder is not None  # the Arrow encoding matched the pipeline's on the check rows
    categorical = list(model[0].named_transformers_["categorical"].feature_names_in_)
    for kind, rows in _rows_of_every_kind(reference, features, categorical).items():
        encoded = model[:-1].transform(rows)
        expected = model[-1].predict_proba(encoded)[:, 1]
        batch = pa.RecordBatch.from_pydict(
            {c: pa.array([v if isinstance(v, str) else None for v in rows[c]], pa.string()) for c in categorical}
            | {c: pa.array(rows[c].to_numpy(dtype=float)) for c in features if c not in categorical}
        )
        assert np.array_equal(fast.encoder.encode(batch), np.asarray(encoded, float), equal_nan=True), kind
        got, by_compiled = fast.predict_routed(encoded)
        assert np.abs(got - expected).max() <= 1e-9, kind
        # a category the encoder does not know (unseen, or missing when training had none) is NaN once encoded:
        # such rows go to scikit-learn in the same pass; every other row, a missing number included, is compiled
        unknown = np.isnan(np.asarray(encoded, dtype=float)[:, : len(categorical)]).any(axis=1)
        assert (by_compiled == ~unknown).all(), kind
        if kind in ("reference", "missing numeric"):
            assert by_compiled.mean() > 0.8, kind
        if kind == "unseen category":
            assert not by_compiled.any(), kind


def test_without_routing_the_compiled_trees_differ_on_unseen_categories(categorical_model):
    """Why rows are routed: the compiled categorical split sends an unseen category another way than sklearn."""
    import tl2cgen

    model, folder, _, reference, features = categorical_model
    rows = reference[features].head(2000).assign(colour="never-seen", city="never-seen")
    encoded = np.ascontiguousarray(model[:-1].transform(rows), dtype=np.float64)
    raw = np.asarray(tl2cgen.Predictor(str(folder / compiled.LIBRARY)).predict(tl2cgen.DMatrix(encoded))).ravel()
    assert np.abs(raw - model[-1].predict_proba(encoded)[:, 1]).max() > 1e-6


@pytest.mark.parametrize("alone_rows", [30_000, 0])  # each feature alone; a wide model's bounded random probes
def test_verification_rows_hold_missing_and_unseen_values_in_every_feature(demo, alone_rows):
    model, _, _, reference, features = demo
    probe_rows = 1_500
    rows = compiled.verification_rows(model, reference, features, probe_rows=probe_rows, alone_rows=alone_rows)
    if not alone_rows:  # bounded in rows whatever the width, and every feature probed many times
        assert len(rows) == min(2000, len(reference)) + probe_rows
        probes = rows.tail(probe_rows)
        assert all(probes[f].isna().sum() >= 0.05 * probe_rows for f in features)
    encoder = model[0].named_transformers_["categorical"]
    known = dict(zip(encoder.feature_names_in_, encoder.categories_, strict=True))
    for feature in features:
        values = rows[feature]
        assert values.isna().any(), feature
        if feature in known:
            assert (values == compiled.UNSEEN).any(), feature
            assert {k for k in known[feature] if pd.notna(k)} <= set(values.tolist()), feature  # each is checked
        else:
            assert (values.abs() >= 1e12).any(), feature


def _copy(build_folder, tmp_path, change):
    folder = tmp_path / compiled.ARTIFACT
    shutil.copytree(build_folder, folder)
    change(folder)
    return folder


def test_a_library_for_another_platform_is_not_used(demo, tmp_path):
    model, built, _, reference, features = demo

    def elsewhere(folder):
        record = json.loads((folder / compiled.BUILD).read_text())
        (folder / compiled.BUILD).write_text(json.dumps(record | {"platform": "darwin-arm64-cp311"}))

    fast, reason = compiled.load_verified(model, _copy(built, tmp_path, elsewhere), reference, features)
    assert fast is None and reason.startswith("the library was built for darwin-arm64-cp311, this worker is linux")


def test_a_corrupted_library_is_not_used(demo, tmp_path):
    model, built, _, reference, features = demo
    folder = _copy(built, tmp_path, lambda f: (f / compiled.LIBRARY).write_bytes(b"\x7fELF not really"))
    fast, reason = compiled.load_verified(model, folder, reference, features)
    assert fast is None and reason.startswith("the library does not load")


def test_a_library_of_another_model_fails_verification(demo, categorical_model):
    model, _, _, reference, features = demo
    _, other_folder, _, _, _ = categorical_model
    fast, reason = compiled.load_verified(model, other_folder, reference, features)
    assert fast is None and reason.startswith("the library cannot score this model's rows (TL2cgenError")


def test_a_machine_without_a_compiler_records_why_and_builds_nothing(demo, tmp_path):
    model, _, _, reference, features = demo
    build = compiled.compile_model(model, tmp_path / compiled.ARTIFACT, compiler="no-such-cc")
    assert build.error == "RuntimeError: no C compiler 'no-such-cc' on this machine"
    assert build.compiler == "missing" and not (tmp_path / compiled.ARTIFACT / compiled.LIBRARY).exists()
    fast, reason = compiled.load_verified(model, tmp_path / compiled.ARTIFACT, reference, features)
    assert fast is None and reason == f"the model was not compiled at registration: {build.error}"


@pytest.fixture
def auto_lake(champion_lake, tmp_path):
    """A copy of the champion lake scored with scoring.engine auto."""
    config = copy_lake(champion_lake, tmp_path)
    return config.model_copy(update={"scoring": config.scoring.model_copy(update={"engine": "auto"})})


def _install(config, build_folder, change=lambda folder: None):
    """Put a compiled library where the registry keeps the champion's downloaded artifacts."""
    ref = Registry.open(config).champion()
    target = config.data_root / "monitoring" / "models" / ref.run_id / compiled.ARTIFACT
    shutil.copytree(build_folder, target)
    change(target)


def test_scoring_uses_the_verified_library_and_records_rows_per_engine(auto_lake, demo):
    _install(auto_lake, demo[1])
    scored = score_with_champion(auto_lake, "2026-09-11", "run-compiled")
    assert scored.engine == "compiled" and scored.engine_reason == ""
    assert sum(scored.engine_rows.values()) == scored.rows and scored.engine_rows["compiled"] > 0
    predictions = pd.read_parquet(scored.path)
    assert predictions["scoring_engine"].astype(str).value_counts().to_dict() == {
        k: v for k, v in scored.engine_rows.items() if v
    }
    sklearn_config = auto_lake.model_copy(
        update={"scoring": auto_lake.scoring.model_copy(update={"engine": "sklearn"})}
    )
    reference = pd.read_parquet(score_with_champion(sklearn_config, "2026-09-11", "run-sklearn").path)
    assert np.abs(predictions["score"].to_numpy() - reference["score"].to_numpy()).max() <= 1e-9


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: (f / compiled.LIBRARY).write_bytes(b"garbage"), "the library does not load"),
        (lambda f: shutil.rmtree(f), "has no compiled library"),
    ],
    ids=["corrupted", "never compiled"],
)
def test_a_night_without_a_usable_library_is_scored_by_scikit_learn_with_the_reason(auto_lake, demo, damage, reason):
    _install(auto_lake, demo[1], damage)
    scored = score_with_champion(auto_lake, "2026-09-11", "run-fallback")
    assert scored.engine == "sklearn" and reason in scored.engine_reason
    assert scored.engine_rows == {"compiled": 0, "sklearn": scored.rows}
    assert set(pd.read_parquet(scored.path)["scoring_engine"].astype(str)) == {"sklearn"}


def test_engine_compiled_refuses_to_score_without_a_usable_library(auto_lake, demo):
    from pipelines.core.errors import PipelineError

    _install(auto_lake, demo[1], lambda f: (f / compiled.LIBRARY).write_bytes(b"garbage"))
    forced = auto_lake.model_copy(update={"scoring": auto_lake.scoring.model_copy(update={"engine": "compiled"})})
    with pytest.raises(PipelineError, match="scoring.engine is compiled, but the compiled model of v1 cannot be used"):
        score_with_champion(forced, "2026-09-11", "run-forced")


def test_a_model_without_categorical_features_is_compiled_and_verified(tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=3000), "y": rng.normal(size=3000)})
    label = (frame["x"] + rng.normal(size=3000) > 0).astype(int)
    columns = ColumnTransformer(
        [("categorical", OrdinalEncoder(), []), ("numeric", "passthrough", ["x", "y"])],
        verbose_feature_names_out=False,
    )
    model = Pipeline([("columns", columns), ("classifier", HistGradientBoostingClassifier(max_iter=20))])
    model.fit(frame, label)
    build = compiled.compile_model(model, tmp_path / compiled.ARTIFACT)
    assert build.error is None
    fast, reason = compiled.load_verified(model, tmp_path / compiled.ARTIFACT, frame, ["x", "y"])
    assert reason == "" and fast is not None
