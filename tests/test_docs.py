"""The docs name only things that exist: every config key resolves in the config model, every identifier is in the code.

The DAG table of the README (every DAG, task and Param) is checked against Airflow's DagBag in
tests/dags/test_dag_integrity.py.
"""

import functools
import re
import subprocess
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from pipelines.core.config import PipelineConfig
from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# the docs' example of a misspelt key (what the error says): deliberately not a key
MISTAKES = {"scoring.batch_rowz"}
FILE_SUFFIXES = ("json", "jsonl", "html", "parquet", "yaml", "yml", "py", "db", "md", "txt", "png", "sh", "lock", "log")


def _backticked(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks are examples, not names
    return re.findall(r"`([^`\n]+)`", text)


def _model(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def resolve_key(dotted: str) -> bool:
    """Whether `section.key...` names a key of the config (a `*` stands for any key; a mapping takes any key)."""
    model: type[BaseModel] | None = PipelineConfig
    for part in dotted.split("."):
        if model is None:  # inside a mapping (floors, per_column): any key
            return True
        if part == "*":
            return True
        if part not in model.model_fields:
            return False
        model = _model(model.model_fields[part].annotation)
    return True


def config_keys_named(path: Path) -> list[str]:
    sections = {name for name, field in PipelineConfig.model_fields.items() if _model(field.annotation)}
    named = []
    for token in _backticked(path):
        for word in re.findall(r"[a-z_]+(?:\.[a-z_*]+)+", token):
            if word.split(".")[0] in sections and not word.endswith(FILE_SUFFIXES):
                named.append(word)
    return named


@functools.cache
def _quoted_in_code() -> frozenset[str]:
    """Dotted names the code spells as strings (MLflow tags such as `scoring.compiled`): not config keys."""
    found: set[str] = set()
    for file in (REPO / "pipelines").rglob("*.py"):
        found.update(re.findall(r"\"([a-z_]+(?:\.[a-z_]+)+)\"", file.read_text()))
    return frozenset(found)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_config_key_the_docs_name_exists(path):
    named = set(config_keys_named(path)) - MISTAKES - _quoted_in_code()
    assert sorted(key for key in named if not resolve_key(key)) == []


def test_the_key_check_refuses_a_key_that_does_not_exist():
    assert resolve_key("scoring.shard_rows") and resolve_key("monitoring.drift.per_column")
    assert resolve_key("promotion.floors.roc_auc") and resolve_key("retraining.*")
    assert not resolve_key("scoring.batch_rowz") and not resolve_key("training.window_days")


@functools.cache  # the code is read once for all the docs
def _code_words() -> frozenset[str]:
    words: set[str] = set()
    for folder in ("pipelines", "dags", "plugins", "harness", "include", "bench", "tests"):
        for file in (REPO / folder).rglob("*"):
            if file.is_file() and file.suffix in {".py", ".yaml", ".yml", ".sh", ".sql", ".toml", ".cfg", ""}:
                words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", file.read_text(errors="replace")))
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    words.update(Path(name).stem for name in tracked.splitlines())
    for file in ("Makefile", "pyproject.toml", "docker-compose.yaml"):
        words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", (REPO / file).read_text()))
    return frozenset(words)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_snake_case_name_the_docs_use_is_in_the_code(path):
    """A task, Param, config key, function or table renamed in the code and not in the docs fails here."""
    words = _code_words()
    named = {w for token in _backticked(path) for w in re.findall(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b", token)}
    assert sorted(named - words) == []


def test_the_readme_is_a_page_a_newcomer_reads():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: reference material belongs in docs/"
    for doc in DOCS[1:]:
        assert f"(docs/{doc.name})" in "\n".join(lines), f"the README does not point at docs/{doc.name}"
