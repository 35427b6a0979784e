"""The monitoring history table: an older deployment's table gains the columns a newer release adds."""

import sqlalchemy as sa

from pipelines import history


def test_an_older_history_table_gains_new_columns_and_keeps_its_rows(config):
    db_file = config.data_root / "monitoring" / "history.db"
    db_file.parent.mkdir(parents=True)
    old = sa.create_engine(f"sqlite:///{db_file}")
    columns = [c.copy() for c in history.NIGHTS.columns if c.name != "validation_warnings"]
    sa.Table("nights", sa.MetaData(), *columns).create(old)
    with old.begin() as conn:
        conn.execute(sa.text("INSERT INTO nights (ds, model_name, model_version, rows) VALUES ('2026-09-01', 'm', '1', 5)"))
    old.dispose()
    history.record_night(config, "2026-09-02", "m", "1", rows=7, validation_warnings=["column 'x': moved"])
    frame = history.read_history(config).set_index("ds")
    assert frame.loc["2026-09-01", "rows"] == 5  # kept
    assert frame.loc["2026-09-02", "validation_warnings"] == ["column 'x': moved"]
