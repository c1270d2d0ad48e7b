"""``fedsim sweep``: a grid of points and seeds on a tiny surrogate scenario, end to end."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.core.errors import ConfigError, FedsimError
from fedsim.study.parallel import get_executor
from fedsim.study.sweep import plan_sweep

GRID = ["network.*.up_mbps*=1,0.25", "--grid", "engine.round_deadline_s=60,600"]


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    from tests.conftest import TINY_SCENARIO

    root = tmp_path_factory.mktemp("sweep")
    sc = root / "tiny.yaml"
    sc.write_text(TINY_SCENARIO, encoding="utf-8")
    res = _cli("sweep", sc, "--grid", *GRID, "--seeds", "0,1", "--out", root / "out", "-q")
    return sc, root / "out", res


def test_one_folder_per_point_and_seed(swept):
    _, out, res = swept
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "plots")
    assert names == sorted(f"up_mbps-x{f}_round_deadline_s-{d}_seed-{s}" for f in ("1", "0.25") for d in (60, 600) for s in (0, 1))
    assert (out / "sweep.yaml").is_file()


def test_study_table_is_printed_within_80_columns_and_written(swept):
    _, out, res = swept
    table = res.stdout.split("points differ in")[0]
    assert "to target" in table and "final" in table and "traffic" in table and "energy" in table and "failures" in table
    assert max(len(line) for line in table.splitlines()) <= 80
    rows = list(csv.DictReader(open(out / "study.csv", encoding="utf-8")))
    assert len(rows) == 4 and {r["n"] for r in rows} == {"2"}
    assert {r["fleet.scale.network.*.uplink_mbps"] for r in rows} == {"1.0", "0.25"}
    assert "engine.round_deadline_s" in rows[0] and "final_accuracy_std" in rows[0]


def test_study_plots_are_written_as_png_and_pdf(swept):
    _, out, _ = swept
    for name in ("accuracy_vs_time", "time_to_target", "resources_by_class", "participation_by_class", "timeline"):
        if name == "time_to_target":
            continue  # the tiny scenario has no target
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "plots" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_a_sweep_point_has_the_records_of_the_same_run_alone(swept, tmp_path):
    sc, out, _ = swept
    # Execute: the point as a plain run with --set
    res = _cli("run", sc, "--out", tmp_path / "alone", "-q", "--seed", "1", "--set", "fleet.scale.network.*.up_mbps=0.25",
               "--set", "engine.round_deadline_s=60")
    # Assert
    assert res.exit_code == 0, res.output
    for f in ("rounds.csv", "clients.csv"):
        assert (tmp_path / "alone" / "fedlora" / f).read_bytes() == (out / "up_mbps-x0.25_round_deadline_s-60_seed-1" / f).read_bytes()


def test_a_second_sweep_into_the_folder_is_refused_then_resumed(swept):
    sc, out, _ = swept
    refused = _cli("sweep", sc, "--grid", *GRID, "--seeds", "0,1", "--out", out, "-q")
    resumed = _cli("sweep", sc, "--grid", *GRID, "--seeds", "0,1", "--out", out, "-q", "--resume", "--no-plots")
    assert refused.exit_code == 2 and "already holds" in refused.stderr
    assert resumed.exit_code == 0, resumed.output


def test_validate_checks_the_whole_grid(swept):
    sc, _, _ = swept
    ok = _cli("validate", sc, "--grid", *GRID, "--seeds", "0-2")
    bad = _cli("validate", sc, "--grid", "device.*.dropout_prob*=1,100")
    assert ok.exit_code == 0 and "4 points x 3 seeds = 12 runs" in ok.stdout
    assert bad.exit_code == 2 and "fleet.scale.device.*.dropout_prob" in bad.stderr and "sweep point" in bad.stderr


def test_a_grid_too_large_is_refused_with_its_size(swept, tmp_path):
    sc, _, _ = swept
    res = _cli("sweep", sc, "--grid", "engine.max_rounds=" + ",".join(map(str, range(1, 201))), "--grid",
               "local.local_steps=" + ",".join(map(str, range(1, 101))), "--out", tmp_path / "big")
    assert res.exit_code == 2 and "200 x 100 x 1 = 20,000 points" in res.stderr
    assert not (tmp_path / "big").exists()


def test_points_can_be_named(swept, tmp_path):
    sc, _, _ = swept
    plan = plan_sweep(sc, tmp_path / "o", ["network.*.up_mbps*=1,0.25"], seeds=[0], names="base,slow-up")
    assert [r.run_dir.name for r in plan.runs] == ["base_seed-0", "slow-up_seed-0"]
    with pytest.raises(ConfigError, match="seeds are given with --seeds"):
        plan_sweep(sc, tmp_path / "o", ["seed=1,2"])


def test_executors_by_name():
    with pytest.raises(FedsimError, match="unknown executor"):
        get_executor("threads")
    with pytest.raises(FedsimError, match="use --executor process or ray"):
        list(get_executor("local")(print, [(1,)], 2))
    with pytest.raises(FedsimError, match="needs the ray executor"):
        get_executor("process", address="ray://x:1")
    assert [r for _, r in get_executor("local")(abs, [(-2,), (3,)], 1)] == [2, 3]


def test_the_ray_executor_missing_is_one_line_before_anything_is_written(swept, tmp_path, monkeypatch):
    import sys

    sc, _, _ = swept
    monkeypatch.setitem(sys.modules, "fedsim.study.ray_executor", None)  # import fails as without Ray
    res = _cli("sweep", sc, "--executor", "ray", "--jobs", "2", "--out", tmp_path / "r", "-q")
    assert res.exit_code == 2 and "the ray executor is not available" in res.stderr and "pip install" in res.stderr
    assert not (tmp_path / "r").exists()
