"""MF-TFA network: reference parameter count and shapes, configs, causality, BN folding."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from melodyrt.model.config import ModelConfig, available_configs, load_model_config  # noqa: E402
from melodyrt.model.fold import fold_batchnorm, has_batchnorm  # noqa: E402
from melodyrt.model.network import OUTPUT_KEYS, MFTFA, build_model  # noqa: E402

PAPER_PARAMS = 1_162_972  # the published figure, with the two aux Linear(720, 361) heads
PAPER_PARAMS_NO_AUX = PAPER_PARAMS - 2 * (720 * 361 + 361)  # 642,410


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small convs on 2 OpenMP threads stall badly when the other core is busy.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_config(**over) -> ModelConfig:
    """A fast causal config exercising every code path (3 MSC groups, all branches)."""
    base = dict(name="tiny", channels=8, stem_channels=(4, 8), mid_channels=16, groups=4,
                n_modules=3, taps=(1, 2), msc_kernels=(3, (5, 3), (7, 1)),
                tfa_kernels=(3, (5, 3)), head_channels=4, freq_window=5, causal=True,
                stem_bn_eps=1e-5)
    base.update(over)
    return ModelConfig(**base)


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics/affines, so folding and eval mode are tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


# ---------------------------------------------------------------------------- reference
def test_paper_parameter_count_matches_reference():
    model = build_model("paper")
    assert model.param_count() == PAPER_PARAMS
    assert model.param_count(include_aux=False) == PAPER_PARAMS_NO_AUX
    no_aux = MFTFA(load_model_config("paper").replace(aux_heads=False))
    assert no_aux.param_count() == PAPER_PARAMS_NO_AUX


def test_paper_causal_has_same_parameters_as_paper():
    a = build_model("paper").state_dict()
    b = build_model("paper_causal").state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_paper_output_shapes():
    torch.manual_seed(0)
    model = build_model("paper").eval()
    T = 6
    with torch.no_grad():
        out = model(torch.rand(2, 3, 360, T))
    assert tuple(out) == OUTPUT_KEYS
    for k in ("main", "aux1", "aux2", "main_logits", "aux1_logits", "aux2_logits"):
        assert out[k].shape == (2, 361, T), k
    for k in ("feat1", "feat2", "feat3"):
        assert out[k].shape == (2, 1, 360, T), k
    for k in ("main", "aux1", "aux2"):
        assert torch.allclose(out[k].sum(dim=1), torch.ones(2, T), atol=1e-5)
    # feat3 is the pitch part of the main logits (the deepest distillation map)
    assert torch.equal(out["main_logits"][:, 1:], out["feat3"][:, 0])
    assert model.delay_frames == 0
    assert model.receptive_field_frames == 113  # 'same' convs: ~1.1 s each side


def test_no_aux_heads_gives_none_but_keeps_feature_maps():
    model = MFTFA(tiny_config(aux_heads=False)).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 360, 5))
    assert out["aux1"] is None and out["aux2"] is None and out["aux1_logits"] is None
    assert out["feat1"].shape == out["feat2"].shape == (1, 1, 360, 5)


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    model = MFTFA(tiny_config()).train()
    out = model(torch.rand(2, 3, 360, 6))
    loss = sum(out[k].float().pow(2).mean() for k in
               ("main_logits", "aux1_logits", "aux2_logits", "feat1", "feat2"))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


# ---------------------------------------------------------------------------- configs
def test_shipped_configs_load_and_round_trip(tmp_path: Path):
    assert {"paper", "paper_causal", "rt", "rt2"} <= set(available_configs())
    for name in ("paper", "paper_causal", "rt", "rt2"):
        cfg = load_model_config(name)
        assert cfg.name == name
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        p = tmp_path / f"{name}.yaml"
        cfg.to_yaml(p)
        assert load_model_config(p) == cfg
    assert not load_model_config("paper").causal
    assert load_model_config("paper_causal").causal
    rt = load_model_config("rt")
    assert rt.causal and rt.aux_heads and rt.n_bins == 360


def test_config_name_is_not_resolved_against_cwd(tmp_path: Path, monkeypatch):
    (tmp_path / "rt").mkdir()  # the repo root has an rt/ package directory
    monkeypatch.chdir(tmp_path)
    assert load_model_config("rt").name == "rt"


def test_config_validation():
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError):
        ModelConfig(bm_strides=(4, 3, 6, 4))  # must collapse exactly 360 rows
    with pytest.raises(ValueError):
        ModelConfig(msc_kernels=(3, 4))  # even kernels have no 'same' padding
    with pytest.raises(ValueError):
        ModelConfig(stem_channels=(16, 24))  # last stem width must equal channels
    assert ModelConfig(msc_kernels=(3, [5, 1])).msc_kernels == ((3, 3), (5, 1))
    # h2 may be the last module (2-module configs), never beyond it
    assert ModelConfig(n_modules=2, taps=(1, 2)).taps == (1, 2)
    with pytest.raises(ValueError):
        ModelConfig(n_modules=2, taps=(1, 3))
    with pytest.raises(ValueError):
        ModelConfig(n_modules=2, taps=(2, 2))


# ---------------------------------------------------------------------------- causality
def test_causal_receptive_field_bounds_the_influence():
    """Perturbing frame 0 changes frame 0 on and nothing after frame RF.

    RF is the longest path; through ReLUs and sigmoid gates the actual influence may die
    out earlier, so only the bound and the per-layer values are exact.
    """
    torch.manual_seed(1)
    model = MFTFA(tiny_config()).eval()
    randomize_bn(model)
    rf = model.receptive_field_frames
    x = torch.rand(1, 3, 360, rf + 6)
    y = x.clone()
    y[..., 0] += 1.0
    with torch.no_grad():
        a, b = model(x)["main_logits"], model(y)["main_logits"]
    diff = (a - b).abs().amax(dim=1)[0]
    # Tolerance, not equality: a conv algorithm may tile positions (e.g. Winograd) and
    # mix rounding across frames it does not depend on mathematically.
    assert diff[0] > 1e-4
    assert torch.all(diff[rf + 1:] <= 1e-6)
    # time taps: 2 stem blocks of 3+3 (4 past frames each); 3 modules of [3 chained
    # MSCs of 3+3+1 taps (3 * 4 = 12), then max(TFA 3+3 -> 4, time attention 3+3 -> 4,
    # W - 1 = 4)]; head 5+5 -> 8
    assert rf == 2 * 4 + 3 * (12 + 4) + 8


def test_layer_receptive_fields_are_exact():
    from melodyrt.model.layers import CausalWindowMean, TimeConv2d

    for layer, rf in ((TimeConv2d(2, 2, (3, 5), causal=True, n_freq=7), 4),
                      (CausalWindowMean(2, 7, 6), 5)):
        assert layer.past_frames == rf
        x = torch.zeros(1, 2, 12, 7)  # time-major (B, C, T, F)
        x[:, :, 0] = 1.0
        with torch.no_grad():
            y = (layer(x) - layer(torch.zeros_like(x))).abs().amax(dim=(0, 1, 3))
        assert torch.all(y[: rf + 1] > 0) and torch.all(y[rf + 1:] == 0)


@pytest.mark.parametrize("name", ["rt", "rt2", "paper_causal"])
def test_shipped_causal_models_do_not_look_ahead(name: str):
    torch.manual_seed(2)
    model = build_model(name).eval()
    T, t = 12, 6
    x = torch.rand(1, 3, 360, T)
    y = x.clone()
    y[..., t + 1:] = torch.rand(1, 3, 360, T - t - 1)
    with torch.no_grad():
        a, b = model(x), model(y)
    for k in ("main_logits", "aux1_logits", "aux2_logits", "feat1", "feat2", "feat3"):
        past = (a[k][..., : t + 1] - b[k][..., : t + 1]).abs().max().item()
        future = (a[k][..., t + 1:] - b[k][..., t + 1:]).abs().max().item()
        assert past <= 1e-6, (k, past)
        if k.endswith("logits"):  # (a ReLU feature map may be all zero at init)
            assert future > 1e-4, (k, future)


def test_delay_frames_is_the_configured_lookahead():
    assert MFTFA(tiny_config(lookahead_frames=3)).delay_frames == 3


# ---------------------------------------------------------------------------- folding
@pytest.mark.parametrize("cfg", [tiny_config(), tiny_config(causal=False), "rt"])
def test_fold_batchnorm_is_equivalent(cfg):
    torch.manual_seed(3)
    model = build_model(cfg) if isinstance(cfg, str) else MFTFA(cfg)
    randomize_bn(model)
    model.eval()
    folded = fold_batchnorm(model)
    assert has_batchnorm(model) and not has_batchnorm(folded)
    x = torch.rand(2, 3, 360, 10)
    with torch.no_grad():
        a, b = model(x), folded(x)
    for k in ("main_logits", "aux1_logits", "aux2_logits", "feat1", "feat2", "feat3"):
        assert (a[k] - b[k]).abs().max().item() <= 1e-5, k
