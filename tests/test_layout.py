"""The package layout that keeps `dvc repro` truthful: each stage's deps in dvc.yaml are exactly
the files of src/digitpipe its process imports, every stage imports every file of core/ (so that
a change there rightly reruns all), stage packages never import each other, and the outputs each
stage declares in digitpipe.outputs are the ones dvc.yaml lists."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from helpers.data import QUICK_TRAIN, REPO
from helpers.errors import assert_user_error
from helpers.project import STAGES, edit_params
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from digitpipe.outputs import train as train_outputs
from digitpipe.retrain.command import LOCK_FILE

PACKAGE = REPO / "src" / "digitpipe"
STAGE_PACKAGES = {"ingest", "train", "evaluate", "activations", "report"}

# Runs a stage script as DVC would, then prints the digitpipe files the process imported.
TRACE = """
import atexit, json, os, runpy, sys
def dump():
    files = sorted(
        module.__file__ for name, module in list(sys.modules.items())
        if name.split(".")[0] == "digitpipe" and getattr(module, "__file__", None)
    )
    print("IMPORTED " + json.dumps(files))
atexit.register(dump)
sys.argv = [sys.argv[1]]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python stages/NAME.py` would
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def stage_deps(stage: str) -> list[str]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def source_files(deps: list[str]) -> set[str]:
    """The .py files of src/digitpipe that ``deps`` name, directories expanded."""
    files = set()
    for dep in (d for d in deps if d.startswith("src/digitpipe")):
        target = REPO / dep
        found = target.rglob("*.py") if target.is_dir() else [target]
        files |= {str(f.relative_to(REPO)) for f in found if "__pycache__" not in f.parts}
    return files


def imported_by(stage: str, project: Path) -> set[str]:
    script = REPO / "stages" / f"{stage}.py"
    result = subprocess.run(
        [sys.executable, "-c", TRACE, str(script)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("IMPORTED "))
    return {str(Path(f).relative_to(REPO)) for f in json.loads(line[len("IMPORTED ") :])}


@pytest.mark.slow
def test_each_stage_depends_on_exactly_the_code_it_imports(tiny_project, tmp_path):
    edit_params(tiny_project, "train", **QUICK_TRAIN)
    # Tracking on, as by default: the MLflow modules are part of what the stages run.
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    edit_params(tiny_project, "track", enabled=True, tracking_uri=store)
    problems = []
    for stage in STAGES:
        deps = stage_deps(stage)
        imported = imported_by(stage, tiny_project)
        missing = sorted(f for f in imported if not covered(f, deps))
        # Every stage lists core/ whole, so it must import every file of it: core/ holds only
        # what every stage uses (a change there rightly reruns everything).
        unused = sorted(source_files(deps) - imported)
        problems += [f"{stage}: imports {f}, not in its deps" for f in missing]
        problems += [f"{stage}: lists {f} in its deps but never imports it" for f in unused]
        assert f"stages/{stage}.py" in deps
    assert not problems, "\n".join(problems)


def imports_of(path: Path) -> set[str]:
    """The digitpipe modules a source file imports (absolute imports only are used here)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] == "digitpipe"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_stage_packages_never_import_each_other():
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        package = path.relative_to(PACKAGE).parts[0]
        if package not in STAGE_PACKAGES:
            continue
        for name in imports_of(path):
            other = name.split(".")[1] if "." in name else ""
            if other in STAGE_PACKAGES and other != package:
                offending.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offending, "\n".join(offending)


def test_shared_layers_never_import_a_stage_package():
    offending = [
        f"{path.relative_to(REPO)} imports {name}"
        for layer in ("core", "dataset", "model", "outputs", "tracking")
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in imports_of(path)
        if "." in name and name.split(".")[1] in STAGE_PACKAGES
    ]
    assert not offending, "\n".join(offending)


def test_no_import_cycles():
    graph = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target not in graph:
                continue
            assert state.get(target) != "open", " -> ".join([*trail, module, target])
            if target not in state:
                visit(target, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def dvc_outputs(stage: dict, kind: str) -> set[str]:
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in stage.get(kind, [])}


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_declares_the_outputs_dvc_yaml_lists(stage):
    """digitpipe.outputs.<stage> is what the stage writes and later stages read: the same
    outs, metrics and plots as dvc.yaml's, none more, none fewer."""
    declared = importlib.import_module(f"digitpipe.outputs.{stage}").DECLARED
    listed = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    for kind in ("outs", "metrics", "plots"):
        assert {str(path) for path in getattr(declared, kind)} == dvc_outputs(listed, kind), kind


def test_what_varies_run_to_run_is_no_stage_output():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].values()
    outputs = {
        out
        for stage in stages
        for kind in ("outs", "metrics", "plots")
        for out in dvc_outputs(stage, kind)
    }
    for local in (train_outputs.CHECKPOINT_ROOT, LOCK_FILE.parent):
        assert not any(Path(out).is_relative_to(local) for out in outputs)
    speed = str(train_outputs.SPEED)  # a top-level metric, in no dvc.lock
    assert speed not in outputs
    assert speed in yaml.safe_load((REPO / "dvc.yaml").read_text())["metrics"]


def test_a_python_without_digitpipe_gets_advice_not_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for stage in STAGES:  # -S: no site-packages, so no digitpipe, as outside the venv
        command = [sys.executable, "-S", str(REPO / "stages" / f"{stage}.py")]
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert_user_error(done, "has no digitpipe installed", "make install", alone=True)


def declared_distributions(group: list[str]) -> set[str]:
    """The distribution names of pyproject.toml requirement strings, normalised."""
    return {canonicalize_name(Requirement(spec).name) for spec in group}


def test_every_imported_distribution_is_declared():
    """A module src/ imports that pyproject.toml does not declare works here only by luck (a
    dependency of a dependency) and breaks when that one changes."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = declared_distributions(project["dependencies"])
    providers = importlib.metadata.packages_distributions()
    undeclared = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top == "digitpipe" or top in sys.stdlib_module_names:
                    continue
                dists = {canonicalize_name(d) for d in providers.get(top, [top])}
                if not dists & declared:
                    undeclared.add(f"{path.relative_to(REPO)}: {name} ({', '.join(sorted(dists))})")
    assert not undeclared, "\n".join(sorted(undeclared))
