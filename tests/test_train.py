"""A small but real SD-MS training run on MIR-1K clips: the loss falls, and it resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch)")

from melodyrt.model.datasets import discover, labels_on_frames  # noqa: E402
from melodyrt.model.sdms import sdms_loss  # noqa: E402
from melodyrt.model.train import load_checkpoint, shift_rows, train  # noqa: E402
from melodyrt.model.train_config import TrainConfig  # noqa: E402

DATA = Path(os.environ.get("MELODYRT_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mir1k8k"))
needs_data = pytest.mark.skipif(not (DATA / "audio").is_dir(), reason=f"MIR-1K not found at {DATA} (set MELODYRT_DATA)")


def tiny_config(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(
        model="rt", data=str(DATA), cache_dir=str(tmp_path / "cache"), out_dir=str(tmp_path / "run"),
        segment_frames=64, warmup_frames=8, batch_size=4, lr=3e-3, epochs=2, steps_per_epoch=8,
        checkpoint_every=4, workers=1, bf16=False, val_variants=("mix0",),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_labels_interpolate_in_semitones_and_never_across_voicing():
    lt = np.array([0.02, 0.04, 0.06, 0.08])
    lf = np.array([220.0, 440.0, 0.0, 330.0])
    f = labels_on_frames(lt, lf, np.array([0.03, 0.045, 0.055, 0.07, 0.5]))
    assert f[0] == pytest.approx(220 * 2**0.5)  # halfway in log-frequency
    assert f[1] == 440.0 and f[2] == 0.0  # nearest label next to the unvoiced one
    assert f[4] == 0.0  # beyond the annotation


def test_pitch_shift_moves_features_and_labels_together():
    t = 5
    linear = np.zeros((t, 3, 360), np.float32)
    rows = np.array([10, 100, 200, 355, 3])
    linear[np.arange(t), :, rows] = 1.0
    classes = np.array([11, 101, 0, 356, 4])  # class c = row c - 1; frame 2 unvoiced
    up, cls_up, ok_up = shift_rows(linear, classes, 7)
    assert [int(np.argmax(up[i, 0])) for i in (0, 1)] == [17, 107]
    assert up[3].max() == 0.0  # row 355 + 7 left the grid
    assert list(cls_up) == [18, 108, 0, 0, 11] and list(ok_up) == [True, True, True, False, True]
    down, cls_dn, ok_dn = shift_rows(linear, classes, -5)
    assert int(np.argmax(down[1, 2])) == 95 and down[4].max() == 0.0
    assert list(cls_dn) == [6, 96, 0, 351, 0] and list(ok_dn) == [True, True, True, True, False]
    same = shift_rows(linear, classes, 0)
    assert same[0] is linear and same[2].all()


def test_sdms_loss_switches_follow_the_ablation():
    from melodyrt.model.network import build_model

    torch.manual_seed(0)
    model = build_model("rt")
    x = torch.randn(2, 3, 360, 20)
    y = torch.randint(0, 361, (2, 20))
    mask = torch.ones(2, 20)
    out = model(x)
    cfg = TrainConfig()
    full, parts = sdms_loss(out, y, mask, cfg.loss_weights)
    main_only, _ = sdms_loss(out, y, mask, cfg.replace(ablation="main").loss_weights)
    assert main_only.item() == pytest.approx(parts["main"], rel=1e-6)
    assert full.item() > main_only.item()
    full.backward()
    assert model.aux[0].weight.grad is not None and model.aux[0].weight.grad.abs().sum() > 0


def test_onset_weight_scales_the_first_frames_of_each_voiced_run():
    import dataclasses

    from melodyrt.model.sdms import bce_rows, onset_weighted
    from melodyrt.rt.errors import ConfigError

    y = torch.tensor([[0, 5, 5, 5, 5, 0, 0, 7, 0, 3], [4, 4, 0, 2, 2, 2, 0, 0, 0, 0]])
    w = onset_weighted(y, torch.ones(2, 10), 4.0, 3)
    # runs already voiced at frame 0 have no onset in the segment; a run shorter than 3 frames ends the weighting
    assert w.tolist() == [[1, 4, 4, 4, 1, 1, 1, 4, 1, 4], [1, 1, 1, 4, 4, 4, 1, 1, 1, 1]]
    assert onset_weighted(y, torch.ones(2, 10), 1.0, 3).tolist() == torch.ones(2, 10).tolist()
    # the mask still switches frames off
    half = torch.ones(2, 10)
    half[:, :4] = 0
    assert onset_weighted(y, half, 4.0, 3)[0, :4].tolist() == [0, 0, 0, 0]
    # an output that misses the onset frames (and only those) costs more with the weight
    logits = torch.full((2, 361, 10), -5.0)
    logits[:, 0, :] = 5.0                      # "unvoiced" everywhere
    for b in range(2):
        for t in range(10):
            if w[b, t] == 1 and y[b, t] > 0:
                logits[b, :, t] = -5.0
                logits[b, y[b, t], t] = 5.0   # right wherever the frame is not an onset frame
    out = {"main_logits": logits, "feat1": torch.randn(2, 1, 4, 10), "feat2": torch.randn(2, 1, 4, 10),
           "feat3": torch.randn(2, 1, 4, 10)}
    base = TrainConfig().replace(ablation="main").loss_weights
    plain, _ = sdms_loss(out, y, torch.ones(2, 10), base)
    heavy, _ = sdms_loss(out, y, torch.ones(2, 10), dataclasses.replace(base, onset_weight=4.0, onset_frames=3))
    assert heavy.item() > 1.5 * plain.item()
    assert plain.item() == pytest.approx(bce_rows(logits, y, torch.ones(2, 10)).item(), rel=1e-6)
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"loss": {"onset_weight": 0.0}})


@needs_data
def test_small_training_run_loss_falls_and_resumes(tmp_path):
    cfg = tiny_config(tmp_path)
    before = _fixed_batch_loss(cfg, None)
    first = train(cfg, progress=False, max_tracks=4, stop_after_steps=5)
    assert first.global_step == 5
    ck = load_checkpoint(Path(cfg.out_dir) / "last.pt")
    assert ck["state"]["global_step"] == 5
    # A fresh run folder seeded from that checkpoint (as from the one committed in the repo).
    seeded = train(cfg.replace(out_dir=str(tmp_path / "seeded")), progress=False, max_tracks=4,
                   stop_after_steps=1, resume_from=Path(cfg.out_dir) / "last.pt")
    assert seeded.global_step == 6
    state = train(cfg, progress=False, max_tracks=4)  # resumes from step 5
    assert state.global_step == cfg.total_steps == 16
    hist = json.loads((Path(cfg.out_dir) / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    after = _fixed_batch_loss(cfg, Path(cfg.out_dir) / "last.pt")
    assert after < 0.9 * before, (before, after)
    assert set(hist[-1]["val"]["mix0"]) == {"VR", "VFA", "RPA", "RCA", "OA"}
    assert (Path(cfg.out_dir) / "best.pt").exists()

    # A new, shallower run started from those weights: modules 0 and 2 of the 3-module rt.
    source = load_checkpoint(Path(cfg.out_dir) / "last.pt")
    pruned = cfg.replace(model="rt2", out_dir=str(tmp_path / "pruned"), init_from=str(Path(cfg.out_dir) / "last.pt"),
                         init_modules=(0, 2), lr=1e-4)
    train(pruned, progress=False, max_tracks=4, stop_after_steps=1)
    ck = load_checkpoint(Path(pruned.out_dir) / "last.pt")
    assert ck["model_config"]["n_modules"] == 2
    assert ck["state"]["init_from"] == pruned.init_from and tuple(ck["state"]["init_modules"]) == (0, 2)
    np.testing.assert_array_equal(np.load(Path(pruned.out_dir) / "stats.npz")["offset"], source["stats"]["offset"])
    for new_key, old_key in [("blocks.1.tfa.fuse.weight", "blocks.2.tfa.fuse.weight"),
                             ("blocks.0.expand.conv.conv.weight", "blocks.0.expand.conv.conv.weight"),
                             ("head.convs.0.conv.weight", "head.convs.0.conv.weight")]:
        moved = (ck["model"][new_key] - source["model"][old_key]).abs().max().item()
        assert moved < 5e-3, (new_key, moved)  # one Adam step of lr 1e-4, not a new init


def test_init_weights_maps_modules_and_rejects_bad_maps():
    from melodyrt.model.network import build_model
    from melodyrt.model.train import init_weights
    from melodyrt.rt.errors import MelodyRTError

    torch.manual_seed(0)
    deep = build_model("rt").state_dict()
    torch.manual_seed(1)
    shallow = build_model("rt2")
    copied, fresh = init_weights(shallow, deep, (0, 2))
    assert fresh == [] and copied == len(shallow.state_dict())
    got = shallow.state_dict()
    assert torch.equal(got["blocks.1.msc.0.convs.0.conv.weight"], deep["blocks.2.msc.0.convs.0.conv.weight"])
    assert torch.equal(got["blocks.0.tfa.t_att1.conv.weight"], deep["blocks.0.tfa.t_att1.conv.weight"])
    assert torch.equal(got["stem.0.convs.0.bn.running_var"], deep["stem.0.convs.0.bn.running_var"])
    # default: the same indices, i.e. the first two modules
    init_weights(shallow, deep)
    assert torch.equal(shallow.state_dict()["blocks.1.reduce.conv.conv.weight"], deep["blocks.1.reduce.conv.conv.weight"])
    # a wider source copies nothing that does not fit, and says so
    wide = build_model(build_model("rt").cfg.replace(channels=32, stem_channels=(32,), mid_channels=32)).state_dict()
    _, fresh = init_weights(shallow, wide)
    assert "blocks.0.expand.conv.conv.weight" in fresh
    with pytest.raises(MelodyRTError, match="init_modules"):
        init_weights(shallow, deep, (0, 3))
    with pytest.raises(MelodyRTError, match="init_modules"):
        init_weights(shallow, deep, (0,))


def _fixed_batch_loss(cfg: TrainConfig, checkpoint: Path | None) -> float:
    """SD-MS loss of one fixed batch of training clips, before or after training."""
    from melodyrt.model.datasets import split_by_singer
    from melodyrt.model.features import FeatureCache
    from melodyrt.model.network import build_model
    from melodyrt.model.train import SegmentSampler, compute_stats, model_from_checkpoint

    _, tracks = discover(cfg.data)
    train_t = split_by_singer(tracks, cfg.val_singers)[0][:4]
    cache = FeatureCache(cfg.cache_dir, cfg.cfp)
    cache.build(train_t, workers=1, progress=False)
    if checkpoint is None:
        torch.manual_seed(cfg.seed)
        model, stats = build_model(cfg.model), compute_stats(cache, train_t)
    else:
        model, stats = model_from_checkpoint(load_checkpoint(checkpoint))
    model.eval()
    x, y, mask = SegmentSampler(cache, train_t, cfg, stats, 0).batch(np.random.default_rng(123))
    with torch.no_grad():
        loss, _ = sdms_loss(model(x), y, mask, cfg.loss_weights)
    return float(loss)


def test_same_front_end_tells_feature_configs_apart():
    """Fine-tuning onto another front end must not reuse the source's feature statistics."""
    from dataclasses import asdict

    from melodyrt.model.train import same_front_end
    from melodyrt.rt.config import CfpConfig

    asym = CfpConfig(window="asymmetric")
    stored = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(asym).items()}
    assert same_front_end({"cfp_config": stored}, asym)
    assert not same_front_end({"cfp_config": stored}, CfpConfig(window="multires"))
    # a checkpoint written before the multires fields existed
    old = {k: v for k, v in stored.items() if not k.startswith(("short_", "split_", "crossfade_"))}
    assert same_front_end({"cfp_config": old}, asym)
    assert same_front_end({}, CfpConfig())


def test_distill_kl_is_the_masked_kl_from_teacher_to_student():
    from melodyrt.model.sdms import distill_kl

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 361, 6, generator=g), torch.randn(2, 361, 6, generator=g)
    mask = torch.ones(2, 6)
    assert float(distill_kl(t, t, mask)) == pytest.approx(0.0, abs=1e-6)
    want = torch.nn.functional.kl_div(torch.log_softmax(s, 1), torch.log_softmax(t, 1), log_target=True,
                                      reduction="none").sum(1).mean()
    assert float(distill_kl(s, t, mask)) == pytest.approx(float(want), rel=1e-5)
    # Frames outside the mask do not count, however far apart the two are there.
    far = s.clone()
    far[:, :, 3:] = t[:, :, 3:] + 10 * torch.randn(2, 361, 3, generator=g)
    half = torch.zeros(2, 6)
    half[:, :3] = 1
    assert float(distill_kl(far, t, half)) == pytest.approx(float(distill_kl(s[..., :3], t[..., :3], half[:, :3])))
    # A temperature softens both sides; the T^2 factor keeps the term's scale comparable.
    assert 0 < float(distill_kl(s, t, mask, temperature=4.0)) < 4.0 ** 2 * float(distill_kl(s, t, mask))


@needs_data
def test_distillation_pulls_the_student_toward_its_teacher(tmp_path):
    """An untrained teacher (its outputs nothing like the labels) pulls a student trained by the
    distillation term alone toward it: that student ends far closer to it than one trained on
    the labels, from the same init and batches. The teacher's identity statistics differ from
    the student's, so this also runs the renormalisation of the batch."""
    from melodyrt.model.datasets import split_by_singer
    from melodyrt.model.features import FeatureCache
    from melodyrt.model.network import build_model
    from melodyrt.model.sdms import distill_kl
    from melodyrt.model.train import RunState, SegmentSampler, load_teacher, model_from_checkpoint, save_checkpoint
    from melodyrt.rt.cfp import FeatureStats
    from melodyrt.rt.config import CfpConfig
    from melodyrt.rt.errors import ConfigError, MelodyRTError

    torch.manual_seed(1)
    teacher_pt = tmp_path / "teacher.pt"
    save_checkpoint(teacher_pt, build_model("rt2_offline").eval(), TrainConfig(), FeatureStats.identity(),
                    RunState(history=[]))
    base = tiny_config(tmp_path, model="rt2", epochs=1, steps_per_epoch=10, lr=3e-3)
    taught = base.replace(out_dir=str(tmp_path / "taught"), teacher=str(teacher_pt),
                          loss=base.loss.__class__(main=0.0, aux1=0.0, aux2=0.0, mse1=0.0, mse2=0.0, distill=1.0))
    train(base, progress=False, max_tracks=4)
    train(taught, progress=False, max_tracks=4)

    _, tracks = discover(base.data)
    train_t = split_by_singer(tracks, base.val_singers)[0][:4]
    cache = FeatureCache(base.cache_dir, base.cfp)
    gaps = {}
    for name, cfg in (("plain", base), ("taught", taught)):
        student, stats = model_from_checkpoint(load_checkpoint(Path(cfg.out_dir) / "last.pt"))
        teacher = load_teacher(taught, stats, 0)
        x, _, mask = SegmentSampler(cache, train_t, cfg, stats, 0).batch(np.random.default_rng(7))
        with torch.no_grad():
            gaps[name] = float(distill_kl(student(x)["main_logits"], teacher(x), mask))
    assert gaps["taught"] < 0.5 * gaps["plain"], gaps
    hist = json.loads((Path(taught.out_dir) / "history.json").read_text())
    assert "distill" in hist[-1]["loss"] and "distill" not in json.loads(
        (Path(base.out_dir) / "history.json").read_text())[-1]["loss"]

    # A distillation weight without a teacher, or a teacher of other features: clear errors.
    with pytest.raises(ConfigError, match="needs a teacher"):
        base.replace(loss=base.loss.__class__(distill=1.0))
    with pytest.raises(MelodyRTError, match="another CFP configuration"):
        load_teacher(taught.replace(cfp=CfpConfig(window="multires")), stats, 0)


def test_done_line_names_best_pt_only_when_it_is_there(tmp_path):
    from melodyrt.model.commands import done_line

    line = done_line(10, 82.23, tmp_path)
    assert "82.2" in line and "best.pt is not in" in line and str(tmp_path / "last.pt") in line
    (tmp_path / "best.pt").write_bytes(b"")
    assert done_line(10, 82.23, tmp_path) == f"done: 10 epochs, best validation OA 82.2 -> {tmp_path / 'best.pt'}"
