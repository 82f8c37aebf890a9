"""Streaming step = full causal forward (torch and ONNX Runtime); strict causality."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from melodyrt.model.config import ModelConfig, load_model_config  # noqa: E402
from melodyrt.model.network import MFTFA, build_model  # noqa: E402
from melodyrt.model.streaming import StreamingStep, export_step_onnx, ort_session  # noqa: E402
from melodyrt.rt.window_sums import WindowSums  # noqa: E402

T = 40  # frames compared step by step


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_config() -> ModelConfig:
    """Small causal config covering every layer type: 3 MSC groups, TFA, W-frame mean."""
    return ModelConfig(name="small", channels=8, stem_channels=(4, 8), mid_channels=16,
                       groups=4, n_modules=3, taps=(1, 2), msc_kernels=(3, (5, 3), (7, 1)),
                       tfa_kernels=(3, (5, 3)), head_channels=4, freq_window=7, causal=True,
                       stem_bn_eps=1e-5)


def trained_like(cfg: ModelConfig | str, seed: int = 0) -> MFTFA:
    """A model with non-trivial BatchNorm statistics (so folding matters), eval mode."""
    torch.manual_seed(seed)
    model = build_model(cfg) if isinstance(cfg, str) else MFTFA(cfg)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2)
    return model.eval()


def full_log_probs(model: MFTFA, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(x)["main_logits"], dim=1)


@pytest.fixture(scope="module", params=["small", "rt", "rt2"])
def case(request):
    cfg = small_config() if request.param == "small" else request.param
    model = trained_like(cfg)
    step = StreamingStep(model)
    x = torch.rand(2, 3, 360, T, generator=torch.Generator().manual_seed(1))
    return request.param, model, step, x


# ---------------------------------------------------------------------------- torch
def test_step_equals_full_causal_forward(case):
    _, model, step, x = case
    ref = full_log_probs(model, x)
    got, _ = step.run(x)  # frame by frame from the zero state
    assert got.shape == (2, 361, T)
    # log-probabilities: a stricter check than probabilities (~1/361 each)
    err = (torch.log(got) - ref).abs().max().item()
    assert err <= 1e-5, err


def test_chunked_stream_equals_full_and_resumes(case):
    """forward_stream over uneven chunks (the offline path) = full forward."""
    _, model, step, x = case
    ref = torch.softmax(model(x)["main_logits"], dim=1).detach()
    # chunks keep the W-1 frames of a window themselves (the net's own state layout)
    states = {n: torch.zeros(2, *shape) for n, shape in step.net.stream_state_specs()}
    outs = []
    with torch.no_grad():
        for a, b in ((0, 7), (7, 8), (8, 21), (21, T)):
            y, states = step.net.forward_stream(x[..., a:b], states)
            outs.append(y)
    assert (torch.cat(outs, dim=-1) - ref).abs().max().item() <= 1e-6


def test_step_is_strictly_causal(case):
    _, _, step, x = case
    t = 25
    y = x.clone()
    y[..., t + 1:] = torch.rand(2, 3, 360, T - t - 1)
    a, _ = step.run(x)
    b, _ = step.run(y)
    assert torch.equal(a[..., : t + 1], b[..., : t + 1])
    assert not torch.equal(a[..., t + 1:], b[..., t + 1:])


def test_state_specs_and_initial_state(case):
    name, _, step, _ = case
    specs = step.state_specs()
    names = [s.name for s in specs]
    assert len(set(names)) == len(names)
    assert all(n.isidentifier() for n in names)
    states = step.initial_state(3)
    assert [tuple(s.shape) for s in states] == [(3, *spec.shape) for spec in specs]
    assert all(float(s.abs().sum()) == 0.0 for s in states)
    # a carry keeps k-1 frames of one layer: (channels, frames, 360 or 1); a window state
    # is the sum of the W-1 frames before the current one: (channels, 1, 360)
    assert all(len(s.shape) == 3 and s.shape[2] in (1, 360) and s.shape[1] >= 1 for s in specs)
    windows = [s for s in specs if s.kind == "window_sum"]
    assert len(windows) == step.cfg.n_modules and all(s.window == step.cfg.freq_window and s.shape[1] == 1 for s in windows)
    sal, *new = step(torch.rand(3, 3, 360), *states)
    assert sal.shape == (3, 361)
    assert [tuple(s.shape) for s in new] == [tuple(s.shape) for s in states]
    assert step.delay_frames == 0
    if name != "small":
        assert step.receptive_field_frames == build_model(name).receptive_field_frames


def test_non_causal_model_is_rejected():
    with pytest.raises(ValueError):
        StreamingStep(MFTFA(load_model_config("paper").replace(n_modules=3, taps=(1, 2))))


# ---------------------------------------------------------------------------- ONNX
def test_onnx_step_equals_torch_step(case, tmp_path: Path):
    name, _, step, x = case
    path = export_step_onnx(step, tmp_path / f"{name}.onnx", metadata={"hop_ms": 10})
    meta = json.loads(Path(str(path) + ".json").read_text())
    assert meta["delay_frames"] == 0 and meta["hop_ms"] == 10
    assert [i["name"] for i in meta["inputs"]][1:] == [s.input_name for s in step.state_specs()]

    sess = ort_session(path, threads=1)
    in_names = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    assert in_names == ["frame"] + [s.input_name for s in step.state_specs()]
    assert out_names == ["salience"] + [s.output_name for s in step.state_specs()]

    n_frames = 16  # enough to fill every state (incl. the W-frame mean) and roll it
    ref, ref_states = step.run(x[..., :n_frames])
    specs = step.state_specs()
    states = [s.numpy() for s in step.initial_state(2)]  # batch 2: dynamic batch axis
    windows = WindowSums(specs, 2)  # what the engines keep for the window states
    win = [i for i, s in enumerate(specs) if s.kind == "window_sum"]
    outs = []
    for t in range(n_frames):
        res = sess.run(None, dict(zip(in_names, [x[..., t].numpy(), *states])))
        outs.append(res[0])
        states = res[1:]
        sums = windows.push([states[i] for i in win])
        for k, i in enumerate(win):
            states[i] = sums[k].copy()
    got = np.stack(outs, axis=-1)
    assert np.abs(np.log(got) - np.log(ref.numpy())).max() <= 1e-5
    for a, b in zip(states, ref_states):
        assert np.abs(a - b.numpy()).max() <= 1e-5
