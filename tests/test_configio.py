"""YAML loading with line numbers, overrides, and pydantic errors turned into ConfigError."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from fedsim.core.configio import apply_overrides, load_model, parse_override, read_yaml
from fedsim.core.errors import ConfigError, FedsimError
from fedsim.study.scenario import Scenario


class Engine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_rounds: int = Field(10, ge=1)
    deadline_s: float | None = None


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    engine: Engine = Field(default_factory=Engine)


DOC = """\
# a comment
name: demo
engine:
  max_rounds: 3
  deadline_s: 60
"""


def _problem(err: ConfigError, path: str):
    matches = [p for p in err.problems if p[0] == path]
    assert matches, f"no problem at {path!r} in {err.problems}"
    return matches[0]


def test_read_yaml_maps_key_paths_to_lines(write_yaml):
    path = write_yaml("doc.yaml", DOC)

    data, lines = read_yaml(path)

    assert data == {"name": "demo", "engine": {"max_rounds": 3, "deadline_s": 60}}
    assert lines[("name",)] == 2
    assert lines[("engine",)] == 3
    assert lines[("engine", "max_rounds")] == 4
    assert lines[("engine", "deadline_s")] == 5


def test_read_yaml_lines_of_sequence_items(write_yaml):
    path = write_yaml("seq.yaml", "values:\n  - 1\n  - {a: 2}\n")

    _, lines = read_yaml(path)

    assert lines[("values", 0)] == 2
    assert lines[("values", 1, "a")] == 3


def test_load_model_valid_file(write_yaml):
    path = write_yaml("doc.yaml", DOC)

    doc = load_model(Doc, path)

    assert doc.name == "demo"
    assert doc.engine.max_rounds == 3


def test_bad_value_names_file_line_path_value_and_expectation(write_yaml):
    path = write_yaml("doc.yaml", DOC.replace("max_rounds: 3", "max_rounds: 0"))

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path)

    err = info.value
    assert err.file == str(path)
    dotted, line, value, expected = _problem(err, "engine.max_rounds")
    assert line == 4
    assert value == 0
    assert "greater than or equal to 1" in expected


def test_unknown_key_rejected_with_dotted_path_and_line(write_yaml):
    path = write_yaml("doc.yaml", DOC + "  max_roundz: 5\n")

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path)

    dotted, line, value, expected = _problem(info.value, "engine.max_roundz")
    assert line == 6
    assert value == 5
    assert "not a known key" in expected
    assert "line 6" in str(info.value)
    assert "'engine.max_roundz'" in str(info.value)


def test_unknown_key_in_scenario_names_dotted_path_and_line(write_yaml):
    path = write_yaml(
        "sc.yaml",
        """\
        fleet:
          size: 10
          devices: {phone-mid: 1.0}
          networks: {wifi: 1.0}
        engine:
          max_rounds: 2
          round_dedline_s: 30
        """,
    )

    with pytest.raises(ConfigError) as info:
        load_model(Scenario, path)

    dotted, line, value, _ = _problem(info.value, "engine.round_dedline_s")
    assert line == 7
    assert value == 30


def test_missing_required_key_points_at_parent_line(write_yaml):
    path = write_yaml("sc.yaml", "seed: 1\nfleet:\n  size: 10\n  networks: {wifi: 1.0}\n")

    with pytest.raises(ConfigError) as info:
        load_model(Scenario, path)

    dotted, line, value, expected = _problem(info.value, "fleet.devices")
    assert line == 2  # the 'fleet:' mapping the key is missing from
    assert value is ConfigError.MISSING
    assert "required" in expected
    assert "'fleet.devices': is required" in str(info.value)


def test_missing_top_level_key(write_yaml):
    path = write_yaml("doc.yaml", "engine: {max_rounds: 2}\n")

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path)

    dotted, line, value, expected = _problem(info.value, "name")
    assert "required" in expected


def test_all_problems_reported_together(write_yaml):
    path = write_yaml("doc.yaml", "name: x\nengine:\n  max_rounds: 0\n  deadline_s: soon\n  extra: 1\n")

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path)

    paths = sorted(p[0] for p in info.value.problems)
    assert paths == ["engine.deadline_s", "engine.extra", "engine.max_rounds"]
    assert "3 problems" in str(info.value)


def test_bad_yaml_syntax_gives_config_error_with_line(write_yaml):
    path = write_yaml("doc.yaml", "name: demo\nengine:\n  max_rounds: [1, 2\n  deadline_s: 3\n")

    with pytest.raises(ConfigError) as info:
        read_yaml(path)

    (dotted, line, value, expected), = info.value.problems
    assert line in (3, 4)  # the open bracket, or where the parser noticed
    assert "not valid YAML" in expected
    assert str(path) in str(info.value)


def test_tab_indentation_is_a_config_error(write_yaml):
    path = write_yaml("doc.yaml", "name: demo\nengine:\n\tmax_rounds: 3\n")

    with pytest.raises(ConfigError) as info:
        read_yaml(path)

    assert info.value.problems[0][1] == 3


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as info:
        read_yaml(path)

    assert info.value.file == str(path)
    assert "does not exist" in str(info.value)


def test_config_error_is_a_fedsim_error():
    err = ConfigError("f.yaml", [("a.b", 3, 7, "expected: something")])

    assert isinstance(err, FedsimError)
    assert str(err) == "Invalid f.yaml (problem): line 3, 'a.b' = 7: expected: something."


def test_empty_file_validates_as_an_empty_mapping(write_yaml):
    path = write_yaml("empty.yaml", "")

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path)

    assert [p[0] for p in info.value.problems] == ["name"]


def test_override_sets_existing_key(write_yaml):
    path = write_yaml("doc.yaml", DOC)

    doc = load_model(Doc, path, overrides=["engine.max_rounds=5"])

    assert doc.engine.max_rounds == 5
    assert doc.engine.deadline_s == 60


def test_override_creates_nested_keys():
    data = {"name": "x"}

    out = apply_overrides(data, ["engine.max_rounds=7", "a.b.c=[1, 2]"])

    assert out == {"name": "x", "engine": {"max_rounds": 7}, "a": {"b": {"c": [1, 2]}}}
    assert data == {"name": "x"}  # the input is not modified


def test_override_values_are_yaml():
    assert parse_override("engine.max_rounds=50") == (["engine", "max_rounds"], 50)
    assert parse_override("x=0.5") == (["x"], 0.5)
    assert parse_override("x=null") == (["x"], None)
    assert parse_override("x=") == (["x"], None)
    assert parse_override("x=true") == (["x"], True)
    assert parse_override("m={name: fedlora}") == (["m"], {"name": "fedlora"})
    assert parse_override("s=a=b") == (["s"], "a=b")


def test_override_bad_value_reported_at_its_path(write_yaml):
    path = write_yaml("doc.yaml", DOC)

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path, overrides=["engine.max_rounds=-1"])

    dotted, _, value, _ = _problem(info.value, "engine.max_rounds")
    assert value == -1


@pytest.mark.parametrize("text", ["engine.max_rounds", "=5", "a..b=1", ".a=1", "a.=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError) as info:
        parse_override(text)

    assert "dotted" in str(info.value)


def test_override_through_a_scalar_is_an_error():
    with pytest.raises(ConfigError) as info:
        apply_overrides({"name": "x"}, ["name.first=y"], file="doc.yaml")

    assert info.value.problems[0][0] == "name"
    assert "doc.yaml" in str(info.value)


def test_rendered_message_is_one_paragraph(write_yaml):
    path = write_yaml("doc.yaml", "name: demo\nengine:\n  max_rounds: 0\n  bogus: {a: 1}\n")

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path)

    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"Invalid {path} (2 problems): ")
    assert msg.endswith(".")
    assert "line 3, 'engine.max_rounds' = 0: expected:" in msg
    assert "line 4, 'engine.bogus' = {'a': 1}: is not a known key" in msg
    assert "Traceback" not in msg


def test_long_values_are_shortened(write_yaml):
    path = write_yaml("doc.yaml", "name: demo\nengine:\n  max_rounds: " + "x" * 200 + "\n")

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path)

    assert "x" * 200 not in str(info.value)
    assert "..." in str(info.value)


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"name: caf\xe9\n", "is not UTF-8 text (byte 9"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not UTF-8 text"),
        (b"\x00\x01\x02name: x\n", "is not valid YAML"),
        (("a: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "levels deep"),
        (("a: " + "{b: " * 80 + "1" + "}" * 80 + "\n").encode(), "levels deep"),
        (ALIAS_BOMB.encode(), "aliases *name included"),
        (b"a: &a [*a]\n", "contains it"),
        (("seed: " + "9" * 5000 + "\n").encode(), "cannot be read"),
        (b"? [a, b]\n: 1\n", "unhashable key"),
        (b"name: !!python/object/apply:os.system ['true']\n", "is not valid YAML"),
    ],
    ids=["latin-1", "binary", "control-chars", "deep-5000", "deep-80", "alias-bomb", "self-alias", "huge-int",
         "list-as-key", "python-tag"],
)
def test_hostile_yaml_is_a_clean_config_error(tmp_path, content, expected):
    path = tmp_path / "hostile.yaml"
    path.write_bytes(content)

    with pytest.raises(ConfigError) as info:
        load_model(Doc, path)

    assert expected in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_alias_bomb_is_refused_quickly(tmp_path):
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    start = time.perf_counter()

    with pytest.raises(ConfigError):
        read_yaml(path)

    assert len(ALIAS_BOMB) < 400
    assert time.perf_counter() - start < 1.0


def test_a_few_aliases_are_fine(write_yaml):
    path = write_yaml("ok.yaml", "base: &b {max_rounds: 3}\nname: x\nengine: *b\n")

    data, _ = read_yaml(path)

    assert data["engine"] == {"max_rounds": 3}


def test_directory_is_not_a_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        read_yaml(tmp_path)


@pytest.mark.parametrize("text", ["a=" + "[" * 5000, "a=&x [*x]", "a=" + "9" * 5000])
def test_hostile_override_value_is_a_clean_error_or_text(text):
    try:
        parts, value = parse_override(text)
    except ConfigError as exc:
        assert "--set a" in str(exc)
    else:
        assert parts == ["a"] and isinstance(value, str)


def test_long_run_of_open_brackets_is_refused_quickly(tmp_path):
    import time

    path = tmp_path / "brackets.yaml"
    path.write_text("a: " + "[" * 200_000 + "\n")
    start = time.perf_counter()

    with pytest.raises(ConfigError, match="levels deep"):
        read_yaml(path)

    assert time.perf_counter() - start < 2.0


def test_endless_file_is_read_only_up_to_the_bound():
    with pytest.raises(ConfigError, match="larger than 16 MiB"):
        read_yaml("/dev/zero")


def test_a_config_error_crosses_process_boundaries():
    """A worker of a process pool (the benchmarks' --jobs, sweeps, Ray) that raises a
    ConfigError hands it to its parent pickled: it must come back whole, message and
    problems, with a missing value still missing, not break the pool."""
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    err = ConfigError("/x/s.yaml", [("fleet.size", 3, 0, "expected >= 1"), ("model", None, ConfigError.MISSING, "required")])
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ConfigError and str(back) == str(err)
    assert back.problems[1][2] is ConfigError.MISSING and back.file == err.file
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(ConfigError) as info:
            pool.submit(_raise_config_error).result()
    assert "fleet.size" in str(info.value)
    from fedsim.fleet.traces import TraceError

    trace = TraceError("/x/t.json", "expected a number", client="c1", field="up_kbps")
    assert str(pickle.loads(pickle.dumps(trace))) == str(trace)


def _raise_config_error():
    raise ConfigError("/x/s.yaml", [("fleet.size", 3, 0, "expected >= 1")])
