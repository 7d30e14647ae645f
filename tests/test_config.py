"""Config parsing: YAML sections, typed ``-o`` overrides, and one-line errors for bad input."""

from __future__ import annotations

import os

import pytest

from paddle_lenet.config import apply_overrides, load_config, parse_override, validate
from paddle_lenet.errors import ConfigError, UserError

from .conftest import ROOT

LENET = os.path.join(ROOT, "configs", "lenet.yml")


def test_shipped_config_has_notebook_settings() -> None:
    cfg = load_config(LENET)
    assert cfg["Global"]["epochs"] == 10 and cfg["Data"]["batch_size"] == 64
    assert cfg["Optimizer"] == {**cfg["Optimizer"], "name": "Adam", "learning_rate": 0.001}
    assert cfg["Metric"]["topk"] == [1, 2] and cfg["Arch"]["name"] == "LeNet"
    assert load_config(os.path.join(ROOT, "configs", "lenet_nopool.yml"))["Arch"]["name"] == "LeNet_nopool"


def test_overrides_are_typed_yaml() -> None:
    cfg = load_config(LENET, ["Global.epochs=3", "Optimizer.learning_rate=1e-3", "Metric.topk=[1, 5]",
                              "Data.root=null", "Global.resume=true", "Arch.pool=avg", "Optimizer.learning_rate=2"])
    assert cfg["Global"]["epochs"] == 3 and cfg["Global"]["resume"] is True
    assert cfg["Metric"]["topk"] == [1, 5] and cfg["Data"]["root"] is None and cfg["Arch"]["pool"] == "avg"
    assert cfg["Optimizer"]["learning_rate"] == 2.0 and isinstance(cfg["Optimizer"]["learning_rate"], float)
    assert parse_override("Global.name=a=b") == ("Global", "name", "a=b")


def test_no_eval_of_override_values() -> None:
    with pytest.raises(UserError, match="is not a plain name"):  # taken as text, never evaluated
        load_config(LENET, ["Global.name=[__import__('os')]"])
    with pytest.raises(ConfigError, match="Global.epochs must be int"):
        load_config(LENET, ["Global.epochs=[__import__('os')]"])


@pytest.mark.parametrize("override,message", [
    ("Global.epochz=1", "unknown config key 'Global.epochz'; did you mean 'Global.epochs'"),
    ("Global.epochs=ten", "Global.epochs must be int, got 'ten'"),
    ("Global.epochs=0", "Global.epochs=0 is out of range; it must be [1, 100,000]"),
    ("Global.device=tpu", "Global.device='tpu' is not valid"),
    ("Data.name=CIFAR", "Data.name='CIFAR' is not valid"),
    ("Glbal.epochs=1", "unknown config section 'Glbal'; did you mean 'Global'"),
    ("Global.epochs", "malformed override 'Global.epochs'"),
    ("epochs=3", "malformed override 'epochs=3'; the key must be Section.key"),
    ("Metric.topk=[0]", "Metric.topk=[0]: 0 is out of range"),
    ("Global.seed=[1", "not valid YAML"),
])
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(LENET, [override])


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file '.*nope.yml' not found"):
        load_config(str(tmp_path / "nope.yml"))
    broken = tmp_path / "broken.yml"
    broken.write_text("Global:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        load_config(str(broken))
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate(apply_overrides({"Global": 3}, []))


def test_readme_config_table_is_the_schema() -> None:
    """docs/configuration.md's table of keys, defaults and valid values is generated from the schema: keep them equal."""
    import os

    from paddle_lenet.config import reference_table

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "configuration.md")).read()
    assert reference_table() in readme
