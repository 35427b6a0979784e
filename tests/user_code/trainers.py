"""Training functions as a user writes them for `model.trainer` (imported by name, like any deployment's module)."""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def linear(numeric: list[str], categorical: list[str], kind: str, seed: int) -> Pipeline:
    """A scikit-learn Pipeline with a linear model: scaled numbers, one-hot categories."""
    columns = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"), OneHotEncoder(handle_unknown="ignore")
                ),
                categorical,
            ),
        ]
    )
    model = LinearRegression() if kind == "regression" else LogisticRegression(max_iter=500, random_state=seed)
    return Pipeline([("columns", columns), ("model", model)])


def raises(numeric: list[str], categorical: list[str], kind: str, seed: int) -> Pipeline:
    raise ValueError("the feature store is down")


def not_an_estimator(numeric: list[str], categorical: list[str], kind: str, seed: int) -> object:
    return {"model": "a dict, not an estimator"}
