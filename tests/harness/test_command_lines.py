"""The two command lines: the product's `nightly-ml` and the harness's sample data (`python -m harness.data`)."""

from harness import data
from pipelines.core.config import load_config
from pipelines.storage.partitions import list_partitions
from pipelines.surfaces import cli
from tests.conftest import write_config


def test_sample_data_is_written_where_the_config_points(tmp_path):
    path = write_config(tmp_path)
    code = data.main(["--config", str(path), "generate", "--start", "2026-09-01", "--days", "2", "--rows", "50"])
    assert code == 0
    assert [d.isoformat() for d in list_partitions(load_config(path).data_root, "incoming")] == [
        "2026-09-01",
        "2026-09-02",
    ]


def test_the_product_command_line_creates_the_store_and_reports_a_bad_config(tmp_path, capsys):
    path = write_config(tmp_path)
    assert cli.main(["--config", str(path), "init-mlflow"]) == 0
    assert (tmp_path / "mlflow").is_dir()
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("scoring:", "scorin:", 1))
    assert cli.main(["--config", str(bad), "init-mlflow"]) == 2
    assert "scorin" in capsys.readouterr().err
