"""Config: dotted overrides in the W&B agent form, YAML files, types, ranges and unknown keys."""

import pytest

from lcnn_jax.config import flat_keys, from_json, load_config, make_config, run_id, to_dict
from lcnn_jax.errors import ConfigError


def test_overrides_in_wandb_agent_form():
    c = make_config(overrides=["model.name=efficientnet_b0", "model.width=0.5", "optim.lr=0.05",
                               "data.flip=False", "model.resolution=32", "model.padding=None"])
    assert (c.model.name, c.model.width, c.optim.lr, c.data.flip, c.model.resolution) == ("efficientnet_b0", 0.5, 0.05, False, 32)
    assert c.model.padding is None
    assert make_config(overrides=["--train.epochs=3"]).train.epochs == 3.0


def test_yaml_file_nested_and_dotted(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  name: mobilenet_v3_small\n  width: 0.75\noptim.lr: 0.2\ntrain:\n  epochs: 2\n")
    c = load_config(f, ["train.epochs=4"])
    assert (c.model.name, c.model.width, c.optim.lr, c.train.epochs) == ("mobilenet_v3_small", 0.75, 0.2, 4.0)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.widht=1", "unknown config key 'model.widht'; did you mean model.width"),
        ("modle.width=1", "unknown config key 'modle.width'"),
        ("optim.lr=-1", "optim.lr: -1.0 is out of range (0, inf)"),
        ("optim.name=adam", "optim.name: 'adam' is not one of sgd, rmsprop, adamw"),
        ("train.epochs=abc", "train.epochs: expected float, got 'abc'"),
        ("data.batch_size=1.5", "data.batch_size: expected int, got '1.5'"),
        ("data.flip=maybe", "data.flip: expected bool"),
        ("optim.label_smoothing=1", "optim.label_smoothing: 1.0 is out of range [0, 1)"),
        ("train.precision=float16", "not one of float32, bfloat16"),
        ("model.width", "is not key=value"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        make_config(overrides=[override])
    assert message in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("model: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_json_round_trip_and_run_id():
    c = make_config(overrides=["model.width=0.5"])
    assert from_json(__import__("json").dumps(to_dict(c))) == c
    assert run_id(c) == run_id(make_config(overrides=["model.width=0.5"]))
    assert run_id(c) != run_id(make_config(overrides=["model.width=0.75"]))
    assert run_id(c).startswith("mobilenet_v2-")
    assert "optim.lr" in flat_keys() and "model" not in flat_keys()
