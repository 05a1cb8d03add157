"""Reliability of configuration files and tensor values: merge YAML, `negmerge_config.json`,
task-vector metadata and `TaskVector` numerics.

Table-driven like `test_reliability_merge.py` (whose `Case`/`Env`, snapshot and call kinds are
reused): each case says how to set it up, what to call (the CLI in-process, as a subprocess, or
the Python API), the exit code (API: 2 = a NegMergeError was raised, 0 = it returned), a fragment
of the message, and which files must stay byte-identical. Valid counterparts are checked against
values computed here, independently, in float64.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_negmerge import NegMergeConfig, TaskVector
from hf_negmerge.errors import CheckpointError, ConfigError
from hf_negmerge.negation import unlearn, write_unlearned_checkpoint
from hf_negmerge.recipe_files import load_yaml
from test_reliability_merge import (  # noqa: F401 (prototype is a fixture)
    Case,
    Env,
    child_env,
    invoke_checked,
    negmerge_reference,
    prototype,
    snapshot,
    staging_left,
    vector_with_metadata,
    write_config,
)

# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

MERGE_HEAD = "base: base\nmodels: [ft0, ft1]\n"
DEEP = 100_000  # nesting levels: far past Python's recursion limit
LONG = "9" * 5000  # digits: past Python's int conversion limit (4300)
SHAPES = {"a": (3, 4), "b": (5,), "c": (2, 2, 2)}
TOO_DEEP = "is nested more than 64 levels deep"
TOO_LONG = "holds an integer of 5000 digits, more than Python reads (4300)"
YAML_BOOLEAN = "YAML reads an unquoted yes, no, on, off, true or false as a boolean"


def merge_yaml(text: str) -> Callable[[Env], None]:
    """A merge file `merge.yaml` beside the tiny runs (paths relative to it)."""

    def setup(env: Env) -> None:
        (env.root / "merge.yaml").write_text(text, encoding="utf-8")

    return setup


def merge_config_argv(env: Env) -> list[str]:
    return [
        "merge",
        "--config",
        str(env.root / "merge.yaml"),
        "--out",
        str(env.root / "out"),
        "--no-progress",
    ]


def yaml_case(id: str, text: str, code: int, message: str = "", kind: str = "cli", check=None) -> Case:
    return Case(id, merge_config_argv, code, message, setup=merge_yaml(text), kind=kind, check=check)


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels - 1):
        value = [value]
    return value


def check_equal(got: object, expected: object) -> None:
    assert got == expected, got


def config_round_trip(env: Env) -> None:
    """A saved config (with a 4300-digit integer, at Python's limit) reads back equal."""
    config = NegMergeConfig(method="ties", ties_total_elements=int("7" * 4300), lambda_grid=[0.0, 0.5])
    config.save_pretrained(env.root / "saved")
    check_equal(NegMergeConfig.from_pretrained(env.root / "saved"), config)


def metadata_round_trip(env: Env) -> None:
    """Metadata nested to the limit, and long integers, read back equal."""
    metadata = {"deep": nested(63), "seed": 10**40, "runs": [{"name": "ft0", "lr": 1e-5}]}
    TaskVector({"w": torch.ones(2)}, metadata).save(env.root / "tv.safetensors")
    check_equal(TaskVector.load(env.root / "tv.safetensors").metadata, metadata)


# -- TaskVector numerics ------------------------------------------------------------------------


def vector(dtype: torch.dtype = torch.float32, **values: list[float]) -> TaskVector:
    return TaskVector({key: torch.tensor(entries, dtype=dtype) for key, entries in values.items()})


def random_vector(dtype: torch.dtype, seed: int) -> TaskVector:
    generator = torch.Generator().manual_seed(seed)
    return TaskVector(
        {key: torch.randn(shape, generator=generator).to(dtype) for key, shape in SHAPES.items()}
    )


def arithmetic_matches_float64(dtype: torch.dtype, other_dtype: torch.dtype) -> Callable[[Env], None]:
    """+, - and unary - give the float64 result rounded once to the result's dtype; scalar * is
    within one rounding of it (the scale itself is rounded to float32 first)."""

    def call(env: Env) -> None:
        one, two = random_vector(dtype, 1), random_vector(other_dtype, 2)
        result_dtype = torch.promote_types(dtype, other_dtype)
        expected = {
            "sum": (one + two, lambda a, b: a + b, result_dtype),
            "difference": (one - two, lambda a, b: a - b, result_dtype),
            "scaled": (one * 0.37, lambda a, b: 0.37 * a, dtype),
            "rscaled": (3 * one, lambda a, b: 3 * a, dtype),
            "negated": (-one, lambda a, b: -a, dtype),
        }
        for name, (got, formula, wanted) in expected.items():
            rtol = torch.finfo(wanted).eps if name == "scaled" else 0.0
            for key in SHAPES:
                reference = formula(one[key].double(), two[key].double())
                assert got[key].dtype == wanted, (name, key, got[key].dtype)
                assert torch.isfinite(got[key]).all()
                torch.testing.assert_close(
                    got[key].double(), reference.to(wanted).double(), rtol=rtol, atol=0
                )

    return call


def mutated(values: dict[str, float]) -> TaskVector:
    """A valid vector whose tensors were changed afterwards in place (what the checks must catch)."""
    tensors = {"weight": torch.full((1, 2), 0.25), "bias": torch.full((1,), 0.5)}
    result = TaskVector(tensors)
    for key, value in values.items():
        result.tensors[key][0] = value
    return result


def linear_model(env: Env) -> torch.nn.Linear:
    """A small model; its tensors as they were are kept in `env.state` for `model_unchanged`."""
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
        model.bias.fill_(3.0)
    env.state["model"], env.state["before"] = model, {k: v.clone() for k, v in model.state_dict().items()}
    return model


def model_unchanged(env: Env) -> None:
    after = env.state["model"].state_dict()
    assert all(torch.equal(after[key], value) for key, value in env.state["before"].items())


def unlearn_state_dict(tau: Callable[[], TaskVector], scale: float) -> Callable[[Env], None]:
    """`unlearn` on a state dict; the dict handed in must come back untouched."""

    def call(env: Env) -> None:
        state = {"w": torch.tensor([1.0, -1.0]), "steps": torch.tensor([7])}
        env.state["given"] = state
        env.state["result"] = unlearn(state, tau(), scale)

    return call


def state_dict_unchanged(env: Env) -> None:
    given = env.state["given"]
    assert torch.equal(given["w"], torch.tensor([1.0, -1.0])) and torch.equal(
        given["steps"], torch.tensor([7])
    )


def unlearned_matches_float64(env: Env) -> None:
    state_dict_unchanged(env)
    expected = (torch.tensor([1.0, -1.0]).double() - 0.5 * torch.tensor([0.25, 4.0]).double()).float()
    assert torch.equal(env.state["result"]["w"], expected)
    assert torch.equal(env.state["result"]["steps"], torch.tensor([7]))


def save_vector(tau: Callable[[], TaskVector]) -> Callable[[Env], None]:
    def call(env: Env) -> None:
        tau().save(env.root / "tv.safetensors")

    return call


def no_vector_file(env: Env) -> None:
    assert not (env.root / "tv.safetensors").exists()
    assert not [path for path in env.root.iterdir() if path.name.startswith(".")]


def int_tensor_checkpoint(env: Env) -> None:
    (env.root / "ibase").mkdir()
    save_file({"w": torch.ones(2), "steps": torch.tensor([3])}, env.root / "ibase" / "model.safetensors")


def check_negmerge_output(env: Env) -> None:
    """The merged vector is the unanimous-sign mean computed here from the runs' tensors."""
    base = load_file(env.root / "base" / "model.safetensors")
    tuned = [load_file(env.root / name / "model.safetensors") for name in ("ft0", "ft1")]
    merged = TaskVector.load(env.root / "out" / "merged_task_vector.safetensors")
    assert merged.keys()
    for key in merged:
        torch.testing.assert_close(merged[key].double(), negmerge_reference(base, tuned, key))


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------

CASES: list[Case] = [
    # 1. merge YAML: a key given twice is refused with both lines, wherever it is
    yaml_case(
        "yaml-duplicate-top",
        MERGE_HEAD + "method: ties\nmethod: negmerge\n",
        2,
        "merge.yaml: line 4: duplicate key 'method' (first given on line 3)",
    ),
    yaml_case(
        "yaml-duplicate-parameter",
        MERGE_HEAD + "parameters: {consensus_fraction: 1.0, consensus_fraction: 0.6}\n",
        2,
        "line 3: duplicate key 'consensus_fraction'",
    ),
    yaml_case(
        "yaml-duplicate-model-entry",
        "base: base\nmodels:\n  - model: ft0\n    model: ft1\n",
        2,
        "line 4: duplicate key 'model' (first given on line 3)",
    ),
    yaml_case("yaml-duplicate-base", MERGE_HEAD + "base: ft1\n", 2, "duplicate key 'base'"),
    yaml_case("yaml-non-string-key", MERGE_HEAD + "1: one\n", 2, "line 3: merge file keys must be strings"),
    yaml_case("yaml-valid", MERGE_HEAD + "method: negmerge\n", 0, check=check_negmerge_output),
    # 2. a field that takes text gets text: YAML 1.1's yes/no/on/off booleans are named as such
    *(
        yaml_case(f"yaml-boolean-{name}", MERGE_HEAD + text, 2, f"{expected}, got {shown}: {YAML_BOOLEAN}")
        for name, text, expected, shown in [
            (
                "method-yes",
                "method: yes\n",
                "'method' must be one of task_arithmetic, uniform, ties, magmax, negmerge",
                "True",
            ),
            (
                "dtype-off",
                "accumulation_dtype: off\n",
                "'accumulation_dtype' must be one of float32, float64",
                "False",
            ),
            (
                "parameter-no",
                "method: ties\nparameters: {ties_variant: no}\n",
                "'parameters.ties_variant' must be one of original, peft",
                "False",
            ),
            (
                "include-item-on",
                "include: [vit.*, on]\n",
                "'include' must be a list of strings",
                "['vit.*', True]",
            ),
            ("exclude-yes", "exclude: yes\n", "'exclude' must be a list of strings", "True"),
        ]
    ),
    yaml_case(
        "yaml-boolean-base",
        "base: on\nmodels: [ft0, ft1]\n",
        2,
        f"base must be a folder or Hub id, got True: {YAML_BOOLEAN}",
    ),
    yaml_case(
        "yaml-boolean-model",
        "base: base\nmodels: [{model: yes}, ft1]\n",
        2,
        f"models[0].model must be a folder or Hub id, got True: {YAML_BOOLEAN}",
    ),
    yaml_case(
        "yaml-boolean-revision",
        "base: base\nmodels: [{model: org/run, revision: no}, ft1]\n",
        2,
        f"models[0].revision must be a branch, tag or commit id, got False: {YAML_BOOLEAN}",
    ),
    *(
        yaml_case(
            f"yaml-numeric-revision-{written}",
            f"base: base\nmodels: [{{model: org/run, revision: {written}}}, ft1]\n",
            2,
            f"models[0].revision must be a branch, tag or commit id as text, got the number {read}: "
            "YAML reads an unquoted id made of digits",
        )
        for written, read in [
            ("0123", "83"),
            ("1_000", "1000"),
            ("1234e56", "1.234e+59"),
            ("1234567", "1234567"),
        ]
    ),
    yaml_case(
        "yaml-python-tag",
        MERGE_HEAD + "method: !!python/object/apply:os.system ['touch pwned']\n",
        2,
        "merge.yaml is not valid YAML: line 3, column 9: could not determine a constructor for the tag",
        check=lambda env: check_equal((env.root / "pwned").exists(), False),
    ),
    yaml_case(
        "yaml-quoted-yes-is-text",
        MERGE_HEAD + "method: 'yes'\n",
        2,
        "NegMergeConfig.method='yes' is not a known merge method; choose one of task_arithmetic",
    ),
    yaml_case(
        "yaml-method-number",
        MERGE_HEAD + "method: 3\n",
        2,
        "NegMergeConfig.method must be a string, one of task_arithmetic, uniform, ties, magmax, negmerge; got int 3",
    ),
    Case(
        "config-json-method-true",
        lambda env: NegMergeConfig.from_pretrained(env.root / "cfg"),
        2,
        "cfg/negmerge_config.json: NegMergeConfig.accumulation_dtype must be a string, one of float32, float64; got bool True",
        setup=write_config('{"accumulation_dtype": true}'),
        kind="api",
        error=ConfigError,
    ),
    # 3. nesting past any config's need and integers past Python's digit limit: named, no traceback
    yaml_case(
        "yaml-deep-nesting",
        MERGE_HEAD + "include: " + "[" * DEEP + "]" * DEEP + "\n",
        2,
        "merge.yaml: line 3 (under 'include'): lists and mappings are nested more than 64 levels deep",
    ),
    yaml_case(
        "yaml-deep-nesting-subprocess",
        MERGE_HEAD + "parameters:\n  density: " + "[" * DEEP + "]" * DEEP + "\n",
        2,
        "(under 'parameters'): lists and mappings are nested more than 64 levels deep",
        kind="subprocess",
    ),
    yaml_case(
        "yaml-long-integer",
        MERGE_HEAD + "method: ties\nparameters:\n  ties_total_elements: " + LONG + "\n",
        2,
        "merge.yaml: line 5: the integer 999999999999… has 5000 digits, more than Python reads (4300)",
    ),
    *(
        Case(
            f"recipe-{name}",
            lambda env: ["unlearn", "--no-progress", "--dry-run", "--config", str(env.root / "recipe.yaml")],
            2,
            f"recipe.yaml: {message}",
            setup=lambda env, text=text: (env.root / "recipe.yaml").write_text(text, encoding="utf-8"),
        )
        for name, text, message in [
            (
                "deep-nesting",
                "data:\n  dataset: digits\n  forget_classes: " + "[" * DEEP + "]" * DEEP + "\n",
                "line 3 (under 'data'): lists and mappings are nested more than 64 levels deep",
            ),
            ("long-integer", "seed: " + LONG + "\n", "line 1: the integer 999999999999… has 5000 digits"),
        ]
    ),
    Case(
        "yaml-nesting-at-the-limit",
        lambda env: check_equal(load_yaml("[" * 64 + "]" * 64, "merge file"), nested(64)),
        0,
        kind="api",
    ),
    *(
        Case(
            f"config-json-{name}",
            lambda env: NegMergeConfig.from_pretrained(env.root / "cfg"),
            2,
            f"cfg/negmerge_config.json: {message}",
            setup=write_config(text),
            kind="api",
            error=ConfigError,
        )
        for name, text, message in [
            ("deep", '{"include": ' + "[" * DEEP + "]" * DEEP + "}", f"field 'include' {TOO_DEEP}"),
            ("deep-loadable", '{"exclude": ' + "[" * 500 + "]" * 500 + "}", f"field 'exclude' {TOO_DEEP}"),
            ("deep-not-an-object", "[" * DEEP + "]" * DEEP, f"the value {TOO_DEEP}"),
            ("long-integer", '{"density": ' + LONG + "}", f"field 'density' {TOO_LONG}"),
            ("duplicate-key", '{"density": 0.5, "density": 0.9}', "key 'density' is given twice"),
            ("duplicate-nested-key", '{"include": [{"a": 1, "a": 2}]}', "key 'a' is given twice"),
            (
                "long-integer-in-list",
                '{"lambda_grid": [0.5, -' + LONG + "]}",
                f"field 'lambda_grid' {TOO_LONG}",
            ),
        ]
    ),
    Case("config-json-round-trip", config_round_trip, 0, kind="api"),
    *(
        Case(
            f"vector-metadata-{name}",
            lambda env: TaskVector.load(env.root / "tv.safetensors"),
            2,
            f"tv.safetensors: the 'hf_negmerge' metadata of this task vector: {message}",
            setup=vector_with_metadata(raw),
            kind="api",
            error=CheckpointError,
        )
        for name, raw, message in [
            ("deep", '{"runs": ' + "[" * DEEP + "]" * DEEP + "}", f"field 'runs' {TOO_DEEP}"),
            (
                "deep-loadable",
                '{"runs": [' + '{"a": ' * 300 + "1" + "}" * 300 + "]}",
                "field 'runs' is nested",
            ),
            ("long-integer", '{"seed": ' + LONG + "}", f"field 'seed' {TOO_LONG}"),
            ("duplicate-key", '{"seed": 1, "seed": 2}', "key 'seed' is given twice"),
        ]
    ),
    Case("vector-metadata-round-trip", metadata_round_trip, 0, kind="api"),
    # 4. TaskVector numerics: nothing non-finite is built, returned, written or saved
    *(
        Case(f"vector-{name}", lambda env, call=call: call(), 2, message, kind="api", error=CheckpointError)
        for name, call, message in [
            (
                "fp16-sum-overflows",
                lambda: (
                    vector(torch.float16, a=[1.0], w=[60000.0]) + vector(torch.float16, a=[1.0], w=[10000.0])
                ),
                "the sum of the task vectors is not finite in tensor 'w': the result overflows torch.float16 "
                "(float32 vectors would hold it)",
            ),
            (
                "fp16-difference-overflows",
                lambda: vector(torch.float16, w=[60000.0]) - vector(torch.float16, w=[-60000.0]),
                "the difference of the task vectors is not finite in tensor 'w': the result overflows torch.float16",
            ),
            (
                "fp16-scaling-overflows",
                lambda: vector(torch.float16, a=[1.0], w=[40000.0]) * 2,
                "scaling the task vector by 2 is not finite in tensor 'w': the result overflows torch.float16",
            ),
            (
                "fp16-rscaling-overflows",
                lambda: 1e5 * vector(torch.float16, w=[1.0]),
                "scaling the task vector by 100000 is not finite in tensor 'w'",
            ),
            (
                "fp32-scaling-overflows",
                lambda: vector(w=[1.0]) * 1e300,
                "scaling the task vector by 1e+300 is not finite in tensor 'w': the result overflows torch.float32.",
            ),
            (
                "fp32-sum-overflows",
                lambda: vector(w=[3e38], v=[0.0]) + vector(w=[3e38], v=[0.0]),
                "the sum of the task vectors is not finite in tensor 'w'",
            ),
            (
                "nan-entry",
                lambda: vector(a=[0.0], b=[1.0, math.nan]),
                "task vector: tensor 'b' contains NaN or Inf values",
            ),
            (
                "inf-entry",
                lambda: vector(torch.float16, c=[-math.inf]),
                "task vector: tensor 'c' contains NaN or Inf",
            ),
        ]
    ),
    Case("vector-fp16-arithmetic", arithmetic_matches_float64(torch.float16, torch.float16), 0, kind="api"),
    Case("vector-fp32-arithmetic", arithmetic_matches_float64(torch.float32, torch.float32), 0, kind="api"),
    Case("vector-mixed-arithmetic", arithmetic_matches_float64(torch.float16, torch.float32), 0, kind="api"),
    Case(
        "unlearn-scaled-vector-overflows",
        unlearn_state_dict(lambda: vector(w=[1.0, 1.0]) * 1e308, 1),
        2,
        "scaling the task vector by 1e+308 is not finite in tensor 'w'",
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "unlearn-float64-vector-overflows-float32",
        unlearn_state_dict(lambda: vector(torch.float64, w=[1e308, 0.0]), 1),
        2,
        "θ − 1·τ is not finite in tensor 'w' of the state dict: the result overflows torch.float32",
        kind="api",
        error=CheckpointError,
        check=state_dict_unchanged,
    ),
    Case(
        "unlearn-huge-lambda",
        unlearn_state_dict(lambda: vector(w=[0.25, 4.0]), 1e300),
        2,
        "θ − 1e+300·τ is not finite in tensor 'w' of the state dict",
        kind="api",
        error=CheckpointError,
        check=state_dict_unchanged,
    ),
    Case(
        "unlearn-integer-target",
        lambda env: unlearn(
            {"w": torch.ones(2), "steps": torch.tensor([7])}, vector(w=[0.0, 0.0], steps=[0.0]), 1
        ),
        2,
        "Tensor 'steps' of the state dict has dtype torch.int64, but the task vector has an entry for it",
        kind="api",
        error=CheckpointError,
    ),
    Case(
        "unlearn-valid",
        unlearn_state_dict(lambda: vector(w=[0.25, 4.0]), 0.5),
        0,
        kind="api",
        check=unlearned_matches_float64,
    ),
    *(
        Case(
            f"negate-into-{name}",
            lambda env, tau=tau, scale=scale: mutated(tau).negate_into(linear_model(env), scale),
            2,
            f"is not finite in tensor '{key}' of the Linear",
            kind="api",
            error=CheckpointError,
            check=model_unchanged,
        )
        for name, tau, scale, key in [
            ("nan-vector", {"weight": math.nan}, 1.0, "weight"),
            ("inf-vector", {"bias": math.inf}, 0.5, "bias"),
            ("overflow-in-last-tensor", {"bias": 1e38}, 10.0, "bias"),
        ]
    ),
    Case(
        "negate-into-integer-buffer",
        lambda env: vector(weight=[[0.0, 0.0]], steps=[0.0]).negate_into(
            {**linear_model(env).state_dict(), "steps": torch.tensor([1])}, 1.0
        ),
        2,
        "Tensor 'steps' of the state dict has dtype torch.int64",
        kind="api",
        error=CheckpointError,
        check=model_unchanged,
    ),
    Case(
        "negate-into-valid",
        lambda env: mutated({"weight": -1.5}).negate_into(linear_model(env), 2.0),
        0,
        kind="api",
        check=lambda env: check_equal(
            [env.state["model"].weight.tolist(), env.state["model"].bias.tolist()], [[[4.0, 1.0]], [2.0]]
        ),
    ),
    Case(
        "unlearned-checkpoint-integer-target",
        lambda env: write_unlearned_checkpoint(
            env.root / "ibase", vector(steps=[1.0]), 1.0, env.root / "out"
        ),
        2,
        "Tensor 'steps' of the base checkpoint",
        setup=int_tensor_checkpoint,
        kind="api",
        error=CheckpointError,
    ),
    *(
        Case(
            f"save-{name}",
            save_vector(tau),
            2,
            f"Cannot save the task vector to {{root}}/tv.safetensors (nothing was written): {message}",
            kind="api",
            error=CheckpointError,
            check=no_vector_file,
        )
        for name, tau, message in [
            ("inf-tensor", lambda: mutated({"bias": math.inf}), "tensor 'bias' contains NaN or Inf values"),
            (
                "nan-tensor",
                lambda: mutated({"weight": math.nan}),
                "tensor 'weight' contains NaN or Inf values",
            ),
            (
                "metadata-not-json",
                lambda: TaskVector({"w": torch.ones(1)}, {"when": object()}),
                "its metadata cannot be written as JSON",
            ),
            (
                "metadata-too-deep",
                lambda: TaskVector({"w": torch.ones(1)}, {"runs": nested(100)}),
                f"its metadata: field 'runs' {TOO_DEEP}",
            ),
        ]
    ),
    Case(
        "save-pretrained-inf-tensor",
        lambda env: mutated({"weight": -math.inf}).save_pretrained(env.root / "saved" / "vector"),
        2,
        "Cannot save the task vector to {root}/saved/vector/task_vector.safetensors (nothing was written): "
        "tensor 'weight' contains NaN or Inf values",
        kind="api",
        error=CheckpointError,
        check=lambda env: check_equal((env.root / "saved").exists(), False),
    ),
    Case(
        "save-over-an-earlier-vector",
        save_vector(lambda: mutated({"bias": math.inf})),
        2,
        "tensor 'bias' contains NaN or Inf values",
        setup=lambda env: TaskVector({"w": torch.ones(2)}).save(env.root / "tv.safetensors"),
        kind="api",
        error=CheckpointError,
        check=lambda env: check_equal(TaskVector.load(env.root / "tv.safetensors").keys(), ["w"]),
    ),
    yaml_case(
        "yaml-valid-quoted",
        MERGE_HEAD + "method: \"negmerge\"\naccumulation_dtype: 'float64'\ninclude: ['vit.*']\n",
        0,
        check=check_negmerge_output,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_values(case: Case, prototype: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: F811
    root = tmp_path / "case"
    shutil.copytree(prototype, root)
    env = Env(root, monkeypatch)
    if case.setup is not None:
        case.setup(env)
    invoke_checked(case, env, capsys, case.message.format(root=root))
    if case.code != 0:
        assert not (root / "out").exists()
        assert not staging_left(root)
    if case.check is not None:
        case.check(env)
