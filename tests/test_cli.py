"""The command line, through typer's CliRunner: clean errors, listings, runs and plots."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedsim.cli import app


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_validate_ok(cli, tiny_scenario):
    res = cli("validate", tiny_scenario)

    assert res.exit_code == 0
    assert "OK (1 run: fedlora)" in res.output


def test_validate_error_is_clean(cli, write_yaml, tiny_scenario):
    bad = write_yaml("bad.yaml", tiny_scenario.read_text() + "method:\n  name: fedprox\n")

    res = cli("validate", bad)

    assert res.exit_code == 2
    assert "error:" in res.stderr
    assert "'method.name' = 'fedprox'" in res.stderr
    assert str(bad) in res.stderr
    assert "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)


def test_validate_missing_file(cli, tmp_path):
    res = cli("validate", tmp_path / "nope.yaml")

    assert res.exit_code == 2
    assert "does not exist" in res.stderr
    assert "Traceback" not in res.output


def test_validate_several_files_reports_each(cli, write_yaml, tiny_scenario):
    bad = write_yaml("bad.yaml", "fleet: {size: 0}\n")

    res = cli("validate", tiny_scenario, bad)

    assert res.exit_code == 2
    assert "tiny.yaml: OK" in res.stdout
    assert "bad.yaml" in res.stderr


def test_profiles_lists_classes(cli):
    res = cli("profiles")

    assert res.exit_code == 0
    for name in ("phone-low", "phone-mid", "phone-high", "tablet", "jetson-tx2", "wifi", "4g", "5g", "3g"):
        assert name in res.output


def test_profiles_shows_one_class(cli):
    res = cli("profiles", "phone-mid")

    assert res.exit_code == 0
    assert "# phone-mid (from " in res.output and "phones.yaml" in res.output
    assert "train_gflops_per_s:" in res.output
    assert "dist: lognormal" in res.output


def test_profiles_unknown_class(cli):
    res = cli("profiles", "phone-ultra")

    assert res.exit_code == 2
    assert "phone-ultra" in res.stderr
    assert "Traceback" not in res.output


def test_profiles_bad_dir(cli, tmp_path):
    res = cli("profiles", "--dir", tmp_path)

    assert res.exit_code == 2
    assert str(tmp_path) in res.stderr


def test_run_writes_run_dir_and_plot(cli, tiny_scenario, tmp_path):
    out = tmp_path / "out"

    res = cli("run", tiny_scenario, "--out", out, "-q", "--set", "engine.max_rounds=3")

    assert res.exit_code == 0, res.output
    run = out / "fedlora"
    for name in ("config.yaml", "rounds.csv", "clients.csv", "summary.json"):
        assert (run / name).is_file(), name
    png = out / "time_to_accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "max_rounds" in res.stdout
    assert len((run / "rounds.csv").read_text().splitlines()) == 1 + 3


def test_run_sweep_writes_one_dir_per_variant(cli, write_yaml, tiny_scenario, tmp_path):
    path = write_yaml("sweep.yaml", tiny_scenario.read_text() + "sweep:\n  method: [{name: fedlora}, {name: stld-fixed}]\n")

    res = cli("run", path, "--out", tmp_path / "out", "-q", "--seed", "5", "--set", "engine.max_rounds=2")

    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "fedlora" / "summary.json").is_file()
    assert (tmp_path / "out" / "stld-fixed" / "summary.json").is_file()
    assert "seed: 5" in (tmp_path / "out" / "stld-fixed" / "config.yaml").read_text()


@pytest.mark.parametrize("override", ["engine.max_rounds", "engine..max_rounds=3", "engine.max_rounds=0", "name.x=1"])
def test_run_bad_set_is_a_clean_error(cli, tiny_scenario, tmp_path, override):
    res = cli("run", tiny_scenario, "--out", tmp_path / "out", "-q", "--set", override)

    assert res.exit_code == 2
    assert "error:" in res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_plot_a_run(cli, tiny_scenario, tmp_path):
    cli("run", tiny_scenario, "--out", tmp_path / "out", "-q")
    png = tmp_path / "plot.png"

    res = cli("plot", tmp_path / "out" / "fedlora", "--out", png, "--x", "round")

    assert res.exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plot_not_a_run_dir(cli, tmp_path):
    res = cli("plot", tmp_path, "--out", tmp_path / "p.png")

    assert res.exit_code == 2
    assert "not a run directory" in res.stderr


def test_plot_bad_axis(cli, tiny_scenario, tmp_path):
    cli("run", tiny_scenario, "--out", tmp_path / "out", "-q")

    res = cli("plot", tmp_path / "out" / "fedlora", "--out", tmp_path / "p.png", "--x", "energy")

    assert res.exit_code == 2
    assert "--x" in res.stderr


def test_durations_read_in_the_best_unit():
    from fedsim.cli import duration

    assert [duration(s) for s in (82.4, 750.0, 12_312.0)] == ["82 s", "12.5 min", "3.42 h"]


MARKUP_PROFILES = """\
devices:
  "dev[/x]":
    description: "made by [/bold] hand [red]"
    train_gflops_per_s: 10
    app_memory_gb: 4
    availability: {window_start_h: 0, window_len_h: 24}
    straggle_prob: 0.0
    straggle_slowdown: 1.0
    dropout_prob: 0.0
    joules_per_gflop: 0.5
networks:
  "net[/x]":
    description: "[/] link"
    downlink_mbps: 50
    uplink_mbps: 10
    latency_ms: 20
    joules_per_mb_down: 0.1
    joules_per_mb_up: 0.2
"""


def test_profiles_print_markup_in_names_and_descriptions_as_written(cli, write_yaml):
    path = write_yaml("profiles/p.yaml", MARKUP_PROFILES)

    listed = cli("profiles", "--dir", path.parent)
    shown = cli("profiles", "dev[/x]", "--dir", path.parent)

    assert listed.exit_code == 0, listed.output
    assert "dev[/x]" in listed.stdout and "[/] link" in listed.stdout
    assert shown.exit_code == 0, shown.output
    assert "made by [/bold] hand [red]" in shown.stdout


def test_run_markup_in_scenario_name_and_out_path(cli, tiny_scenario, tmp_path):
    out = tmp_path / "o[/x]"

    res = cli("run", tiny_scenario, "--out", out, "-q", "--set", "name=a[bold]b[red]", "--set", "engine.max_rounds=1")

    assert res.exit_code == 0, res.output
    assert "a[bold]b[red]" in res.stdout
    assert (out / "fedlora" / "summary.json").is_file()


def test_run_out_is_a_file_is_a_clean_error(cli, tiny_scenario, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")

    res = cli("run", tiny_scenario, "--out", blocker, "-q", "--set", "engine.max_rounds=1")

    assert res.exit_code == 2
    assert "taken" in res.stderr
    assert not isinstance(res.exception, OSError)


def test_run_refuses_a_sweep_with_a_bad_model_before_any_round(cli, write_yaml, tiny_scenario, tmp_path):
    path = write_yaml("sweep.yaml", tiny_scenario.read_text() + "sweep:\n  model.name_or_path: [tiny-bert, /no/such/model]\n")

    res = cli("run", path, "--out", tmp_path / "out", "-q")

    assert res.exit_code == 2
    assert "model.name_or_path" in res.stderr and "sweep point no-such-model" in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "addition, key",
    [
        ("method: {name: legend, params: {min_depth: 9}}\n", "min_depth 9"),
        ("method: {name: droppeft, params: {arms: [{drop_prob: [0.1, 0.2]}]}}\n", "drop_prob has 2 entries"),
        ("engine: {server_overhead_s: .inf}\n", "engine.server_overhead_s"),
    ],
)
def test_validate_checks_what_run_would_refuse(cli, write_yaml, tiny_scenario, addition, key):
    text = tiny_scenario.read_text().split("engine:")[0] if addition.startswith("engine") else tiny_scenario.read_text()
    path = write_yaml("bad.yaml", text + addition)

    res = cli("validate", path)

    assert res.exit_code == 2
    assert key in res.stderr


def test_a_failing_sweep_point_does_not_stop_the_others(cli, write_yaml, tiny_scenario, tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("fedsim.study.simulate")  # fedsim.study.simulate is also the function's name
    real = module.simulate

    def flaky(sc, out_dir, **kw):
        if sc.method.name == "fedlora":
            raise RuntimeError("boom")
        return real(sc, out_dir, **kw)

    monkeypatch.setattr(module, "simulate", flaky)
    path = write_yaml("sweep.yaml", tiny_scenario.read_text() + "sweep:\n  method: [{name: fedlora}, {name: stld-fixed}]\n")

    res = cli("run", path, "--out", tmp_path / "out", "-q", "--set", "engine.max_rounds=1")

    assert res.exit_code == 1
    assert "error in fedlora: unexpected RuntimeError: boom" in res.stderr
    assert (tmp_path / "out" / "stld-fixed" / "summary.json").is_file()


def test_run_refuses_an_existing_run_dir(cli, tiny_scenario, tmp_path):
    cli("run", tiny_scenario, "--out", tmp_path / "out", "-q", "--set", "engine.max_rounds=2")
    before = (tmp_path / "out" / "fedlora" / "rounds.csv").read_bytes()

    res = cli("run", tiny_scenario, "--out", tmp_path / "out", "-q", "--set", "engine.max_rounds=3")

    assert res.exit_code == 2
    assert "--resume" in res.stderr and "--force" in res.stderr
    assert (tmp_path / "out" / "fedlora" / "rounds.csv").read_bytes() == before


def test_run_force_replaces_the_records_only(cli, tiny_scenario, tmp_path):
    cli("run", tiny_scenario, "--out", tmp_path / "out", "-q", "--set", "engine.max_rounds=2")
    (tmp_path / "out" / "fedlora" / "notes.txt").write_text("mine")

    res = cli("run", tiny_scenario, "--out", tmp_path / "out", "-q", "--force", "--set", "engine.max_rounds=3")

    assert res.exit_code == 0, res.output
    assert len((tmp_path / "out" / "fedlora" / "rounds.csv").read_text().splitlines()) == 1 + 3
    assert (tmp_path / "out" / "fedlora" / "notes.txt").read_text() == "mine"


def test_resume_of_a_sweep_skips_finished_points(cli, write_yaml, tiny_scenario, tmp_path):
    path = write_yaml("sweep.yaml", tiny_scenario.read_text() + "sweep:\n  method: [{name: fedlora}, {name: stld-fixed}]\n")
    cli("run", path, "--out", tmp_path / "out", "-q", "--set", "engine.max_rounds=2")
    done = (tmp_path / "out" / "fedlora" / "summary.json").read_bytes()
    (tmp_path / "out" / "stld-fixed" / "summary.json").unlink()  # as if killed before it finished
    (tmp_path / "out" / "stld-fixed" / "rounds.csv").write_text("garbage")

    res = cli("run", "--resume", tmp_path / "out", "-q")

    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "fedlora" / "summary.json").read_bytes() == done  # not run again
    assert json.loads((tmp_path / "out" / "stld-fixed" / "summary.json").read_text())["status"] == "ok"
    assert len((tmp_path / "out" / "stld-fixed" / "rounds.csv").read_text().splitlines()) == 1 + 2


def test_resume_needs_a_run_there(cli, tmp_path):
    res = cli("run", "--resume", tmp_path)

    assert res.exit_code == 2
    assert "no run to resume" in res.stderr


def test_sweep_labels_never_leave_out(cli, write_yaml, tiny_scenario, tmp_path):
    path = write_yaml("sweep.yaml", tiny_scenario.read_text() + "sweep:\n  description: ['..', '../../up', '.hidden']\n")

    res = cli("run", path, "--out", tmp_path / "out", "-q", "--set", "engine.max_rounds=1")

    assert res.exit_code == 0, res.output
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary.json"))
    assert written == ["out/hidden/summary.json", "out/up/summary.json", "out/x/summary.json"]


def test_scenario_name_never_leaves_runs(cli, write_yaml, tiny_scenario, tmp_path, monkeypatch):
    path = write_yaml("evil.yaml", tiny_scenario.read_text().replace("name: tiny", "name: ../../evil"))
    monkeypatch.chdir(tmp_path)

    res = cli("run", path, "-q", "--set", "engine.max_rounds=1")

    assert res.exit_code == 0, res.output
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary.json"))
    assert written == ["runs/evil/fedlora/summary.json"]


def test_compare_skips_unfinished_runs(cli, tiny_scenario, tmp_path):
    cli("run", tiny_scenario, "--out", tmp_path / "a", "-q", "--set", "engine.max_rounds=2")
    cli("run", tiny_scenario, "--out", tmp_path / "b", "-q", "--set", "engine.max_rounds=2", "--seed", "4")
    summary = tmp_path / "b" / "fedlora" / "summary.json"
    summary.write_text(summary.read_text().replace('"status": "ok"', '"status": "running"'))

    res = cli("compare", tmp_path, "--out", tmp_path)

    assert res.exit_code == 0, res.output
    assert "(1 runs)" in res.stdout
    assert "skipped" in res.stderr and str(tmp_path / "b" / "fedlora") in res.stderr
