"""Input processors hosted through pedalboard: its built-in effects and VST3 plugins.

They sit between the source and the tracker, the way a singer conditions a microphone in a
DAW (high-pass against rumble, noise gate, compressor, gain). Each is a streaming
:class:`~melodyrt.rt.plugins.Processor`: ``process(block)`` returns exactly as many samples as
it gets, ``reset()`` clears the state, ``latency_samples`` says how late the output is.

Latency. pedalboard compensates the latency a plugin reports by holding back that many
output samples, so in streaming use (``reset=False`` per block) a plugin with latency first
returns fewer samples than it is given. :class:`PedalboardProcessor` measures that deficit
once at construction (a short run of silence through the plugin at the real block size),
pre-fills an output FIFO with that many zeros, and reports it as ``latency_samples``
(``latency_source = "measured"``; checked against offline rendering for Resample and
MP3Compressor, while GSMFullRateCompressor's streamed output is misaligned by pedalboard
itself). pedalboard's own filters, gate, compressor and gain
report none, so their latency is 0 (``latency_source = "none reported"``): a filter's
group delay is not counted. A VST3's own report is kept in ``reported_latency_samples``.

pedalboard is an optional dependency: ``pip install 'melodyrt[fx]'``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError, MelodyRTError


class FxUnavailable(MelodyRTError):
    """pedalboard is not installed."""


def _pedalboard() -> Any:
    try:
        import pedalboard
    except ImportError:
        raise FxUnavailable("audio effects need pedalboard: pip install 'melodyrt[fx]'") from None
    return pedalboard


class PedalboardProcessor:
    """Run a chain of pedalboard plugins block by block on mono audio.

    Parameters
    ----------
    plugins : pedalboard.Plugin or sequence of them
        Effects in order.
    sample_rate : int [Hz]
        Rate of the audio the chain sees.
    block_size : int [samples]
        Largest block :meth:`process` will get (the plugins' buffer size).
    probe_s : float [s]
        Length of the silent run that measures the latency.
    name : str
        Label for messages.

    Attributes
    ----------
    latency_samples : int [samples at ``sample_rate``]
    latency_source : {"measured", "none reported"}
    reported_latency_samples : int [samples]
        Sum of what the plugins themselves report (VST3 only; 0 for built-ins).

    Raises
    ------
    ConfigError
        The chain returns no audio within ``probe_s`` (it cannot stream at this block size).
    """

    def __init__(
        self,
        plugins: Any,
        *,
        sample_rate: int,
        block_size: int = 128,
        probe_s: float = 0.5,
        name: str = "pedalboard",
    ) -> None:
        pb = _pedalboard()
        if sample_rate <= 0 or block_size <= 0:
            raise ConfigError(f"{name}: sample_rate and block_size must be positive")
        items = list(plugins) if isinstance(plugins, Sequence) else [plugins]
        self.board = pb.Pedalboard(items)
        self.name = name
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self.reported_latency_samples = int(sum(int(getattr(p, "reported_latency_samples", 0) or 0) for p in items))
        self.latency_samples = self._measure_latency(probe_s)
        self.latency_source = "measured" if self.latency_samples else "none reported"
        self._fifo = np.zeros(self.latency_samples + 8 * self.block_size, np.float32)
        self._level = 0
        self.reset()

    def _measure_latency(self, probe_s: float) -> int:
        """Largest shortfall of output behind input over a silent run [samples]."""
        n = self.block_size
        silence = np.zeros((1, n), np.float32)
        given = returned = deficit = 0
        for _ in range(max(1, math.ceil(probe_s * self.sample_rate / n))):
            out = self.board.process(silence, self.sample_rate, buffer_size=n, reset=False)
            given += n
            returned += out.shape[-1]
            deficit = max(deficit, given - returned)
        if returned == 0:
            raise ConfigError(f"{self.name}: returned no audio in {probe_s:g} s of {n}-sample blocks; "
                              "this effect cannot run in a real-time chain")
        return deficit

    def reset(self) -> None:
        """Clear the plugins' state and re-fill the FIFO with ``latency_samples`` zeros."""
        self.board.reset()
        self._fifo[: self.latency_samples] = 0.0
        self._level = self.latency_samples

    def process(self, block: NDArray[np.floating]) -> NDArray[np.float32]:
        """Process one block.

        Parameters
        ----------
        block : ndarray [shape=(n,)] [float32]

        Returns
        -------
        out : ndarray [shape=(n,)] [float32]
            The effect's output delayed by ``latency_samples``.
        """
        x = np.asarray(block, np.float32)
        if x.ndim != 1:
            raise ValueError(f"{self.name}: expected a mono block of shape (n,), got {x.shape}")
        n = x.shape[0]
        if n == 0:
            return x.copy()
        y = self.board.process(x[None, :], self.sample_rate, buffer_size=max(n, self.block_size), reset=False)[0]
        need = self._level + y.shape[0]
        if need > self._fifo.shape[0]:     # larger blocks than announced: grow once
            grown = np.zeros(2 * need, np.float32)
            grown[: self._level] = self._fifo[: self._level]
            self._fifo = grown
        self._fifo[self._level:need] = y
        self._level = need
        if need < n:   # the plugin fell further behind than measured: pad, and say so in the latency
            short = n - need
            self._fifo[short:n] = self._fifo[:need].copy()
            self._fifo[:short] = 0.0
            self.latency_samples += short
            self.latency_source = "measured"
            self._level = need = n
        out = self._fifo[:n].copy()
        rest = need - n
        self._fifo[:rest] = self._fifo[n:need]
        self._level = rest
        return out


# ---------------------------------------------------------------------- plugin factories


def effect(*, sample_rate: int, block_size: int = 128, effect: str, **params: Any) -> PedalboardProcessor:
    """Any pedalboard built-in effect by class name, e.g. ``effect="LowShelfFilter"``.

    Parameters
    ----------
    effect : str
        Class name in the ``pedalboard`` module.
    **params
        Its constructor arguments (pedalboard's own names and units).
    """
    pb = _pedalboard()
    effects = _builtin_effects(pb)
    if effect not in effects:
        raise ConfigError(f"unknown pedalboard effect {effect!r}; available: {', '.join(sorted(effects))}")
    cls = effects[effect]
    try:
        plugin = cls(**params)
    except TypeError as exc:
        raise ConfigError(f"pedalboard {effect}: {exc}") from None
    return PedalboardProcessor(plugin, sample_rate=sample_rate, block_size=block_size, name=effect)


_NOT_EFFECTS = ("Plugin", "Pedalboard", "Chain", "Mix", "PluginContainer", "ExternalPlugin", "VST3Plugin", "AudioUnitPlugin")


def _builtin_effects(pb: Any) -> dict[str, type]:
    """pedalboard's built-in effect classes by name (containers and hosts excluded)."""
    return {n: c for n, c in vars(pb).items()
            if isinstance(c, type) and issubclass(c, pb.Plugin) and n not in _NOT_EFFECTS and not n.startswith("_")}


def highpass(*, sample_rate: int, block_size: int = 128, cutoff_hz: float = 80.0, order: int = 2) -> PedalboardProcessor:
    """High-pass against rumble and mains hum: ``order`` cascaded first-order sections.

    Parameters
    ----------
    cutoff_hz : float [Hz]
        -3 dB point of each section.
    order : int
        Slope 6 dB/octave per order (pedalboard's HighpassFilter is first order).
    """
    if not 1 <= int(order) <= 8:
        raise ConfigError(f"highpass order must be 1..8, got {order!r}")
    pb = _pedalboard()
    return PedalboardProcessor([pb.HighpassFilter(cutoff_frequency_hz=cutoff_hz) for _ in range(int(order))],
                               sample_rate=sample_rate, block_size=block_size, name="highpass")


def noise_gate(*, sample_rate: int, block_size: int = 128, threshold_db: float = -50.0, ratio: float = 10.0,
               attack_ms: float = 1.0, release_ms: float = 100.0) -> PedalboardProcessor:
    """Noise gate: below ``threshold_db`` [dBFS] the level drops by ``ratio``."""
    pb = _pedalboard()
    return PedalboardProcessor(pb.NoiseGate(threshold_db=threshold_db, ratio=ratio, attack_ms=attack_ms, release_ms=release_ms),
                               sample_rate=sample_rate, block_size=block_size, name="noise-gate")


def compressor(*, sample_rate: int, block_size: int = 128, threshold_db: float = -24.0, ratio: float = 3.0,
               attack_ms: float = 5.0, release_ms: float = 100.0) -> PedalboardProcessor:
    """Compressor: above ``threshold_db`` [dBFS] the level grows 1/``ratio`` as fast."""
    pb = _pedalboard()
    return PedalboardProcessor(pb.Compressor(threshold_db=threshold_db, ratio=ratio, attack_ms=attack_ms, release_ms=release_ms),
                               sample_rate=sample_rate, block_size=block_size, name="compressor")


def gain(*, sample_rate: int, block_size: int = 128, gain_db: float = 0.0) -> PedalboardProcessor:
    """Fixed gain [dB]."""
    pb = _pedalboard()
    return PedalboardProcessor(pb.Gain(gain_db=gain_db), sample_rate=sample_rate, block_size=block_size, name="gain")


def limiter(*, sample_rate: int, block_size: int = 128, threshold_db: float = -6.0, release_ms: float = 100.0) -> PedalboardProcessor:
    """Limiter with ceiling ``threshold_db`` [dBFS]."""
    pb = _pedalboard()
    return PedalboardProcessor(pb.Limiter(threshold_db=threshold_db, release_ms=release_ms),
                               sample_rate=sample_rate, block_size=block_size, name="limiter")


class Vst3Processor(PedalboardProcessor):
    """A VST3 effect loaded by path (``pedalboard.load_plugin``).

    Parameters
    ----------
    path : str or Path
        The ``.vst3`` bundle or file.
    sample_rate : int [Hz]
    block_size : int [samples]
    parameters : dict, optional
        Initial parameter values by pedalboard's Python names (see ``plugin.parameters``).
    plugin_name : str, optional
        Which plugin of a multi-plugin bundle.

    Raises
    ------
    ConfigError
        The path does not exist, is not a loadable VST3, or is an instrument.
    """

    def __init__(self, path: str | Path, *, sample_rate: int, block_size: int = 128,
                 parameters: dict[str, Any] | None = None, plugin_name: str | None = None) -> None:
        pb = _pedalboard()
        p = Path(path).expanduser()
        if not p.exists():
            raise ConfigError(f"VST3 plugin not found: {p}")
        try:
            plugin = pb.load_plugin(str(p), parameter_values=parameters or {}, plugin_name=plugin_name)
        except Exception as exc:   # pedalboard raises ImportError/ValueError/RuntimeError
            raise ConfigError(f"cannot load VST3 {p}: {exc}") from None
        if getattr(plugin, "is_instrument", False) and not getattr(plugin, "is_effect", True):
            raise ConfigError(f"{p} is an instrument, not an effect; it cannot process the input")
        self.plugin = plugin
        self.path = p
        super().__init__(plugin, sample_rate=sample_rate, block_size=block_size, name=p.name)


def vst3(*, sample_rate: int, block_size: int = 128, path: str, parameters: dict[str, Any] | None = None,
         plugin_name: str | None = None) -> Vst3Processor:
    """Chain factory of :class:`Vst3Processor` (``{plugin: vst3, args: {path: ...}}``)."""
    return Vst3Processor(path, sample_rate=sample_rate, block_size=block_size, parameters=parameters, plugin_name=plugin_name)


__all__ = ["FxUnavailable", "PedalboardProcessor", "Vst3Processor", "compressor", "effect", "gain", "highpass",
           "limiter", "noise_gate", "vst3"]
