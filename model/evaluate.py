"""Score a checkpoint on a data set: pooled mir_eval metrics plus a per-track table; or on the
synthetic-voice-over-real-accompaniment generalisation set (:mod:`.synth_set`)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from melodyrt.rt.config import CfpConfig, _from_mapping
from melodyrt.rt.decode import decode_salience
from melodyrt.rt.errors import MelodyRTError

from . import synth_set
from .datasets import discover
from .features import FeatureCache, frame_times, variants_of
from .metrics import MelodyScorer, format_table
from .train import load_checkpoint, model_from_checkpoint, predict_linear, score_track


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, variant: str | None = None,
                        singers: list[str] | None = None, cache_dir: str | Path = ".cache/features",
                        progress: bool = True) -> dict:
    """Evaluate the full-sequence forward of a checkpoint (causal or paper) on ``data``.

    Returns
    -------
    dict
        ``pooled`` (metrics over all frames), ``per_track`` and a markdown ``table``.
    """
    ckpt = load_checkpoint(checkpoint)
    model, stats = model_from_checkpoint(ckpt)
    cfp = _from_mapping(CfpConfig, ckpt["cfp_config"], "cfp.")
    layout, tracks = discover(data)
    if singers:
        tracks = [t for t in tracks if t.singer in singers]
        if not tracks:
            raise MelodyRTError(f"no tracks of singers {', '.join(singers)} in {data}")
    cache = FeatureCache(cache_dir, cfp)
    cache.build(tracks, progress=progress)
    lookahead = model.delay_frames
    scorer = MelodyScorer()
    for t in tqdm(tracks, desc="evaluating", unit="track", disable=not progress):
        available = variants_of(t)
        v = variant if variant in available else ("mix0" if "mix0" in available else "mix")
        score_track(scorer, model, cache, t, v, stats, lookahead)
    pooled = scorer.pooled()
    table = "pooled over frames\n" + format_table({f"{layout} ({len(tracks)} tracks)": pooled})
    table += "\n\nper track\n" + format_table(scorer.per_track)
    return {"pooled": pooled, "per_track": scorer.per_track, "table": table}


def evaluate_synth_over_real(checkpoint: str | Path, data: str | Path, set_dir: str | Path,
                             singers: list[str] | None = None, snrs: list[float] | None = None,
                             seed: int | None = None, cache_dir: str | Path = ".cache/features",
                             progress: bool = True) -> dict:
    """Score a checkpoint on the synthetic-voice-over-real-accompaniment set (:mod:`.synth_set`).

    The set is rendered into ``set_dir`` first unless it already holds the same one. Every
    SNR folder is scored on its own (pooled over its frames), and within it every voice type.

    Returns
    -------
    dict
        ``pooled`` (per SNR tag), ``by_voice`` (per SNR tag, per voice type), ``per_track``,
        ``set`` (the manifest's parameters and hash) and a markdown ``table``.
    """
    manifest = synth_set.render_set(
        data, set_dir, singers or list(synth_set.DEFAULT_SINGERS),
        synth_set.DEFAULT_SNRS if snrs is None else snrs,
        synth_set.DEFAULT_SEED if seed is None else seed, progress=progress)
    ckpt = load_checkpoint(checkpoint)
    model, stats = model_from_checkpoint(ckpt)
    cfp = _from_mapping(CfpConfig, ckpt["cfp_config"], "cfp.")
    # Features of these tracks live apart, keyed by the set: a re-rendered set never reads stale ones.
    cache = FeatureCache(Path(cache_dir) / f"synth_over_real-{manifest['hash']}", cfp)
    voice_of = {e["name"]: e["voice"] for e in manifest["tracks"]}
    pooled, by_voice, per_track = {}, {}, {}
    for tag, tracks in synth_set.set_tracks(set_dir, manifest).items():
        cache.build(tracks, progress=progress)
        scorer, groups = MelodyScorer(), {}
        for t in tqdm(tracks, desc=f"evaluating {tag}", unit="track", disable=not progress):
            sal = predict_linear(model, cache.load(t, "mix"), stats)
            f0, voiced, _ = decode_salience(sal)
            times = frame_times(sal.shape[0], cfp, cache.delay_samples) - model.delay_frames * cfp.hop_seconds
            scorer.add(t.name, t.label_times, t.label_f0, times, f0, voiced)
            group = groups.setdefault(voice_of.get(t.name, "?"), MelodyScorer())
            group.add(t.name, t.label_times, t.label_f0, times, f0, voiced)
        pooled[tag] = scorer.pooled()
        by_voice[tag] = {v: groups[v].pooled() for v in synth_set.VOICE_RANGES if v in groups}  # low to high
        per_track.update(scorer.per_track)
    n = {tag: sum(1 for e in manifest["tracks"] if e["snr"] == tag) for tag in pooled}
    table = (f"synth-over-real (set {manifest['hash']}, seed {manifest['seed']}, accompaniment of "
             f"{', '.join(manifest['singers'])}), pooled over frames\n")
    table += format_table({f"{tag} ({n[tag]} tracks)": s for tag, s in pooled.items()})
    for tag, groups in by_voice.items():
        table += f"\n\n{tag} by voice type\n" + format_table(groups)
    params = {k: v for k, v in manifest.items() if k not in ("tracks", "clips")}
    return {"pooled": pooled, "by_voice": by_voice, "per_track": per_track, "set": params, "table": table}

