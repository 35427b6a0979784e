"""The audit log holds against truncation, a rewrite with recomputed hashes, a crash mid-append and an interrupted move."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from pipelines.core.config import AUDIT_KEY_ENV_VAR
from pipelines.core.contracts import AuditEntry, NightRecord
from pipelines.core.errors import AuditIntegrityError
from pipelines.flows import retraining
from pipelines.governance import audit
from pipelines.governance.promotion import champion_matches_audit, promote, reject, rollback
from pipelines.governance.registry import Registry
from pipelines.storage import history
from pipelines.surfaces.monitoring_page import render_page
from tests.conftest import copy_lake, fresh_postgres_database, write_config


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
            AuditEntry.model_validate(
                {
                    "action": action,
                    "model": config.model.registered_name,
                    "from_version": old,
                    "to_version": new,
                    "reason": f"step {number}",
                    "approved_by": "alice",
                    "airflow_run_id": f"run-{number}",
                    "gate": None,
                }
            ),
        )


@pytest.fixture
def log(config):
    """The same four entries written straight to a fresh log (no registry: the log's own rules, fast)."""
    for number, move in enumerate(MOVES):
        _append(config, *move, number)
    return config


def stored(config):
    """The log's rows as someone with database access sees them: [(seq, entry dict)]."""
    with audit.database(config).connect() as conn:
        rows = conn.execute(sa.select(audit.AUDIT_LOG.c.seq, audit.AUDIT_LOG.c.entry).order_by("seq")).all()
    return [(seq, json.loads(text)) for seq, text in rows]


def tamper(config, statement, **values):
    """Run a statement against the log as an attacker who can drop the append-only triggers would."""
    with audit.database(config).begin() as conn:
        conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        conn.execute(sa.text(statement), values)


def rewrite(config, entries):
    """Replace the log's rows with `entries` (numbered 1, 2, ...)."""
    tamper(config, "DELETE FROM audit_log")
    with audit.database(config).begin() as conn:
        for number, entry in enumerate(entries, 1):
            conn.execute(
                audit.AUDIT_LOG.insert().values(
                    model_name=config.model.registered_name, seq=number, entry=json.dumps(entry), hash=entry["hash"]
                )
            )


def test_entries_are_keyed_and_the_chain_reads_back(log):
    config = log
    entries = audit.read_audit(config)
    assert [e.action for e in entries] == ["bootstrap", "reject", "promote", "rollback"]
    assert {entry["alg"] for _, entry in stored(config)} == {"hmac-sha256"}
    assert [seq for seq, _ in stored(config)] == [1, 2, 3, 4]
    assert audit.audit_head(config, config.model.registered_name)[:2] == (4, entries[-1].hash)
    with pytest.raises(AuditIntegrityError, match="signed with hmac-sha256"):
        audit.read_audit(config.model_copy(update={"audit_key": None}))


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET entry = 'x' WHERE seq = 2", "DELETE FROM audit_log WHERE seq = 4"]
)
def test_the_database_refuses_to_change_or_remove_an_entry(log, statement):
    config = log
    with (
        pytest.raises(sa.exc.DatabaseError, match="audit_log is append-only"),
        audit.database(config).begin() as conn,
    ):
        conn.execute(sa.text(statement))
    assert len(audit.read_audit(config)) == 4


def test_dropping_the_last_entries_is_detected(log):
    config = log
    tamper(config, "DELETE FROM audit_log WHERE seq > 2")
    with pytest.raises(AuditIntegrityError, match="was truncated: it holds 2 entries, the head record says 4"):
        audit.read_audit(config)
    assert "was truncated" in render_page(config, "/monitoring")


def test_a_removed_entry_in_the_middle_is_detected(log):
    config = log
    tamper(config, "DELETE FROM audit_log WHERE seq = 2")
    with pytest.raises(AuditIntegrityError, match="is missing entry 2 \\(the next one is 3\\)"):
        audit.read_audit(config)


def test_a_rewrite_with_recomputed_hashes_is_detected(log):
    config = log
    previous, forged = "", []
    for _, entry in stored(config):  # what an attacker without the key can do: re-hash every entry after the edit
        body = {k: v for k, v in entry.items() if k != "hash"} | {"previous_hash": previous}
        if body["action"] == "reject":
            body["approved_by"] = "mallory"
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        forged.append(body | {"hash": digest})
        previous = digest
    rewrite(config, forged)
    with pytest.raises(AuditIntegrityError, match="was altered at entry 1"):
        audit.read_audit(config)


def test_a_crash_mid_append_leaves_no_entry_and_no_head(log, monkeypatch):
    config = log
    head = audit.audit_head(config, config.model.registered_name)

    def crash(*args, **kwargs):
        raise RuntimeError("killed between the entry and its head")

    monkeypatch.setattr(audit, "set_audit_head", crash)
    with pytest.raises(RuntimeError, match="killed"):
        _append(config, "reject", "1", "2", 6)
    monkeypatch.undo()
    assert len(audit.read_audit(config)) == 4 and audit.audit_head(config, config.model.registered_name) == head
    _append(config, "reject", "1", "2", 7)
    assert [e.reason for e in audit.read_audit(config)][-1] == "step 7"


def test_a_file_log_of_an_earlier_release_is_verified_and_moved_in(config):
    source = config.model_copy(update={"data_root": config.data_root / "old"})
    for number, move in enumerate(MOVES):
        _append(source, *move, number)
    lines = [json.dumps(entry) + "\n" for _, entry in stored(source)]
    config.audit_log_file.parent.mkdir(parents=True, exist_ok=True)
    config.audit_log_file.write_text("".join(lines) + '{"at": "2026-11-27T03:00:00", "action": "prom')  # torn tail
    entries = audit.read_audit(config)
    assert [e.action for e in entries] == ["bootstrap", "reject", "promote", "rollback"]
    assert (
        not config.audit_log_file.exists()
        and config.audit_log_file.with_name("model_audit.jsonl.moved-to-database").exists()
    )
    assert audit.audit_head(config, config.model.registered_name)[:2] == (4, entries[-1].hash)
    _append(config, "reject", "1", "2", 5)
    assert len(audit.read_audit(config)) == 5


def test_an_altered_file_log_is_not_moved_in(config):
    source = config.model_copy(update={"data_root": config.data_root / "old"})
    for number, move in enumerate(MOVES):
        _append(source, *move, number)
    entries = [entry for _, entry in stored(source)]
    entries[1]["approved_by"] = "mallory"
    config.audit_log_file.parent.mkdir(parents=True, exist_ok=True)
    config.audit_log_file.write_text("".join(json.dumps(e) + "\n" for e in entries))
    with pytest.raises(AuditIntegrityError, match="was altered at entry 2"):
        audit.read_audit(config)
    assert config.audit_log_file.exists() and stored(config) == []


def test_a_log_without_its_head_record_is_refused(log):
    config = log
    with audit.database(config).begin() as conn:
        conn.execute(audit.AUDIT_HEAD.delete())
    with pytest.raises(AuditIntegrityError, match="has no record of its head"):
        audit.read_audit(config)


def test_an_interrupted_alias_move_is_finished_by_the_next_one(lake):
    config, first, second = lake
    assert Registry.open(config).champion().version == first.version
    with audit.audit_lock(config):  # the entry is written, then the process dies before the aliases move
        audit.append(
            config,
            AuditEntry.model_validate(
                {
                    "action": "promote",
                    "model": second.name,
                    "from_version": first.version,
                    "to_version": second.version,
                    "reason": "crash test",
                    "approved_by": "gate",
                    "airflow_run_id": "run-x",
                    "gate": None,
                }
            ),
        )
    assert not champion_matches_audit(config)
    reject(config, second, "unrelated later action", "erin", "run-7", None)
    assert Registry.open(config).champion().version == second.version
    assert Registry.open(config).alias_version("previous").version == first.version
    assert champion_matches_audit(config)


def test_the_key_never_comes_from_the_yaml(tmp_path):
    from pipelines.core.config import load_config
    from pipelines.core.errors import ConfigError
    from tests.conftest import write_config

    path = write_config(tmp_path, audit_key="in-the-yaml")
    with pytest.raises(ConfigError, match=f"a secret never goes in the YAML; set {AUDIT_KEY_ENV_VAR}"):
        load_config(path)


@pytest.mark.parametrize(
    "field", ["action", "from_version", "to_version", "reason", "approved_by", "airflow_run_id", "at"]
)
def test_every_field_of_an_entry_is_under_its_hash(log, field):
    config = log
    entries = [entry for _, entry in stored(config)]
    entry = entries[2]  # the promotion: every field is set
    assert entry["action"] == "promote" and entry["from_version"] == "1"
    entry[field] = "9" if field.endswith("version") else f"forged {field}"
    rewrite(config, entries)
    with pytest.raises(AuditIntegrityError, match="was altered at entry 3"):
        audit.read_audit(config)


def test_entries_moved_out_of_order_break_the_chain(lake):
    """Each entry is intact on its own and the head is unchanged: only the link to the previous entry shows it."""
    config, *_ = lake
    entries = [entry for _, entry in stored(config)]
    entries[1], entries[2] = entries[2], entries[1]
    rewrite(config, entries)
    with pytest.raises(AuditIntegrityError, match="was altered at entry 2"):
        audit.read_audit(config)


@pytest.fixture
def pg_config(tmp_path):
    """A config whose history, and so whose audit log, is a fresh PostgreSQL database."""
    from pipelines.core.config import load_config

    with fresh_postgres_database(f"nightly_ml_audit_{os.getpid()}") as url:
        path = write_config(tmp_path)
        yield load_config(path, environ={**os.environ, "PIPELINE_HISTORY_URL": url}), path, url
        history.dispose(url)


HOLD = """
import os, sys, time
from pipelines.governance import audit
from pipelines.core.contracts import AuditEntry
from pipelines.core.config import load_config
config = load_config(sys.argv[1])
with audit.audit_lock(config):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    audit.append(config, AuditEntry(action="bootstrap", model=config.model.registered_name, from_version=None,
                                    to_version="1", reason="the other worker", approved_by="gate",
                                    airflow_run_id="other", gate=None))
"""


def test_on_postgres_the_lock_holds_across_processes_and_the_database_guards_the_log(pg_config):
    config, path, url = pg_config
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), "3"],
        env={**os.environ, "PIPELINE_HISTORY_URL": url},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "holding"  # the other process holds the lock now
        started = time.monotonic()
        entry = _append(config, "promote", "1", "2", 1)  # waits for the other process's entry
        waited = time.monotonic() - started
    finally:
        other.wait(timeout=60)
    assert other.returncode == 0
    assert waited > 1.0, f"the append did not wait for the lock holder ({waited:.2f} s)"
    entries = audit.read_audit(config)
    assert [e.reason for e in entries] == ["the other worker", "step 1"]
    assert stored(config)[1][1]["previous_hash"] == entries[0].hash and entry.hash == entries[1].hash
    with (
        pytest.raises(sa.exc.DatabaseError, match="audit_log is append-only"),
        audit.database(config).begin() as conn,
    ):
        conn.execute(sa.text("DELETE FROM audit_log"))
    with (
        pytest.raises(sa.exc.DatabaseError, match="audit_log is append-only"),
        audit.database(config).begin() as conn,
    ):
        conn.execute(sa.text("TRUNCATE audit_log"))


def test_an_entry_verifies_whatever_order_its_keys_are_stored_in(log):
    """The hash is over the canonical (sorted-key) form, so a database or tool that reorders JSON keys breaks nothing."""
    config = log
    entries = [dict(reversed(list(entry.items()))) for _, entry in stored(config)]
    rewrite(config, entries)
    assert [e.action for e in audit.read_audit(config)] == ["bootstrap", "reject", "promote", "rollback"]


def test_only_an_unkeyed_log_warns_that_it_is_not_keyed(config):
    unkeyed = config.model_copy(update={"audit_key": None})
    _append(unkeyed, "bootstrap", None, "1", 1)
    trail = audit.read_trail(unkeyed)
    assert {entry["alg"] for _, entry in stored(unkeyed)} == {"sha256"}
    assert any("not keyed" in w for w in trail.warnings)
    keyed = config.model_copy(update={"data_root": config.data_root / "keyed"})
    _append(keyed, "bootstrap", None, "1", 1)
    assert not audit.read_trail(keyed).warnings


def test_an_entry_that_is_not_json_is_named(log):
    config = log
    tamper(config, "UPDATE audit_log SET entry = '{not json' WHERE seq = 3")
    with pytest.raises(AuditIntegrityError, match="entry 3 is not JSON"):
        audit.read_audit(config)


def _file_log(config):
    """Write the four entries as an earlier release kept them (a JSON-lines file under the data root); return them."""
    source = config.model_copy(update={"data_root": config.data_root / "old"})
    for number, move in enumerate(MOVES):
        _append(source, *move, number)
    entries = [entry for _, entry in stored(source)]
    config.audit_log_file.parent.mkdir(parents=True, exist_ok=True)
    config.audit_log_file.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return entries


@pytest.mark.parametrize(("recorded", "right_hash"), [(5, True), (4, False), (2, False)])
def test_a_file_log_that_disagrees_with_the_recorded_head_is_not_moved_in(config, recorded, right_hash):
    entries = _file_log(config)
    with audit.database(config).begin() as conn:
        head_hash = entries[recorded - 1]["hash"] if right_hash and recorded <= 4 else "0" * 64
        audit.set_audit_head(conn, config.model.registered_name, recorded, head_hash, None)  # an older release's
    with pytest.raises(AuditIntegrityError, match=f"truncated or rewritten: it holds 4 entries.*recorded {recorded}"):
        audit.read_audit(config)
    assert config.audit_log_file.exists() and stored(config) == []


def test_a_file_log_that_matches_the_recorded_head_is_moved_in_with_its_hashes(config, caplog):
    entries = _file_log(config)
    with audit.database(config).begin() as conn:
        audit.set_audit_head(conn, config.model.registered_name, 3, entries[2]["hash"], None)  # an older release's
    with caplog.at_level("WARNING", logger="pipelines.governance.audit"):
        assert [e.hash for e in audit.read_audit(config)] == [e["hash"] for e in entries]
    with audit.database(config).connect() as conn:
        rows = conn.execute(
            sa.select(audit.AUDIT_LOG.c.model_name, audit.AUDIT_LOG.c.seq, audit.AUDIT_LOG.c.hash).order_by("seq")
        ).all()
    assert [tuple(r) for r in rows] == [(config.model.registered_name, n, e["hash"]) for n, e in enumerate(entries, 1)]
    assert audit.audit_head(config, config.model.registered_name)[:2] == (4, entries[-1]["hash"])
    assert any("(4 entries) was verified and moved into the database" in r.getMessage() for r in caplog.records)


def test_a_file_log_beside_a_database_log_is_refused_and_kept(log):
    config = log  # the file holds the database's own four entries: it matches the head, only the copy is refused
    config.audit_log_file.parent.mkdir(parents=True, exist_ok=True)
    config.audit_log_file.write_text("".join(json.dumps(e) + "\n" for _, e in stored(config)))
    with pytest.raises(AuditIntegrityError, match="both the database and .* hold an audit log"):
        audit.read_audit(config)
    assert config.audit_log_file.exists() and len(stored(config)) == 4


def test_a_file_log_with_only_a_torn_line_moves_in_as_an_empty_log(config):
    config.audit_log_file.parent.mkdir(parents=True, exist_ok=True)
    config.audit_log_file.write_text('{"at": "2026-11-27T03:00:00", "action": "prom')
    assert audit.read_audit(config) == []
    assert not config.audit_log_file.exists() and audit.audit_head(config, config.model.registered_name) is None
    _append(config, "bootstrap", None, "1", 1)
    assert [e.action for e in audit.read_audit(config)] == ["bootstrap"]


def _cut_tail_and_forge_head(config, mac=None):
    """An attacker without the key: delete the last entry and point the head at the new last row."""
    rows = stored(config)
    tamper(config, "DELETE FROM audit_log WHERE seq = :seq", seq=len(rows))
    last = rows[-2][1]["hash"]
    with audit.database(config).begin() as conn:
        audit.set_audit_head(conn, config.model.registered_name, len(rows) - 1, last, mac)


@pytest.mark.parametrize("mac", [None, "0" * 64], ids=["head-without-mac", "head-with-a-made-up-mac"])
def test_a_cut_tail_with_a_rewritten_head_is_detected(log, mac):
    config = log
    _cut_tail_and_forge_head(config, mac)
    with pytest.raises(AuditIntegrityError, match="head record .* was changed or written without the key"):
        audit.read_audit(config)
    page = render_page(config, "/monitoring")
    assert "changed or written without the key" in page


def test_a_cut_rollback_is_never_undone_by_the_next_alias_move(lake):
    config, first, second = lake  # the last entry is the rollback to the first version
    assert Registry.open(config).champion().version == first.version
    _cut_tail_and_forge_head(config)
    with pytest.raises(AuditIntegrityError, match="changed or written without the key"):
        reject(config, second, "a later action", "erin", "run-7", None)
    assert Registry.open(config).champion().version == first.version  # the rolled-back version stays out


def test_an_unkeyed_log_never_finishes_an_interrupted_move(lake):
    config, first, second = lake
    unkeyed = config.model_copy(update={"audit_key": None})
    tamper(config, "DELETE FROM audit_log")
    with audit.database(config).begin() as conn:
        conn.execute(audit.AUDIT_HEAD.delete())
    for number, (action, old, new) in enumerate(
        [("bootstrap", None, first.version), ("promote", first.version, second.version)]
    ):
        _append(unkeyed, action, old, new, number)  # the log says v2, the alias says v1
    with pytest.raises(AuditIntegrityError, match="the log is not keyed, so it cannot vouch for that move"):
        reject(unkeyed, second, "a later action", "erin", "run-7", None)
    assert Registry.open(config).champion().version == first.version


def test_a_sealed_head_verifies_and_sealing_needs_the_key(log):
    config = log
    name = config.model.registered_name
    count, head_hash, _ = audit.audit_head(config, name)
    with audit.database(config).begin() as conn:  # a head written by a release before keyed heads
        audit.set_audit_head(conn, name, count, head_hash, None)
    with pytest.raises(AuditIntegrityError, match="nightly-ml seal-audit"):
        audit.read_audit(config)
    with pytest.raises(AuditIntegrityError, match="set AIRFLOW_VAR_PIPELINE_AUDIT_KEY first"):
        audit.seal_head(config.model_copy(update={"audit_key": None}))
    assert audit.seal_head(config) == 4
    assert [e.action for e in audit.read_audit(config)] == ["bootstrap", "reject", "promote", "rollback"]
    other_key = config.model_copy(update={"audit_key": "another-key"})
    with pytest.raises(AuditIntegrityError):
        audit.read_audit(other_key)


def test_a_wiped_registry_and_log_do_not_bootstrap_over_a_history_of_earlier_champions(lake):
    from pipelines.core.errors import ChampionMissingError
    from pipelines.governance.promotion import record_bootstrap

    config, first, second = lake
    for ds, version in (("2026-09-20", first.version), ("2026-09-21", second.version)):
        history.record_night(
            config, NightRecord(ds=ds, model_name=first.name, model_version=version, rows=10, validation_success=True)
        )
    models = Registry.open(config)
    for alias in ("champion", "previous", "challenger"):
        models.delete_alias(alias)
    tamper(config, "DELETE FROM audit_log")
    with audit.database(config).begin() as conn:
        conn.execute(audit.AUDIT_HEAD.delete())
    with pytest.raises(ChampionMissingError, match=f"nights scored by v{first.version}, v{second.version}"):
        record_bootstrap(config, models, second, "run-9")
    assert models.alias_version("champion") is None and audit.read_audit(config) == []


@pytest.mark.parametrize("entry", ["[1, 2, 3]", "null", "42", '"text"'])
def test_an_entry_that_is_not_an_object_shows_the_red_line(log, entry):
    config = log
    tamper(config, "UPDATE audit_log SET entry = :entry WHERE seq = 2", entry=entry)
    with pytest.raises(AuditIntegrityError, match="entry 2 is not an entry"):
        audit.read_audit(config)
    assert "entry 2 is not an entry" in render_page(config, "/monitoring")


def test_a_chain_rehashed_with_plain_sha256_is_written_without_the_key(log):
    config = log
    previous, forged = "", []
    for _, entry in stored(config):
        body = {k: v for k, v in entry.items() if k != "hash"} | {"previous_hash": previous, "alg": "sha256"}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        forged.append(body | {"hash": digest})
        previous = digest
    rewrite(config, forged)
    with pytest.raises(
        AuditIntegrityError, match="entry 1 is not keyed \\(sha256\\): it was changed or written without"
    ):
        audit.read_audit(config)


@pytest.mark.parametrize("how", ["copied-over", "moved-in"])
def test_the_page_reads_a_restored_database_file_at_every_view(log, tmp_path, how):
    import shutil
    from pathlib import Path

    config = log
    database = Path(config.history_url.removeprefix("sqlite:///"))
    assert "Champion history" in render_page(config, "/monitoring") and "restore" not in render_page(
        config, "/monitoring"
    )
    backup = tmp_path / "backup.db"
    shutil.copyfile(database, backup)
    with sa.create_engine(f"sqlite:///{backup}").begin() as conn:  # a backup whose head record was lost
        conn.execute(audit.AUDIT_HEAD.delete())
    if how == "copied-over":
        shutil.copyfile(backup, database)
    else:
        os.replace(backup, database)
    assert "has no record of its head" in render_page(config, "/monitoring")
