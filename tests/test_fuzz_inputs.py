"""Property-based fuzzing of every input: scenario and profile files, ``--set`` overrides
and user data files.

Each generated input must give either a clean :class:`~fedsim.core.errors.FedsimError` (one
paragraph naming the file or key) or a valid result; an accepted scenario is then run for
two rounds with the surrogate trainer and its records must hold no NaN. Hostile inputs
are drawn on purpose: random bytes, invalid UTF-8, deep nesting, aliases, huge numbers,
NaN / inf spellings, booleans where counts are meant, unknown keys, ``[/x]`` markup and
``../..`` paths. Runs are derandomised, so CI sees the same cases every time; the number
of cases is reported in the terminal summary (``fuzz_cases`` in ``conftest.py``).
"""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_SCENARIO
from fedsim.core.errors import FedsimError
from fedsim.fleet.profiles import load_profiles
from fedsim.engine.records import read_clients, read_rounds, read_summary
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import simulate
from fedsim.learning.real.data import DataError, read_table



def fuzz(max_examples: int) -> settings:
    """Deterministic (derandomised, no example database) and without per-case deadlines."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Raw YAML spellings that a hand-written file might hold (or an attacker might try).
HOSTILE_SCALARS = [
    ".nan", ".NaN", "-.inf", ".inf", "1e999", "-1e999", "nan", "inf", "true", "false", "yes", "null", "~",
    "0", "-1", "1.5", "0x7fffffffffffffff", "9" * 30, "9" * 5000, "'[/x]'", "'[bold]x[/bold]'", "'../../etc/passwd'",
    "'..'", "[]", "{}", "[1, [2, [3]]]", "&a [*a]", "*nope", "!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']",
    "!!timestamp 2001-12-14", "'\\u0000'", '"\\x00\\x07"', "{a: 1, a: 2}", "[" * 200 + "]" * 200,
]

# The keys of the tiny scenario (and a few it does not set), to aim values at.
SCENARIO_KEYS = [
    "name", "seed", "description", "fleet.size", "fleet.devices.jetson-tx2", "fleet.devices.phone-high",
    "fleet.networks.wifi", "fleet.network_by_device.jetson-tx2.ethernet", "fleet.profiles_dir",
    "model.name_or_path", "model.lora_rank", "model.lora_alpha", "model.lora_targets", "data.max_length",
    "data.dataset", "data.train_file", "local.batch_size", "local.local_steps", "trainer.kind",
    "trainer.examples_per_client", "trainer.surrogate.rate", "trainer.surrogate.noise_std",
    "trainer.surrogate.acc_max", "engine.clients_per_round", "engine.over_selection", "engine.max_rounds",
    "engine.round_deadline_s", "engine.server_overhead_s", "engine.idle_wait_s", "engine.max_idle_s",
    "engine.start_hour_utc", "engine.target_accuracy", "engine.eval_every", "engine.transfers.failure_prob",
    "engine.transfers.backoff_s", "engine.transfers.retries", "engine.driver", "engine.fedbuff.buffer_k",
    "engine.fedbuff.concurrency", "engine.fedbuff.staleness_exponent", "engine.fedbuff.max_staleness",
    "engine.server_link", "engine.server_link.up_mbps", "engine.cells", "engine.cells.count", "train.device", "method.name", "method.params",
    "method.params.mean_drop", "method.params.min_depth", "method.params.rank_levels",
    "method.params.staleness_tau", "method.params.drop_prob", "sweep", "sweep.seed", "sweep.method",
    "colour", "fleet.colour", "engine.[/x]", "../..",
]

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["[/x]", "../..", "../../etc/passwd", "tiny-bert", "fedlora", "legend", "droppeft", "stld-fixed", "async"]),
)
values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
method_blocks = st.fixed_dictionaries(
    {"name": st.sampled_from(["fedlora", "stld-fixed", "legend", "caesar", "pld", "fedavg-full", "droppeft", "nope"])},
    optional={"params": st.dictionaries(
        st.sampled_from(["mean_drop", "min_depth", "rank_levels", "staleness_tau", "target_quantile", "max_batch", "drop_prob", "bogus"]),
        values, max_size=3)},
)


def _count(fuzz_cases, name: str) -> None:
    fuzz_cases[name] += 1


def _assert_clean(err: FedsimError, *names: str) -> None:
    """A user error: one paragraph, naming (one of) the file or key it is about."""
    text = str(err)
    assert text and "\n" not in text, text
    assert "Traceback" not in text
    if names:
        assert any(n in text for n in names), (names, text)


def _set(data: dict, dotted: str, value) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _run_briefly(variants, out_dir: Path, fuzz_cases) -> None:
    """Two surrogate rounds of each small accepted variant; records must be finite."""
    for v in variants[:2]:
        sc = v.scenario
        if sc.trainer.kind != "surrogate" or sc.fleet.size > 2000 or sc.local.local_steps * sc.local.batch_size > 10**9:
            continue
        sc = sc.model_copy(update={"engine": sc.engine.model_copy(update={"max_rounds": 2})})
        run = out_dir / f"run{len(list(out_dir.glob('run*')))}"
        _count(fuzz_cases, "runs simulated")
        try:
            simulate(sc, run)
        except FedsimError as exc:
            _assert_clean(exc)
        _assert_finite_records(run)


def _assert_finite_records(run: Path) -> None:
    for name, column in read_rounds(run).items():
        if name in ("accuracy", "loss", "personal_accuracy", "train_loss"):
            column = column[~np.isnan(column)]  # empty cells: not evaluated that round
        assert np.isfinite(column).all(), (name, column)
    for name, column in read_clients(run).items():
        if name == "staleness":
            column = column[~np.isnan(column)]  # empty cells: updates not aggregated
        if column.dtype != object:
            assert np.isfinite(column).all(), (name, column)
            assert (column > -1e18).all(), (name, column)  # no int64 wrap-around from a NaN
    summary = read_summary(run)
    for key, value in summary.items():
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)


def _load_or_error(path: Path, **kw):
    try:
        return load_scenario(path, **kw)
    except FedsimError as exc:
        _assert_clean(exc, str(path), "--set")
        return None


def _load_and_run(path: Path, fuzz_dir: Path, fuzz_cases, **kw) -> None:
    """A clean error, or a scenario whose first rounds give finite records."""
    variants = _load_or_error(path, **kw)
    if variants is not None:
        _run_briefly(variants, fuzz_dir, fuzz_cases)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _alias_bomb(levels: int, fan_out: int) -> str:
    """``levels`` anchors, each a list of ``fan_out`` aliases of the one before."""
    names = [f"l{i}" for i in range(levels)]
    text = f"{names[0]}: &{names[0]} [{', '.join(['x'] * fan_out)}]\n"
    for prev, name in zip(names, names[1:]):
        text += f"{name}: &{name} [{', '.join(['*' + prev] * fan_out)}]\n"
    return text


def _nested(depth: int, kind: str) -> str:
    return "a: " + ("[" * depth + "]" * depth if kind == "flow" else "{b: " * depth + "1" + "}" * depth)


@fuzz(100)
@given(content=st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=200).map(lambda b: TINY_SCENARIO.encode() + b),
    st.text(max_size=300).map(str.encode),
    st.builds(_alias_bomb, st.integers(2, 12), st.integers(2, 12)).map(lambda t: (TINY_SCENARIO + t).encode()),
    st.builds(_nested, st.integers(1, 6000), st.sampled_from(["flow", "map"])).map(lambda t: (TINY_SCENARIO + t).encode()),
    st.sampled_from(["? [a]\n: 1\n", "? {a: 1}\n: 1\n", "--- 1\n--- 2\n", "%YAML 9.9\n---\na: 1\n", "a: !!set {x}\n",
                     "<<: *x\n", "a: &x 1\nb: {<<: *x}\n", "!!binary AAAA\n"]).map(lambda t: (TINY_SCENARIO + t).encode()),
))
def test_scenario_file_from_random_bytes(fuzz_dir, fuzz_cases, content):
    _count(fuzz_cases, "scenario bytes")
    path = fuzz_dir / "bytes.yaml"
    path.write_bytes(content)

    _load_and_run(path, fuzz_dir, fuzz_cases)


@fuzz(200)
@given(key=st.sampled_from(SCENARIO_KEYS), raw=st.sampled_from(HOSTILE_SCALARS), inline=st.booleans())
def test_scenario_with_a_hostile_yaml_spelling(fuzz_dir, fuzz_cases, key, raw, inline):
    _count(fuzz_cases, "scenario hostile spelling")
    parts = key.split(".")
    if inline:  # replace the value in the text, keeping the rest of the file as written
        lines = TINY_SCENARIO.splitlines()
        hit = [i for i, line in enumerate(lines) if line.strip().startswith(parts[-1] + ":")]
        if hit:
            indent = lines[hit[0]][: len(lines[hit[0]]) - len(lines[hit[0]].lstrip())]
            lines[hit[0]] = f"{indent}{parts[-1]}: {raw}"
        text = "\n".join(lines) + "\n"
    else:  # append a nested block for the key
        block = "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parts[:-1])) + f"{'  ' * (len(parts) - 1)}{parts[-1]}: {raw}\n"
        text = TINY_SCENARIO + block
    path = fuzz_dir / "spelling.yaml"
    path.write_text(text, encoding="utf-8")

    _load_and_run(path, fuzz_dir, fuzz_cases)


@fuzz(250)
@given(changes=st.lists(st.tuples(st.sampled_from(SCENARIO_KEYS), values | method_blocks), min_size=1, max_size=3))
def test_scenario_with_random_values(fuzz_dir, fuzz_cases, changes):
    _count(fuzz_cases, "scenario values")
    data = yaml.safe_load(TINY_SCENARIO)
    for key, value in changes:
        _set(data, key, value)
    path = fuzz_dir / "values.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    _load_and_run(path, fuzz_dir, fuzz_cases)


@fuzz(250)
@given(
    key=st.one_of(st.sampled_from(SCENARIO_KEYS), st.text(max_size=20)),
    raw=st.one_of(st.sampled_from(HOSTILE_SCALARS), st.text(max_size=30)),
)
def test_set_override(fuzz_dir, fuzz_cases, tiny_path, key, raw):
    _count(fuzz_cases, "--set override")

    _load_and_run(tiny_path, fuzz_dir, fuzz_cases, overrides=[f"{key}={raw}"])


@pytest.fixture(scope="module")
def tiny_path(fuzz_dir):
    path = fuzz_dir / "tiny.yaml"
    path.write_text(TINY_SCENARIO, encoding="utf-8")
    return path


PROFILE = textwrap.dedent("""\
    devices:
      dev:
        description: fuzzed device
        train_gflops_per_s: {dist: lognormal, median: 10, sigma: 0.5, min: 1, max: 50}
        app_memory_gb: 3
        availability: {window_start_h: 0, window_len_h: 24}
        straggle_prob: 0.1
        straggle_slowdown: {dist: uniform, low: 1, high: 3}
        dropout_prob: 0.05
        joules_per_gflop: 0.3
    networks:
      net:
        description: fuzzed link
        downlink_mbps: {dist: normal, mean: 40, std: 10, min: 1, max: 100}
        uplink_mbps: {dist: choice, values: [5, 10, 20], weights: [1, 1, 2]}
        latency_ms: 30
        joules_per_mb_down: 0.1
        joules_per_mb_up: 0.2
""")
PROFILE_KEYS = [
    "devices.dev.train_gflops_per_s", "devices.dev.train_gflops_per_s.median", "devices.dev.train_gflops_per_s.sigma",
    "devices.dev.train_gflops_per_s.max", "devices.dev.train_gflops_per_s.min", "devices.dev.app_memory_gb",
    "devices.dev.availability.window_len_h", "devices.dev.availability.skip_day_prob", "devices.dev.straggle_prob",
    "devices.dev.straggle_slowdown.high", "devices.dev.dropout_prob", "devices.dev.joules_per_gflop",
    "networks.net.downlink_mbps.std", "networks.net.downlink_mbps.mean", "networks.net.uplink_mbps.weights",
    "networks.net.uplink_mbps.values", "networks.net.latency_ms", "networks.net.joules_per_mb_up",
    "devices.dev.colour", "devices.dev.description", "networks", "devices", "devices.[/x]",
]
dist_values = st.one_of(
    values,
    st.fixed_dictionaries({"dist": st.sampled_from(["constant", "uniform", "normal", "lognormal", "choice", "zipf"])},
                          optional={k: values for k in ("value", "low", "high", "mean", "std", "median", "sigma", "min", "max", "values", "weights")}),
)


@fuzz(250)
@given(
    changes=st.lists(st.tuples(st.sampled_from(PROFILE_KEYS), st.one_of(dist_values, st.sampled_from(HOSTILE_SCALARS).map(lambda r: ("raw", r)))), min_size=1, max_size=3),
)
def test_profile_file(fuzz_dir, fuzz_cases, changes):
    _count(fuzz_cases, "profile file")
    data = yaml.safe_load(PROFILE)
    raw_lines = []
    for key, value in changes:
        if isinstance(value, tuple) and value and value[0] == "raw":
            raw_lines.append(value[1])
        else:
            _set(data, key, value)
    folder = fuzz_dir / "profiles"
    folder.mkdir(exist_ok=True)
    text = yaml.safe_dump(data, allow_unicode=True)
    if raw_lines:  # a hostile spelling for the device's memory, as written in a file
        text = text.replace("app_memory_gb: 3", f"app_memory_gb: {raw_lines[0]}")
    path = folder / "p.yaml"
    path.write_text(text, encoding="utf-8")

    try:
        profiles = load_profiles(folder)
    except FedsimError as exc:
        _assert_clean(exc, str(path), str(folder))
        return
    if "dev" not in profiles.devices or "net" not in profiles.networks:
        return  # a valid folder that no longer holds the classes the scenario below names
    scenario = fuzz_dir / "on_profiles.yaml"
    scenario.write_text(
        TINY_SCENARIO.replace("devices: {jetson-tx2: 0.5, phone-high: 0.5}", "devices: {dev: 1}")
        .replace("networks: {wifi: 1.0}", f"networks: {{net: 1.0}}\n  profiles_dir: '{folder}'")
        .replace("network_by_device: {jetson-tx2: {ethernet: 1.0}}", "network_by_device: {}"),
        encoding="utf-8",
    )
    variants = _load_or_error(scenario)
    assert variants is not None  # the profile loaded, so the scenario on it must too
    _run_briefly(variants, fuzz_dir, fuzz_cases)


cells = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["[/x]", "../..", "\x00", '"', '""', "\r\n", "x" * 140_000, "1e999", "nan", "9" * 5000]),
)


@fuzz(200)
@given(
    kind=st.sampled_from(["csv", "jsonl"]),
    rows=st.lists(st.tuples(cells, cells), max_size=5),
    junk=st.one_of(st.just(b""), st.binary(max_size=40), st.sampled_from([b"\xff\xfe", b"[" * 5000, b"{\"text\": " + b"[" * 100_000])),
    header=st.sampled_from([("text", "label"), ("label", "text"), ("text",), ("t[/x]", "label")]),
)
def test_data_file(fuzz_dir, fuzz_cases, kind, rows, junk, header):
    _count(fuzz_cases, "data file")
    path = fuzz_dir / f"data.{kind}"
    with open(path, "w", newline="", encoding="utf-8", errors="surrogatepass") as fh:
        if kind == "csv":
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        else:
            for row in rows:
                fh.write(json.dumps(dict(zip(header, row))) + "\n")
    with open(path, "ab") as fh:
        fh.write(junk)

    try:
        texts, labels = read_table(path, "text", "label")
    except DataError as exc:
        _assert_clean(exc, str(path))
        return
    assert len(texts) == len(labels) > 0
    assert all(isinstance(t, str) for t in texts + labels)



@fuzz(60)
@given(
    key=st.sampled_from(SCENARIO_KEYS),
    raw=st.one_of(st.sampled_from(HOSTILE_SCALARS), st.text(max_size=20)),
    name=st.sampled_from(["s.yaml", "[/x].yaml", "a b[red].yaml"]),
)
def test_cli_validate_and_run_exit_cleanly(fuzz_dir, fuzz_cases, key, raw, name):
    from typer.testing import CliRunner

    from fedsim.cli import app

    _count(fuzz_cases, "cli validate/run")
    path = fuzz_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TINY_SCENARIO, encoding="utf-8")
    runner = CliRunner()

    checked = runner.invoke(app, ["validate", str(path)])
    ran = runner.invoke(app, ["run", str(path), "-q", "--out", str(fuzz_dir / "cli"), "--set", f"{key}={raw}", "--set", "engine.max_rounds=1"])

    assert checked.exit_code == 0, checked.output
    assert ran.exit_code in (0, 1, 2), ran.output
    assert ran.exception is None or isinstance(ran.exception, SystemExit), ran.exception
    if ran.exit_code:
        assert ran.stderr.startswith("error") and ran.stderr.count("\n") == 1, ran.stderr


@fuzz(80)
@given(kind=st.sampled_from(["csv", "jsonl"]), rows=st.lists(st.tuples(cells, cells), max_size=6), test_fraction=st.floats(0.01, 0.99))
def test_data_set_loading(fuzz_dir, fuzz_cases, tokenizer, kind, rows, test_fraction):
    from fedsim.learning.real.config import DataSpec
    from fedsim.learning.real.data import load_data

    _count(fuzz_cases, "data set tokenised")
    path = fuzz_dir / f"set{fuzz_cases['data set tokenised']}.{kind}"  # a new file each time: no stale cache
    with open(path, "w", newline="", encoding="utf-8") as fh:
        if kind == "csv":
            csv.writer(fh).writerows([("text", "label"), *rows])
        else:
            fh.writelines(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)
    spec = DataSpec(dataset="file", train_file=path, test_fraction=test_fraction, max_length=8, cache_dir=fuzz_dir / "cache")

    try:
        data = load_data(spec, *tokenizer)
    except DataError as exc:
        _assert_clean(exc, str(path))
        return
    assert len(data.train) + len(data.test) == len(rows)
    labels = np.concatenate([data.train.labels, data.test.labels])
    assert ((labels >= 0) & (labels < data.num_labels)).all()
    assert data.num_labels == len({str(lab) for _, lab in rows})
