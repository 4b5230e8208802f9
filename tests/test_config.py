from pathlib import Path

import pytest

from cdp_spark.config import CdpConfig, ConfigError, load_config

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"


def write_conf(tmp_path: Path, base: str, env: dict[str, str] | None = None) -> Path:
    conf = tmp_path / "conf"
    (conf / "env").mkdir(parents=True)
    (conf / "base.yaml").write_text(base)
    for name, text in (env or {}).items():
        (conf / "env" / f"{name}.yaml").write_text(text)
    return conf


def test_repository_config_loads_for_every_environment(monkeypatch):
    for var in (
        "CDP_LAKEHOUSE_ROOT",
        "CDP_CHECKPOINT_DIR",
        "CDP_LANDING_PATH",
        "MLFLOW_TRACKING_URI",
        "CDP_REPORTS_DIR",
    ):
        monkeypatch.setenv(var, f"/mnt/{var.lower()}")
    assert load_config(REPO_CONF).lakehouse.root == "lakehouse"
    assert load_config(REPO_CONF, "local").spark.master == "local[*]"
    cluster = load_config(REPO_CONF, "cluster")
    assert cluster.lakehouse.root == "/mnt/cdp_lakehouse_root"
    assert cluster.landing == cluster.sample_path == "/mnt/cdp_landing_path"
    local = load_config(REPO_CONF)
    assert (local.landing, local.sample_path) == ("data/sample", "data/sample")  # the sample lands where sources read
    assert load_config(REPO_CONF, overrides=["sample.path=/tmp/other"]).sample_path == "/tmp/other"
    assert cluster.mlflow.tracking_uri == "/mnt/mlflow_tracking_uri"


def test_layers_merge_in_order_base_env_then_overrides(tmp_path):
    conf = write_conf(
        tmp_path,
        "spark:\n  shuffle_partitions: 8\n  driver_memory: 4g\n",
        {"dev": "spark:\n  shuffle_partitions: 4\n"},
    )
    cfg = load_config(conf, "dev", ["spark.driver_memory=1g", "sample.people=10"])
    assert (cfg.spark.shuffle_partitions, cfg.spark.driver_memory, cfg.sample.people) == (4, "1g", 10)
    assert cfg.spark.master == CdpConfig().spark.master


def test_unknown_key_names_file_and_key(tmp_path):
    conf = write_conf(tmp_path, "spark:\n  shuffle_partitions: 8\n", {"dev": "spark:\n  shufle_partitions: 4\n"})
    with pytest.raises(ConfigError) as err:
        load_config(conf, "dev")
    assert str(err.value) == f"{conf / 'env' / 'dev.yaml'}: spark.shufle_partitions: unknown key"


def test_wrong_type_names_file_key_and_value(tmp_path):
    conf = write_conf(tmp_path, "spark:\n  shuffle_partitions: five\n")
    with pytest.raises(ConfigError) as err:
        load_config(conf)
    message = str(err.value)
    assert message.startswith(f"{conf / 'base.yaml'}: spark.shuffle_partitions: ")
    assert "integer" in message and "'five'" in message


def test_override_with_wrong_type_is_blamed_on_the_override(tmp_path):
    conf = write_conf(tmp_path, "")
    with pytest.raises(ConfigError, match=r"^--set sample.people: sample.people: .*got -3"):
        load_config(conf, None, ["sample.people=-3"])


def test_missing_environment_file_is_named(tmp_path):
    conf = write_conf(tmp_path, "")
    with pytest.raises(ConfigError, match=r"env/staging\.yaml: config file not found"):
        load_config(conf, "staging")


def test_missing_base_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nowhere/base\.yaml: config file not found"):
        load_config(tmp_path / "nowhere")


def test_secret_from_environment_variable(tmp_path, monkeypatch):
    conf = write_conf(tmp_path, "mlflow:\n  tracking_uri: ${env:CDP_TEST_TRACKING}\n")
    monkeypatch.setenv("CDP_TEST_TRACKING", "http://mlflow.internal:5000")
    assert load_config(conf).mlflow.tracking_uri == "http://mlflow.internal:5000"
    monkeypatch.delenv("CDP_TEST_TRACKING")
    with pytest.raises(
        ConfigError, match=r"base\.yaml: mlflow\.tracking_uri: environment variable CDP_TEST_TRACKING is not set"
    ):
        load_config(conf)


def test_error_masks_the_value_of_an_environment_variable(tmp_path, monkeypatch):
    conf = write_conf(tmp_path, "spark:\n  shuffle_partitions: ${env:CDP_TEST_PARTITIONS}\n")
    monkeypatch.setenv("CDP_TEST_PARTITIONS", "s3cr3t-Pa55")
    with pytest.raises(ConfigError) as err:
        load_config(conf)
    message = str(err.value)
    assert message.startswith(f"{conf / 'base.yaml'}: spark.shuffle_partitions: ") and message.endswith("got '***'")
    assert "s3cr3t-Pa55" not in message


def test_bad_override_syntax(tmp_path):
    conf = write_conf(tmp_path, "")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(conf, None, ["spark.master"])


def test_not_a_mapping(tmp_path):
    conf = write_conf(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(conf)


def test_mlflow_tracking_uri_environment_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert CdpConfig().mlflow.resolved_tracking_uri() == "http://tracking:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert CdpConfig().mlflow.resolved_tracking_uri() == "sqlite:///mlruns.db"
