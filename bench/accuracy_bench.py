"""``melodyrt bench accuracy``: mir_eval metrics of the streaming tracker and an accuracy-vs-latency sweep.

Every track goes through :func:`melodyrt.rt.tracker.transcribe_signal` (the live path fed from
memory) at the file's own rate; the frames (``frame.time`` already has the reported delay
subtracted) are scored against the annotation with :class:`melodyrt.model.metrics.MelodyScorer`
(VR, VFA, RPA, RCA, OA pooled over all frames on a 10 ms grid). MIR-1K is scored twice: the
0 dB mix (left + right) and the voice alone (right channel).

The sweep varies what one model allows at run time: decoder smoothing (median / EMA over N
frames: ``(N - 1) / 2`` hops of delay) and voicing hysteresis (``on_frames``: a decision lag
of ``on_frames - 1`` hops at every onset). The model's look-ahead is fixed by its export
(``delay_frames``); analysis-window variants need separately trained models, given with
``--models DIR1,DIR2`` and run with the default decoder. To avoid running the network once per
decoder setting, the first setting records the engine's salience per hop and the others replay
it through the same tracker (resampler, CFP and decoder run for real; the salience is
identical by construction because the decoder does not feed back into the engine).

Latency of a setting = the algorithmic delay the tracker reports (in every timestamp) + mean
hop wait and one block of buffering at 48 kHz / 128 + the voicing decision lag. That formula
cannot see what a voicing threshold costs (a stricter one waits for p(voiced) to climb
higher), so every setting also gets a measured **onset lag** (:func:`onset_lags`): at each
labelled note onset after a rest, the time from the label to the first voiced output frame
(timestamps already have the reported delay subtracted, so this is the lag beyond it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from melodyrt.rt.bundle import ModelBundle, load_bundle
from melodyrt.rt.decode import DecoderConfig
from melodyrt.rt.tracker import Tracker, TrackerConfig, transcribe_signal

from .cfp_bench import machine_info, machine_line, save_figure

VAL_SINGERS = ("Kenshin", "annar")
METRICS = ("VR", "VFA", "RPA", "RCA", "OA")


@dataclass(frozen=True)
class Setting:
    name: str
    decoder: DecoderConfig
    bundle: str | None = None  # another model folder (--models)


def default_sweep() -> list[Setting]:
    d = DecoderConfig()
    out = [Setting("default", d)]
    out += [Setting(f"median {n}", replace(d, smoothing="median", smoothing_frames=n)) for n in (3, 5, 9)]
    out += [Setting("ema 5", replace(d, smoothing="ema", smoothing_frames=5))]
    out += [Setting(f"on_frames {k}", replace(d, on_frames=k)) for k in (2, 3)]
    out += [Setting("off_frames 4", replace(d, off_frames=4))]
    # the voicing frontier: stricter thresholds trade onsets for fewer false alarms over a backing
    out += [Setting(f"voicing {on:g}/{off:g}", replace(d, voicing_on=on, voicing_off=off))
            for on, off in ((0.5, 0.4), (0.6, 0.4), (0.6, 0.5), (0.7, 0.6)) if (on, off) != (d.voicing_on, d.voicing_off)]
    # a plain 0.5 threshold: what `melodyrt eval` scores, so the two can be compared
    out += [Setting("no hysteresis", replace(d, voicing_on=0.5, voicing_off=0.5, off_frames=1))]
    return out


class ReplayEngine:
    """Records the wrapped engine's salience per step on the first pass; replays it afterwards."""

    def __init__(self, engine: Any) -> None:
        self.inner = engine
        self.name = f"{engine.name} (replayed)"
        self.record: list[np.ndarray] = []
        self.recording = True
        self._i = 0

    def step(self, frames: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        if self.recording:
            sal, st = self.inner.step(frames, state)
            self.record.append(np.array(sal, copy=True))
            return sal, st
        sal = self.record[self._i]
        self._i += 1
        return sal, state

    def reset(self, state: Any = None, streams: list[int] | None = None) -> None:
        self._i = 0
        if self.recording:
            self.inner.reset()

    def warmup(self) -> None:
        self.inner.warmup()

    def new_state(self, n_streams: int = 1) -> Any:
        return self.inner.new_state(n_streams)


def load_tracks(data: Path, singers: Sequence[str] | None, max_tracks: int | None) -> tuple[str, list[Any]]:
    from melodyrt.model.datasets import discover

    layout, tracks = discover(data)
    if singers:
        tracks = [t for t in tracks if t.singer in set(singers)]
    if max_tracks:
        tracks = tracks[:max_tracks]
    if not tracks:
        from melodyrt.rt.errors import MelodyRTError

        raise MelodyRTError(f"no tracks left in {data} after --singers/--max-tracks")
    return layout, tracks


def conditions(track: Any) -> dict[str, tuple[np.ndarray, int]]:
    """Signals to score: MIR-1K mix (L+R) and voice (right); other layouts the mono mix."""
    from melodyrt.rt.audio_io import read_audio

    if track.voice_channel is None:
        x, sr = read_audio(track.audio, "mix")
        return {"mix": (x, sr)}
    voice, sr = read_audio(track.audio, track.voice_channel)
    acc, _ = read_audio(track.audio, 1 - track.voice_channel)
    return {"mix": (voice + acc, sr), "voice": (voice, sr)}


def setting_latency_ms(tracker: Tracker, blocksize: int = 128, rate: int = 48000) -> float:
    """Algorithmic + mean hop wait + one block buffering at 48 kHz/128 + voicing decision lag [ms]."""
    probe = Tracker(rate, tracker.bundle, config=tracker.config, engine=tracker.engine)
    lat = probe.latency(blocksize, buffering_samples=float(blocksize))
    hop_ms = 1000.0 * tracker.hop / tracker.analysis_rate
    return lat.ms(lat.total_mean) + tracker.decoder.decision_lag_frames[0] * hop_ms


Runner = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]

ONSET_REST_S = 0.1     # a labelled onset follows at least this much unvoiced time ...
ONSET_HOLD_S = 0.05    # ... and stays voiced at least this long
ONSET_EARLY_S = 0.05   # an output onset up to this much before the label counts (label jitter)
ONSET_LATE_S = 0.25    # later than this after the label: missed


def onset_lags(label_times: np.ndarray, label_f0: np.ndarray, times: np.ndarray, voiced: np.ndarray) -> dict[str, list[float] | int]:
    """Lag of the output's voicing onsets behind the labelled ones.

    Parameters
    ----------
    label_times, label_f0 : ndarray, shape (n,)
        Reference grid [s] and f0 [Hz] (0 = unvoiced).
    times, voiced : ndarray, shape (m,)
        Output frame times [s] (reported delay already subtracted) and voicing decisions.

    Returns
    -------
    dict
        ``lags_ms`` (one per matched onset: first output onset in
        [label - ONSET_EARLY_S, label + ONSET_LATE_S] minus the label [ms]), ``missed``
        (no output onset in that window and unvoiced at its start) and ``bridged`` (the
        output was still voiced from before: the rest was not heard).
    """
    lt, voiced_ref = np.asarray(label_times, float), np.asarray(label_f0, float) > 0
    t, v = np.asarray(times, float), np.asarray(voiced, bool)
    out: dict[str, list[float] | int] = {"lags_ms": [], "missed": 0, "bridged": 0}
    if len(lt) < 2 or len(t) == 0:
        return out
    dt = float(np.median(np.diff(lt)))
    rest, hold = int(round(ONSET_REST_S / dt)), int(round(ONSET_HOLD_S / dt))
    est_on = t[np.flatnonzero(v & ~np.r_[False, v[:-1]])]
    for i in range(rest, len(lt) - hold):
        if not voiced_ref[i] or voiced_ref[i - rest:i].any() or not voiced_ref[i:i + hold].all():
            continue
        t0 = lt[i]
        cand = est_on[(est_on >= t0 - ONSET_EARLY_S) & (est_on <= t0 + ONSET_LATE_S)]
        j = int(np.searchsorted(t, t0 - ONSET_EARLY_S))
        if cand.size:
            out["lags_ms"].append(1000.0 * float(cand[0] - t0))  # type: ignore[union-attr]
        elif j < len(t) and v[j]:
            out["bridged"] += 1  # type: ignore[operator]
        else:
            out["missed"] += 1  # type: ignore[operator]
    return out


def onset_summary(parts: list[dict[str, Any]]) -> dict[str, float]:
    """Pool :func:`onset_lags` results: p50/p90 lag [ms], missed and bridged [% of labelled onsets]."""
    lags = np.array([x for p in parts for x in p["lags_ms"]], float)
    missed, bridged = sum(p["missed"] for p in parts), sum(p["bridged"] for p in parts)
    n = len(lags) + missed + bridged
    return {"onsets": n,
            "lag_p50_ms": float(np.percentile(lags, 50)) if lags.size else float("nan"),
            "lag_p90_ms": float(np.percentile(lags, 90)) if lags.size else float("nan"),
            "missed_pct": 100.0 * missed / n if n else float("nan"),
            "bridged_pct": 100.0 * bridged / n if n else float("nan")}


def score_runner(name: str, tracks: list[Any], run: Runner, per_condition: dict[str, Any],
                 max_seconds: float | None = None, onsets: dict[str, Any] | None = None) -> None:
    """Score ``run`` (signal, rate -> times, f0, voiced) on every track and condition into ``per_condition``.

    With ``onsets`` given, also pools :func:`onset_lags` into ``onsets[condition][name]``.
    """
    from melodyrt.model.metrics import MelodyScorer

    scorers: dict[str, MelodyScorer] = {}
    lag_parts: dict[str, list[dict[str, Any]]] = {}
    for tr in tracks:
        keep = slice(None) if max_seconds is None else tr.label_times <= max_seconds
        for cond, (x, sr) in conditions(tr).items():
            if max_seconds is not None:
                x = x[: int(max_seconds * sr)]
            t, f, v = run(x, sr)
            scorers.setdefault(cond, MelodyScorer()).add(tr.name, tr.label_times[keep], tr.label_f0[keep], t, f, v)
            if onsets is not None:
                lag_parts.setdefault(cond, []).append(onset_lags(tr.label_times[keep], tr.label_f0[keep], t, v))
    for cond, sc in scorers.items():
        per_condition.setdefault(cond, {})[name] = sc.pooled()
    for cond, parts in lag_parts.items():
        onsets.setdefault(cond, {})[name] = onset_summary(parts)  # type: ignore[union-attr]


def tracker_runner(tracker_for: Callable[[int], Tracker]) -> Runner:
    def run(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tr = transcribe_signal(x, sr, tracker=tracker_for(sr))
        fr = tr.frames
        return (np.array([f.time for f in fr]), np.array([f.f0_hz for f in fr]), np.array([f.voiced for f in fr], bool))
    return run


def run(bundle: ModelBundle | str | Path | None, data: Path, out_dir: Path, *, singers: Sequence[str] | None = None,
        max_tracks: int | None = None, sweep: bool = True, models: Sequence[str] = (), quick: bool = False,
        extra: Callable[[list[Any], dict[str, Any], dict[str, float], float | None], None] | None = None,
        plots: bool = True, name: str = "accuracy", own: str = "default") -> dict[str, Any]:
    """Score the tracker (and the sweep); write ``<name>_bench.json/.md`` and the plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
    layout, tracks = load_tracks(data, singers, max_tracks)
    settings = default_sweep() if sweep else [Setting(own, DecoderConfig())]
    if quick and sweep:
        settings = [x for x in settings if x.name in ("default", "median 5", "on_frames 2")]
    settings += [Setting(f"model {Path(m).name}", DecoderConfig(), m) for m in models]
    per_condition: dict[str, dict[str, dict[str, float]]] = {}
    latency: dict[str, float] = {}
    onsets: dict[str, dict[str, dict[str, float]]] = {}
    t0 = time.perf_counter()
    from melodyrt.rt.engine import create_engine

    replay = ReplayEngine(create_engine("ort", bundle))
    cache: dict[tuple[str, int], list[np.ndarray]] = {}
    # record with the longest-delay decoder: its flush runs the most hops, so every other
    # setting finds its salience recorded
    longest = max((s.decoder for s in settings), key=lambda d: (d.window - 1) // 2)
    record_cfg = TrackerConfig(decoder=longest)
    for s in settings:
        b = load_bundle(s.bundle) if s.bundle else bundle
        cfg = TrackerConfig(decoder=s.decoder)
        if s.bundle:
            trackers: dict[int, Tracker] = {}

            def tracker_for(sr: int, b: ModelBundle = b, cfg: TrackerConfig = cfg, trackers: dict = trackers) -> Tracker:
                if sr not in trackers:
                    trackers[sr] = Tracker(sr, b, "ort", cfg)
                return trackers[sr]
            runner = tracker_runner(tracker_for)
            lat_tracker = tracker_for(8000)
        else:
            runner = _replay_runner(bundle, cfg, record_cfg, replay, cache)
            lat_tracker = Tracker(8000, bundle, config=cfg, engine=replay)
        score_runner(s.name, tracks, runner, per_condition, max_seconds=4.0 if quick else None, onsets=onsets)
        latency[s.name] = setting_latency_ms(lat_tracker)
    if extra is not None:
        extra(tracks, per_condition, latency, 4.0 if quick else None)
    result: dict[str, Any] = {
        "benchmark": name, "quick": quick, "machine": machine,
        "data": {"dir": str(data), "layout": layout, "tracks": len(tracks), "singers": list(singers or []),
                 "seconds_per_track": 4.0 if quick else None,
                 "names": [t.name for t in tracks][:50]},
        "model": {"name": bundle.name, "dir": str(bundle.root), "delay_frames": bundle.delay_frames,
                  "untrained": not (bundle.meta.get("training_state") or {}).get("global_step")},
        "settings": {s.name: {**s.decoder.__dict__, "model": s.bundle} for s in settings},
        "latency_ms": latency,
        "scores": per_condition,
        "onsets": onsets,
        "notes": [f"model look-ahead is fixed by the export ({bundle.delay_frames} frames): no look-ahead variants with one model",
                  "latency = algorithmic delay + mean hop wait + one 128-frame block at 48 kHz + voicing decision lag",
                  f"onset lag = first voiced output frame minus the labelled onset (>= {ONSET_REST_S * 1000:.0f} ms rest before, "
                  f">= {ONSET_HOLD_S * 1000:.0f} ms voiced after), beyond the reported delay; missed: nothing within "
                  f"{ONSET_LATE_S * 1000:.0f} ms; bridged: still voiced from before the rest"],
        "wall_s": time.perf_counter() - t0,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if plots:
        result["plots"] = write_plot(result, out_dir, name)
    (out_dir / f"{name}_bench.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{name}_bench.md").write_text(markdown(result))
    return result


def _replay_runner(bundle: ModelBundle, cfg: TrackerConfig, record_cfg: TrackerConfig, replay: ReplayEngine,
                   cache: dict[tuple[str, int], list[np.ndarray]]) -> Runner:
    trackers: dict[tuple[int, bool], Tracker] = {}

    def tracker(sr: int, rec: bool) -> Tracker:
        if (sr, rec) not in trackers:
            trackers[sr, rec] = Tracker(sr, bundle, config=record_cfg if rec else cfg, engine=replay)
        return trackers[sr, rec]

    def run(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (str(hash(x.tobytes())), sr)
        if key not in cache:
            replay.recording, replay.record = True, []
            transcribe_signal(x, sr, tracker=tracker(sr, True))
            cache[key] = replay.record
        replay.recording, replay.record = False, cache[key]
        tr = transcribe_signal(x, sr, tracker=tracker(sr, False))
        fr = tr.frames
        return (np.array([f.time for f in fr]), np.array([f.f0_hz for f in fr]), np.array([f.voiced for f in fr], bool))
    return run


def write_plot(result: dict[str, Any], out_dir: Path, name: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(result["scores"])
    fig, axes = plt.subplots(1, len(conds), figsize=(6 * len(conds), 4.5), squeeze=False)
    for ax, cond in zip(axes[0], conds):
        rows = result["scores"][cond]
        for k, s in rows.items():
            lat = result["latency_ms"].get(k, np.nan)
            ax.scatter([lat], [s["OA"]], marker="o")
            ax.scatter([lat], [s["RPA"]], marker="x", color="gray")
            ax.annotate(k, (lat, s["OA"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("latency [ms] (algorithmic + hop wait + buffering + decision lag)")
        ax.set_ylabel("OA (o), RPA (x) [%]")
        ax.set_title(f"{cond}: accuracy vs latency")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return [save_figure(fig, out_dir, f"{name}_vs_latency.png")]


def markdown(result: dict[str, Any]) -> str:
    d, m = result["data"], result["machine"]
    lines = [f"# melodyrt bench {result['benchmark']}{' (quick mode)' if result['quick'] else ''}", "",
             machine_line(m),
             f"Data: {d['dir']} ({d['layout']}, {d['tracks']} tracks{', singers ' + ', '.join(d['singers']) if d['singers'] else ''}); "
             f"model {result['model']['name']}{' (UNTRAINED: scores are meaningless)' if result['model']['untrained'] else ''}.", ""]
    for cond, rows in result["scores"].items():
        ons = result.get("onsets", {}).get(cond, {})
        lines += [f"## {cond}", "", "| setting | latency ms | " + " | ".join(METRICS) + " | onset lag p50 / p90 ms | missed / bridged % |",
                  "|---|---:|" + "---:|" * len(METRICS) + "---:|---:|"]
        for k, s in sorted(rows.items(), key=lambda kv: result["latency_ms"].get(kv[0], 0.0)):
            lat = result["latency_ms"].get(k)
            o = ons.get(k)
            on = "- | -" if o is None else (f"{o['lag_p50_ms']:.0f} / {o['lag_p90_ms']:.0f} | "
                                             f"{o['missed_pct']:.1f} / {o['bridged_pct']:.1f}")
            lines.append(f"| {k} | {'-' if lat is None else f'{lat:.1f}'} | " + " | ".join(f"{s[x]:.1f}" for x in METRICS) + f" | {on} |")
        lines.append("")
    lines += [f"- {n}" for n in result.get("notes", [])]
    if result.get("plots"):
        lines += ["", "Plots: " + ", ".join(result["plots"])]
    return "\n".join(lines) + "\n"
