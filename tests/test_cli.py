from cdp_spark.cli import EXIT_CONFIG, main
from cdp_spark.pipeline import PIPELINE, STAGES


def test_every_stage_has_a_job_file():
    from pathlib import Path

    jobs = Path(__file__).resolve().parents[1] / "jobs"
    assert sorted(p.stem for p in jobs.glob("*.py")) == sorted([*STAGES, "run"])
    assert set(PIPELINE) <= set(STAGES)


def test_config_error_exits_2_and_names_the_key(capsys, tmp_path):
    (tmp_path / "base.yaml").write_text("spark:\n  mastr: local[1]\n")
    assert main(["--conf-dir", str(tmp_path), "generate"]) == EXIT_CONFIG
    assert "spark.mastr: unknown key" in capsys.readouterr().err


def test_options_after_the_subcommand_are_accepted(capsys, tmp_path):
    (tmp_path / "base.yaml").write_text("")
    assert main(["generate", "--conf-dir", str(tmp_path), "--set", "spark.shuffle_partitions=zero"]) == EXIT_CONFIG
    assert "--set spark.shuffle_partitions" in capsys.readouterr().err


def test_run_from_to_picks_a_slice_and_a_wrong_slice_is_a_config_error(capsys, tmp_path):
    from cdp_spark.pipeline import pipeline_stages

    assert pipeline_stages(None, "resolve") == ["ingest", "standardize", "resolve"]
    assert pipeline_stages("score", None) == ["score", "segment", "activate"]
    assert pipeline_stages("train", "train") == ["train"]
    (tmp_path / "base.yaml").write_text(f"reports_dir: {tmp_path / 'reports'}\n")
    assert main(["--conf-dir", str(tmp_path), "run", "--from", "score", "--to", "resolve"]) == EXIT_CONFIG
    assert "--from score comes after --to resolve" in capsys.readouterr().err
    assert main(["--conf-dir", str(tmp_path), "run", "--to", "resolv"]) == EXIT_CONFIG
    assert "unknown pipeline stage 'resolv'" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists(), "a refused run wrote a report"
