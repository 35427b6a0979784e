"""The audit log holds against truncation, a rewrite with recomputed hashes, a torn last line and an interrupted move."""

import hashlib
import json

import pytest

from pipelines import audit, history, retraining
from pipelines.config import AUDIT_KEY_ENV_VAR
from pipelines.errors import AuditIntegrityError
from pipelines.monitoring_page import render_page
from pipelines.promotion import champion_matches_audit, promote, reject, rollback
from pipelines.registry import Registry
from tests.conftest import copy_lake


@pytest.fixture(scope="module")
def two_versions(champion_lake, tmp_path_factory):
    """A private copy of the champion lake with a second version promoted and rolled back (4 entries)."""
    config = copy_lake(champion_lake, tmp_path_factory.mktemp("audit"))
    first = Registry.open(config).champion()
    candidate = retraining.train_candidate(config, retraining.select_training_window(config), {"reason": "audit test"})
    retraining.bootstrap_or_challenge(config, candidate, "run-2")
    second = candidate.ref
    reject(config, second, "first look: no", "alice", "run-3", None)
    promote(config, second, "second look: yes", "bob", "run-4", None)
    rollback(config, None, "undo", "carol", "run-5")
    return config, first, second


@pytest.fixture
def lake(two_versions, tmp_path):
    config, first, second = two_versions
    return copy_lake(config, tmp_path), first, second


MOVES = [("bootstrap", None, "1"), ("reject", "1", "2"), ("promote", "1", "2"), ("rollback", "2", "1")]


def _append(config, action, old, new, number):
    with audit.audit_lock(config):
        return audit.append(
            config,
            {
                "action": action,
                "model": config.model.registered_name,
                "from_version": old,
                "to_version": new,
                "reason": f"step {number}",
                "approved_by": "alice",
                "airflow_run_id": f"run-{number}",
                "gate": None,
            },
        )


@pytest.fixture
def log(config):
    """The same four entries written straight to a fresh log (no registry: the log's own rules, fast)."""
    for number, move in enumerate(MOVES):
        _append(config, *move, number)
    return config


def test_entries_are_keyed_and_the_chain_reads_back(log):
    config = log
    entries = audit.read_audit(config)
    assert [e.action for e in entries] == ["bootstrap", "reject", "promote", "rollback"]
    assert {json.loads(line)["alg"] for line in config.audit_log.read_text().splitlines()} == {"hmac-sha256"}
    assert history.audit_head(config, config.model.registered_name) == (4, entries[-1].hash)
    with pytest.raises(AuditIntegrityError, match="signed with hmac-sha256"):
        audit.read_audit(config.model_copy(update={"audit_key": None}))


def test_dropping_the_last_entries_is_detected(log):
    config = log
    lines = config.audit_log.read_text().splitlines(keepends=True)
    config.audit_log.write_text("".join(lines[:2]))
    with pytest.raises(AuditIntegrityError, match="was truncated: it holds 2 entries, the history database recorded 4"):
        audit.read_audit(config)
    assert "was truncated" in render_page(config, "/monitoring")


def test_a_rewrite_with_recomputed_hashes_is_detected(log):
    config = log
    entries = [
        json.loads(line) for line in config.audit_log.read_text().splitlines()
    ]  # the file, as an attacker sees it
    previous, forged = "", []
    for entry in entries:  # what an attacker without the key can do: re-hash every line after the edit
        body = {k: v for k, v in entry.items() if k != "hash"} | {"previous_hash": previous}
        if body["action"] == "reject":
            body["approved_by"] = "mallory"
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        forged.append(body | {"hash": digest})
        previous = digest
    config.audit_log.write_text("".join(json.dumps(e) + "\n" for e in forged))
    with pytest.raises(AuditIntegrityError, match="was altered at line 1"):
        audit.read_audit(config)


def test_a_torn_last_line_is_reported_and_repaired_by_the_next_entry(log):
    config = log
    with open(config.audit_log, "ab") as handle:
        handle.write(b'{"at": "2026-11-27T03:00:00", "action": "prom')  # a crash in the middle of an append
    trail = audit.read_trail(config)
    assert len(trail.entries) == 4 and trail.torn_bytes > 0
    assert "incomplete" in trail.warnings[0]
    page = render_page(config, "/monitoring")
    assert "the last line of" in page and ">rollback<" in page
    entry = _append(config, "reject", "1", "2", 6)
    assert "torn last line" in entry.note
    assert [e.action for e in audit.read_audit(config)][-2:] == ["rollback", "reject"]


def test_a_log_without_its_head_record_is_refused(log):
    config = log
    with history.engine(config).begin() as conn:
        conn.execute(history.AUDIT_HEAD.delete())
    with pytest.raises(AuditIntegrityError, match="has no record of its head"):
        audit.read_audit(config)


def test_an_interrupted_alias_move_is_finished_by_the_next_one(lake):
    config, first, second = lake
    assert Registry.open(config).champion().version == first.version
    with audit.audit_lock(config):  # the entry is written, then the process dies before the aliases move
        audit.append(
            config,
            {
                "action": "promote",
                "model": second.name,
                "from_version": first.version,
                "to_version": second.version,
                "reason": "crash test",
                "approved_by": "gate",
                "airflow_run_id": "run-x",
                "gate": None,
            },
        )
    assert not champion_matches_audit(config)
    reject(config, second, "unrelated later action", "erin", "run-7", None)
    assert Registry.open(config).champion().version == second.version
    assert Registry.open(config).alias_version("previous").version == first.version
    assert champion_matches_audit(config)


def test_the_key_never_comes_from_the_yaml(tmp_path):
    from pipelines.config import load_config
    from pipelines.errors import ConfigError
    from tests.conftest import write_config

    path = write_config(tmp_path, audit_key="in-the-yaml")
    with pytest.raises(ConfigError, match=f"a secret never goes in the YAML; set {AUDIT_KEY_ENV_VAR}"):
        load_config(path)


@pytest.mark.parametrize(
    "field", ["action", "from_version", "to_version", "reason", "approved_by", "airflow_run_id", "at"]
)
def test_every_field_of_an_entry_is_under_its_hash(log, field):
    config = log
    lines = config.audit_log.read_text().splitlines(keepends=True)
    entry = json.loads(lines[2])  # the promotion: every field is set
    assert entry["action"] == "promote" and entry["from_version"] == "1"
    entry[field] = "9" if field.endswith("version") else f"forged {field}"
    lines[2] = json.dumps(entry) + "\n"
    config.audit_log.write_text("".join(lines))
    with pytest.raises(AuditIntegrityError, match="was altered at line 3"):
        audit.read_audit(config)


def test_entries_moved_out_of_order_break_the_chain(lake):
    """Each line is intact on its own and the head is unchanged: only the link to the previous entry shows it."""
    config, *_ = lake
    lines = config.audit_log.read_text().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    config.audit_log.write_text("".join(lines))
    with pytest.raises(AuditIntegrityError, match="was altered at line 2"):
        audit.read_audit(config)
