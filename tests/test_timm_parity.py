"""timm -> lcnn weight import: identical logits for every mapped model, clear errors otherwise."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need the [torch] extra (pip install -e '.[torch]')")
timm = pytest.importorskip("timm", reason="parity tests need the [torch] extra (pip install -e '.[torch]')")

from lcnn_jax.cli import main  # noqa: E402
from lcnn_jax.errors import ConfigError  # noqa: E402
from lcnn_jax.interop.parity import check_parity, parity_resolutions, random_timm_model  # noqa: E402
from lcnn_jax.interop.timm import TIMM_MODELS, from_timm, timm_spec  # noqa: E402

torch.set_num_threads(2)
BIG = {f"tf_efficientnet_b{i}" for i in range(4, 8)}


@pytest.mark.parametrize(
    "timm_name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in TIMM_MODELS]
)
def test_logits_match_timm(timm_name, tmp_path):
    # Native resolution plus a small even and an odd one (odd sizes exercise TF 'SAME' padding),
    # each through .pth -> `lcnn convert` -> orbax -> load_pretrained.
    for resolution in parity_resolutions(timm_name):
        r = check_parity(timm_name, resolution, tmp_path)
        assert r.max_abs_logit > 0
        assert r.max_abs_diff <= 1e-4 * r.max_abs_logit, f"{timm_name} at {r.resolution}: rel diff {r.rel_diff:.2e}"


@pytest.mark.parametrize("timm_name", ["tf_efficientnet_b0", "efficientnet_b0", "mobilenetv3_small_100"])
def test_bn_conventions_are_converted(timm_name):
    reference = timm.create_model(timm_name, pretrained=False)
    spec = timm_spec(timm_name)
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert spec.bn.epsilon == module.eps
            assert spec.bn.momentum == pytest.approx(1.0 - module.momentum)
    assert spec.stem.padding == ("same" if timm_name.startswith("tf_") else "symmetric")


def _state(timm_name="mobilenetv3_small_100"):
    return dict(random_timm_model(timm_name, 64).state_dict())


def test_missing_extra_and_misshapen_tensors_are_named():
    state = _state()
    missing = dict(state)
    del missing["blocks.2.1.se.conv_reduce.bias"]
    with pytest.raises(ConfigError, match=r"lacks 1 tensor.*blocks\.2\.1\.se\.conv_reduce\.bias"):
        from_timm("mobilenetv3_small_100", missing)
    extra = dict(state, **{"head.fc.weight": torch.zeros(3)})
    with pytest.raises(ConfigError, match=r"does not use: head\.fc\.weight"):
        from_timm("mobilenetv3_small_100", extra)
    bad = dict(state, **{"blocks.1.0.conv_dw.weight": torch.zeros(72, 1, 5, 5)})
    with pytest.raises(ConfigError, match=r"'blocks\.1\.0\.conv_dw\.weight' has shape \(72, 1, 5, 5\).*\(72, 1, 3, 3\)"):
        from_timm("mobilenetv3_small_100", bad)
    with pytest.raises(ConfigError, match="lacks"):
        from_timm("mobilenetv2_100", state)
    with pytest.raises(ConfigError, match="unknown timm model 'resnet50'"):
        from_timm("resnet50", state)


def test_num_classes_comes_from_the_checkpoint():
    reference = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=10).eval()
    model, variables = from_timm("mobilenetv2_050", reference.state_dict())
    assert model.spec.num_classes == 10
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()
    got = np.asarray(model.apply(variables, x.transpose(0, 2, 3, 1)))
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_convert_cli_writes_nothing_on_bad_input(tmp_path, capsys):
    state = _state()
    pth = tmp_path / "small.pth"
    torch.save(state, pth)
    out = tmp_path / "out"
    assert main(["convert", "timm", "mobilenetv2_100", str(pth), str(out)]) == 2
    assert not out.exists() and len(list(tmp_path.iterdir())) == 1
    assert "lacks" in capsys.readouterr().err
    assert main(["convert", "timm", "mobilenetv3_small_100", str(tmp_path / "nope.pth"), str(out)]) == 2
    assert main(["convert", "timm", "mobilenetv3_small_100", str(tmp_path / "x.npz"), str(out)]) == 2
    assert "must end in one of .pth" in capsys.readouterr().err
    # success, then refusing to overwrite
    assert main(["convert", "timm", "mobilenetv3_small_100", str(pth), str(out)]) == 0
    record = json.loads((out / "model.json").read_text())
    assert record["preset"] == "mobilenet_v3_small" and record["source"]["timm_name"] == "mobilenetv3_small_100"
    assert main(["convert", "timm", "mobilenetv3_small_100", str(pth), str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    from safetensors.torch import save_file

    from lcnn_jax.interop.torch_files import load_state_dict

    state = _state()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "m.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "wrapped.pth")
    for name in ("m.safetensors", "wrapped.pth"):
        loaded = load_state_dict(tmp_path / name)
        assert set(loaded) == set(state)
        np.testing.assert_array_equal(np.asarray(loaded["classifier.weight"]), state["classifier.weight"].numpy())
