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
                        progress: bool = True, backing: str = "all",
                        voicing_thresholds: list[float] | None = None) -> dict:
    """Evaluate the full-sequence forward of a checkpoint (causal or paper) on ``data``.

    Parameters
    ----------
    voicing_thresholds : list of float, optional
        Also score the same outputs decoded at each of these thresholds on p(voiced)
        (``decode_salience``); the main scores stay at its default 0.5. Shows what a
        stricter or looser voicing decision trades between VR and VFA.

    backing : {"all", "foreign", "shared"}
        With ``singers`` on multitrack data: keep only the clips whose accompaniment does
        not (``foreign``) or does (``shared``) also occur in another singer's clip
        (:func:`melodyrt.model.synth_set.shared_backing`; MIR-1K's singers share backing
        tracks).

    Returns
    -------
    dict
        ``pooled`` (metrics over all frames), ``per_track``, ``by_threshold`` (pooled per
        voicing threshold, when asked) and a markdown ``table``.
    """
    thresholds = [float(t) for t in voicing_thresholds or []]
    bad = [t for t in thresholds if not 0.0 < t < 1.0]
    if bad:
        raise MelodyRTError(f"voicing thresholds must lie strictly between 0 and 1, got {bad}")
    ckpt = load_checkpoint(checkpoint)
    model, stats = model_from_checkpoint(ckpt)
    cfp = _from_mapping(CfpConfig, ckpt["cfp_config"], "cfp.")
    layout, tracks = discover(data)
    all_tracks = tracks
    if singers:
        tracks = [t for t in tracks if t.singer in singers]
        if not tracks:
            raise MelodyRTError(f"no tracks of singers {', '.join(singers)} in {data}")
    if backing != "all":
        if not singers:
            raise MelodyRTError("--backing foreign|shared needs --singers (the held-out singers)")
        shared = synth_set.shared_backing(all_tracks, singers, progress=progress)
        tracks = [t for t in tracks if (t.name in shared) == (backing == "shared")]
        if not tracks:
            raise MelodyRTError(f"no {backing}-backing tracks of singers {', '.join(singers)} in {data}")
    cache = FeatureCache(cache_dir, cfp)
    cache.build(tracks, progress=progress)
    lookahead = model.delay_frames
    scorer = MelodyScorer()
    swept = {t: MelodyScorer() for t in thresholds}
    for t in tqdm(tracks, desc="evaluating", unit="track", disable=not progress):
        available = variants_of(t)
        v = variant if variant in available else ("mix0" if "mix0" in available else "mix")
        sal = score_track(scorer, model, cache, t, v, stats, lookahead)
        times = frame_times(sal.shape[0], cache.cfg, cache.delay_samples) - lookahead * cache.cfg.hop_seconds
        for thr, sweep in swept.items():
            f0, voiced, _ = decode_salience(sal, voicing_threshold=thr)
            sweep.add(t.name, t.label_times, t.label_f0, times, f0, voiced)
    pooled = scorer.pooled()
    label = f"{layout} ({len(tracks)} tracks{'' if backing == 'all' else ', ' + backing + ' backing'})"
    table = "pooled over frames\n" + format_table({label: pooled})
    by_threshold = {thr: sweep.pooled() for thr, sweep in swept.items()}
    if by_threshold:
        table += "\n\npooled over frames, by voicing threshold on p(voiced)\n" + format_table(
            {f"threshold {thr:g}": m for thr, m in by_threshold.items()})
    table += "\n\nper track\n" + format_table(scorer.per_track)
    return {"pooled": pooled, "per_track": scorer.per_track, "by_threshold": by_threshold, "table": table}


def evaluate_synth_over_real(checkpoint: str | Path, data: str | Path, set_dir: str | Path,
                             singers: list[str] | None = None, snrs: list[float] | None = None,
                             seed: int | None = None, cache_dir: str | Path = ".cache/features",
                             progress: bool = True) -> dict:
    """Score a checkpoint on the synthetic-voice-over-real-accompaniment set (:mod:`.synth_set`).

    The set is rendered into ``set_dir`` first unless it already holds the same one. Every
    SNR folder is scored on its own (pooled over its frames), and within it every voice type.
    Tracks whose accompaniment also occurs in a training singer's clip
    (``backing_in_training`` in the manifest) are pooled apart.

    Returns
    -------
    dict
        ``pooled`` (per SNR tag, foreign-backing tracks), ``pooled_shared_backing`` (per SNR
        tag, the others), ``by_voice`` (per SNR tag, per voice type, foreign backing),
        ``per_track``, ``set`` (the manifest's parameters and hash) and a markdown ``table``.
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
    entry = {e["name"]: e for e in manifest["tracks"]}
    pooled, pooled_shared, by_voice, per_track, counts = {}, {}, {}, {}, {}
    for tag, tracks in synth_set.set_tracks(set_dir, manifest).items():
        cache.build(tracks, progress=progress)
        foreign, shared, groups = MelodyScorer(), MelodyScorer(), {}
        for t in tqdm(tracks, desc=f"evaluating {tag}", unit="track", disable=not progress):
            sal = predict_linear(model, cache.load(t, "mix"), stats)
            f0, voiced, _ = decode_salience(sal)
            times = frame_times(sal.shape[0], cfp, cache.delay_samples) - model.delay_frames * cfp.hop_seconds
            e = entry.get(t.name, {})
            if e.get("backing_in_training", False):  # its accompaniment was trained on: scored apart
                shared.add(t.name, t.label_times, t.label_f0, times, f0, voiced)
                continue
            foreign.add(t.name, t.label_times, t.label_f0, times, f0, voiced)
            group = groups.setdefault(e.get("voice", "?"), MelodyScorer())
            group.add(t.name, t.label_times, t.label_f0, times, f0, voiced)
        pooled[tag] = foreign.pooled()
        counts[tag] = (len(foreign.per_track), len(shared.per_track))
        if shared.per_track:
            pooled_shared[tag] = shared.pooled()
        by_voice[tag] = {v: groups[v].pooled() for v in synth_set.VOICE_RANGES if v in groups}  # low to high
        per_track.update(foreign.per_track)
        per_track.update(shared.per_track)
    table = (f"synth-over-real (set {manifest['hash']}, seed {manifest['seed']}, accompaniment of "
             f"{', '.join(manifest['singers'])}), pooled over frames\n")
    rows = {f"{tag} ({counts[tag][0]} tracks, foreign backing)": s for tag, s in pooled.items()}
    rows.update({f"{tag} ({counts[tag][1]} tracks, backing also in training)": s for tag, s in pooled_shared.items()})
    table += format_table(rows)
    for tag, groups in by_voice.items():
        table += f"\n\n{tag} by voice type (foreign backing)\n" + format_table(groups)
    params = {k: v for k, v in manifest.items() if k not in ("tracks", "clips")}
    return {"pooled": pooled, "pooled_shared_backing": pooled_shared, "by_voice": by_voice, "per_track": per_track,
            "set": params, "table": table}

