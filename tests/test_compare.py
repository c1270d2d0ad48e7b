"""``fedsim compare``: metrics from run records, grouping over seeds, tables."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.study.compare import compare_runs, find_runs, group_key, run_metrics, to_markdown, write_csv
from fedsim.engine.records import RunRecorder


def _fake_run(path, method, seed, accs, ooms, tta=None, mem=(1e9, 2e9)):
    rec = RunRecorder(path, {"method": {"name": method}})
    for r, (acc, oom) in enumerate(zip(accs, ooms)):
        rec.round({"round": r, "sim_time_s": 100.0 * (r + 1), "accuracy": acc, "oom": oom, "straggler": 1, "dropout": 0,
                   "bytes_up": 1e9, "bytes_down": 2e9, "energy_j": 500.0, "personal_accuracy": None})
    n = len(mem)
    rec.clients({"round": np.zeros(n), "device_id": np.arange(n), "device_class": np.array(["a"] * n, dtype=object),
                 "network_class": np.array(["w"] * n, dtype=object), "plan": np.array(["p"] * n, dtype=object),
                 "mean_drop": np.zeros(n), "start_s": np.zeros(n), "end_s": np.ones(n), "download_s": np.ones(n),
                 "compute_s": np.ones(n), "upload_s": np.ones(n), "outcome": np.array(["ok", "oom"][:n], dtype=object),
                 "bytes_down": np.ones(n), "bytes_up": np.ones(n), "energy_j": np.ones(n),
                 "peak_mem_bytes": np.array(mem), "mem_cap_bytes": np.full(n, 1.5e9), "num_examples": np.full(n, 20), "retries": np.zeros(n)})
    rec.summary({"method": method, "seed": seed, "variant": f"{method}_seed-{seed}", "status": "ok",
                 "final_accuracy": accs[-1], "best_accuracy": max(accs), "time_to_target_s": tta})
    rec.close()
    return path


def test_group_key_is_method_and_params_without_the_seed():
    assert group_key({"variant": "caesar_seed-3", "method": "caesar"}) == "caesar"
    assert group_key({"variant": "07-legend_seed-0"}) == "legend"
    assert group_key({"variant": "", "method": "pld"}) == "pld"
    cfg = {"method": {"name": "droppeft", "params": {"compression": "caesar", "caesar": {"staleness_tau": 5.0}}}}
    assert group_key({"variant": "03-droppeft_seed-1"}, cfg) == "droppeft[caesar={staleness_tau=5},compression=caesar]"


def test_run_metrics_sum_rounds_and_take_peak_of_ok_clients(tmp_path):
    d = _fake_run(tmp_path / "a", "pld", 0, [0.5, 0.7], [2, 1], tta=7200.0)
    m = run_metrics(d)
    assert m["final_accuracy"] == 0.7 and m["oom"] == 3 and m["straggler"] == 2
    assert m["traffic_up_gb"] == 2e9 and m["energy_kj"] == 1000.0
    assert m["peak_mem_gb"] == 1e9  # the 2 GB client failed with oom
    assert m["time_to_target"] == 7200.0 and math.isnan(m["personal_accuracy"])


def test_compare_gives_mean_and_std_over_seeds_and_writes_tables(tmp_path):
    # Prepare
    _fake_run(tmp_path / "runs" / "s0", "pld", 0, [0.6], [0], tta=3600.0)
    _fake_run(tmp_path / "runs" / "s1", "pld", 1, [0.8], [2], tta=None)
    _fake_run(tmp_path / "runs" / "f0", "fedlora", 0, [0.9], [0], tta=1800.0)
    # Execute
    rows = {r["group"]: r for r in compare_runs(find_runs([tmp_path / "runs"]))}
    # Assert
    assert rows["pld"]["n"] == 2 and rows["pld"]["reached"] == 1
    assert rows["pld"]["final_accuracy"] == pytest.approx(0.7)
    assert rows["pld"]["final_accuracy_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert rows["pld"]["time_to_target"] == pytest.approx(3600.0)  # over the run that reached it
    assert rows["pld"]["oom"] == 1.0 and rows["pld"]["traffic_up_gb"] == pytest.approx(1.0)
    md = to_markdown(list(rows.values()))
    assert "| pld | 2 | 3600 (1/2) | 0.700 ± 0.141 |" in md
    path = write_csv(list(rows.values()), tmp_path / "t.csv")
    got = {r["group"]: r for r in csv.DictReader(open(path))}
    assert float(got["fedlora"]["time_to_target"]) == pytest.approx(1800.0)


def test_cli_compare_prints_and_writes(tmp_path, tiny_scenario):
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(tiny_scenario), "--out", str(tmp_path / "r"), "-q",
                              "--set", 'sweep={"method": [{"name": "pld"}, {"name": "legend"}], "seed": [1, 2]}'])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compare", str(tmp_path / "r"), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "| legend [surrogate] | 2 |" in res.output and "| pld [surrogate] | 2 |" in res.output
    assert (tmp_path / "c" / "compare.csv").is_file() and (tmp_path / "c" / "compare.md").is_file()
    assert json.loads((tmp_path / "r" / "pld_seed-1" / "summary.json").read_text())["seed"] == 1


def test_cli_compare_prints_method_parameters_in_brackets(tmp_path):
    # Prepare: a label with brackets must not be eaten as console markup
    rec = RunRecorder(tmp_path / "r" / "a", {"method": {"name": "stld-fixed", "params": {"mean_drop": 0.5}}})
    rec.round({"round": 0, "sim_time_s": 10.0, "accuracy": 0.5, "oom": 0, "straggler": 0, "dropout": 0,
               "bytes_up": 1.0, "bytes_down": 1.0, "energy_j": 1.0, "personal_accuracy": None})
    rec.summary({"method": "stld-fixed", "seed": 0, "variant": "a", "status": "ok", "final_accuracy": 0.5})
    rec.close()
    # Execute
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "r")])
    # Assert
    assert res.exit_code == 0, res.output
    assert "stld-fixed[mean_drop=0.5]" in res.output


def _truncate(path, keep):
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:keep], encoding="utf-8")


@pytest.mark.parametrize(
    "damage, names",
    [
        (lambda d: _truncate(d / "summary.json", 20), "summary.json"),
        (lambda d: (d / "summary.json").write_text("[1, 2]"), "summary.json"),
        (lambda d: (d / "summary.json").write_text('{"final_accuracy": "high"}'), "summary.json"),
        (lambda d: (d / "summary.json").write_bytes(b"\xff\xfe\x00"), "summary.json"),
        (lambda d: _truncate(d / "rounds.csv", len((d / "rounds.csv").read_text()) - 30), "rounds.csv"),
        (lambda d: (d / "rounds.csv").write_text("round,accuracy\n0,0.5\n"), "rounds.csv"),
        (lambda d: (d / "rounds.csv").write_text((d / "rounds.csv").read_text().replace("500", "lots")), "rounds.csv"),
        (lambda d: _truncate(d / "clients.csv", len((d / "clients.csv").read_text()) - 15), "clients.csv"),
        (lambda d: (d / "config.yaml").write_text("method: [unclosed\n"), "config.yaml"),
    ],
    ids=["summary-truncated", "summary-not-object", "summary-bad-type", "summary-binary", "rounds-truncated",
         "rounds-missing-columns", "rounds-bad-number", "clients-truncated", "config-bad-yaml"],
)
def test_corrupt_records_are_clean_errors_naming_the_file(tmp_path, damage, names):
    # Prepare
    run = _fake_run(tmp_path / "run", "fedlora", 0, [0.5, 0.6], [0, 1])
    damage(run)
    runner = CliRunner()
    # Execute
    compared = runner.invoke(app, ["compare", str(run)])
    plotted = runner.invoke(app, ["plot", str(run), "--out", str(tmp_path / "p.png")])
    # Assert
    assert compared.exit_code == 2, compared.output
    assert "Traceback" not in compared.output and not isinstance(compared.exception, (ValueError, TypeError, KeyError))
    assert names in compared.stderr
    if names in ("summary.json", "rounds.csv"):  # what a plot reads
        assert plotted.exit_code == 2, plotted.output
        assert names in plotted.stderr


def test_markup_in_labels_prints_as_written(tmp_path):
    # Prepare
    run = _fake_run(tmp_path / "run", "fedlora", 0, [0.5, 0.6], [0, 1])
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "variant": "a[/x]$\\frac$"}))
    (run / "config.yaml").write_text("method: {name: 'x[/bold]y', params: {a: '[/x]'}}\n")
    # Execute
    compared = CliRunner().invoke(app, ["compare", str(run)])
    plotted = CliRunner().invoke(app, ["plot", str(run), "--out", str(tmp_path / "p.png")])
    # Assert
    assert compared.exit_code == 0, compared.output
    assert "x[/bold]y[a=[/x]]" in compared.stdout
    assert plotted.exit_code == 0, plotted.output


def test_surrogate_and_real_training_never_share_a_group(tmp_path):
    # Prepare: the same method and seed, one run per trainer kind
    for kind in ("torch", "surrogate"):
        rec = RunRecorder(tmp_path / kind, {"method": {"name": "fedlora"}, "trainer": {"kind": kind}})
        rec.round({"round": 0, "sim_time_s": 10.0, "accuracy": 0.5, "oom": 0, "straggler": 0, "dropout": 0,
                   "bytes_up": 1.0, "bytes_down": 1.0, "energy_j": 1.0, "personal_accuracy": None})
        rec.summary({"method": "fedlora", "seed": 0, "variant": kind, "status": "ok", "final_accuracy": 0.5})
        rec.close()
    # Execute
    rows = compare_runs([tmp_path / "torch", tmp_path / "surrogate"])
    # Assert
    assert sorted(r["group"] for r in rows) == ["fedlora", "fedlora [surrogate]"]
