"""The recipe is params: conf/ composes params.yaml as `dvc exp run` does (Hydra), each
conf/model/<arch>.yaml is that architecture's reference recipe exactly as recipes.py holds it,
with every key set, and the committed params.yaml is conf/ composed."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest
from helpers.data import REPO
from helpers.project import CONF, compose

from digitpipe.core.config import ARCHITECTURES, Augment, Recipe, TrainParams, load_params
from digitpipe.core.errors import DigitpipeError
from digitpipe.train.recipes import resolve_recipe


def test_every_architecture_has_its_model_group():
    assert sorted(path.stem for path in (CONF / "model").glob("*.yaml")) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_model_group_sets_the_whole_reference_recipe(tmp_path, arch):
    params = load_params(compose(tmp_path / "params.yaml", f"model={arch}"))
    assert params.model.arch == params.train.recipe == arch
    keys = params.train.model_dump(include=set(Recipe.model_fields))
    assert [key for key, value in keys.items() if value is None] == []  # DVC sees every key
    assert params.train.augment.model_fields_set == set(Augment.model_fields)
    assert keys == resolve_recipe(arch, TrainParams()).model_dump()


def test_committed_params_yaml_is_conf_composed(tmp_path):
    """What `dvc exp run` writes without -S is the committed params.yaml, byte for byte, so an
    experiment's params diff is only its own change. HEAD's files: an applied experiment changes
    the working copy's params.yaml."""
    archive = subprocess.run(
        ["git", "archive", "HEAD", "params.yaml", "conf"], cwd=REPO, capture_output=True, check=True
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as files:
        files.extractall(tmp_path, filter="data")
    composed = compose(tmp_path / "composed.yaml", conf=tmp_path / "conf").read_text()
    assert (tmp_path / "params.yaml").read_text() == composed, (
        "the committed params.yaml is out of step with conf/ (dvc exp run would overwrite it): "
        "edit conf/, run `make params` and commit both"
    )


def test_a_key_override_keeps_the_rest_of_the_recipe(tmp_path):
    params = load_params(compose(tmp_path / "params.yaml", "model=lenet", "train.lr=0.2"))
    expected = resolve_recipe("lenet", TrainParams()).model_copy(update={"lr": 0.2})
    assert resolve_recipe("lenet", params.train) == expected


def test_changing_model_arch_alone_is_refused(tmp_path):
    """`-S model.arch=lenet` would train lenet with bncnn's recipe: refused, naming the fix."""
    path = compose(tmp_path / "params.yaml", "model.arch=lenet")
    with pytest.raises(DigitpipeError) as refused:
        load_params(path)
    assert str(refused.value) == (
        f"{path}: invalid parameters; fix these keys:\n"
        "  - train: holds the 'bncnn' recipe (train.recipe) but model.arch is 'lenet'; switch "
        "architectures with `dvc exp run -S model=lenet`, which sets model.arch with lenet's "
        "recipe (add -S train.<key>=... to change a key of it)"
    )
