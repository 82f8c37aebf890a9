"""Configuration of the real-time pipeline: frozen dataclasses loaded from YAML.

Derived values are properties, never stored twice. Every subsystem has its own dataclass;
:class:`PipelineConfig` composes them and is what a YAML file describes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ConfigError

WINDOW_KINDS = ("symmetric", "asymmetric", "multires")
NORM_MODES = ("fixed", "running", "song", "none")


@dataclass(frozen=True)
class CfpConfig:
    """Parameters of the CFP front end (reference values from MF-TFA, section 2).

    Attributes
    ----------
    sample_rate : int [Hz]
        Analysis rate; audio is resampled to it.
    hop : int [samples]
        Frame hop at ``sample_rate`` (80 samples = 10 ms).
    win_length : int [samples]
        Analysis window length (768 = 96 ms).
    n_fft : int [samples]
        FFT size, ``sample_rate / freq_resolution`` (4000 -> 2 Hz bins).
    fmin, fmax : float [Hz]
        Lowest centre frequency and the cut-off ``1 / tc`` of the log-frequency axis.
    bins_per_octave : int
        Log-frequency resolution (60 -> 20 cents).
    gammas : tuple of float
        Compression exponents of spectrum, cepstrum (GC) and GCoS.
    window : {"symmetric", "asymmetric", "multires"}
        ``symmetric`` is the paper's Blackman-Harris window; ``asymmetric`` keeps the long
        rising half of a Blackman-Harris window and falls with a short one, so the window's
        weight sits close to the newest sample. ``multires`` computes the CFP twice, on the
        asymmetric window above (``win_length``, ``asym_fall``, ``n_fft``) and on a short
        asymmetric window (``short_length``, ``short_fall``, ``short_n_fft``), both ending
        at the newest sample, and blends them per log-frequency row: the long window below
        ``split_hz``, the short one above, with a raised-cosine crossfade over
        ``crossfade_bins`` rows (see :mod:`melodyrt.rt.cfp`).
    asym_fall : int [samples]
        Length of the falling side of the asymmetric window (the long branch of
        ``multires``).
    short_length : int [samples]
        ``multires`` only: length of the short window (192 = 24 ms).
    short_fall : int [samples]
        ``multires`` only: falling side of the short window (32 = 4 ms); with
        ``short_length`` it sets the delay of the upper rows (energy centroid).
    short_n_fft : int [samples]
        ``multires`` only: FFT size of the short branch (1000 -> 8 Hz bins, enough for a
        window whose main lobe is ~100 Hz wide); a multiple of 4, at least
        ``short_length`` and ``2 * sample_rate / fmin``.
    split_hz : float [Hz]
        ``multires`` only: centre of the crossfade; rows below take the long window.
    crossfade_bins : int [rows]
        ``multires`` only: width of the raised-cosine crossfade (12 rows = 1/5 octave).
    """

    sample_rate: int = 8000
    hop: int = 80
    win_length: int = 768
    n_fft: int = 4000
    fmin: float = 32.0
    fmax: float = 2050.0
    bins_per_octave: int = 60
    gammas: tuple[float, float, float] = (0.24, 0.6, 1.0)
    window: str = "symmetric"
    asym_fall: int = 64
    short_length: int = 192
    short_fall: int = 32
    short_n_fft: int = 1000
    split_hz: float = 400.0
    crossfade_bins: int = 12

    def __post_init__(self) -> None:
        for name in ("sample_rate", "hop", "win_length", "n_fft", "bins_per_octave"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"cfp.{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(f"cfp needs 0 < fmin < fmax <= sample_rate / 2, got {self.fmin}, {self.fmax}")
        if self.window not in WINDOW_KINDS:
            raise ConfigError(f"cfp.window must be one of {WINDOW_KINDS}, got {self.window!r}")
        if not 0 < self.asym_fall < self.win_length:
            raise ConfigError(f"cfp.asym_fall must be in 1..{self.win_length - 1}, got {self.asym_fall}")
        if self.win_length > self.n_fft:
            raise ConfigError("cfp.win_length must not exceed cfp.n_fft")
        if self.n_fft % 4:
            # The two cepstral transforms run as half-length DCT-I through an n_fft/2 FFT.
            raise ConfigError(f"cfp.n_fft must be a multiple of 4, got {self.n_fft}")
        if self.sample_rate / self.fmin > self.n_fft / 2:
            raise ConfigError("cfp.fmin is below two FFT bins: raise fmin or n_fft")
        if len(self.gammas) != 3:
            raise ConfigError("cfp.gammas needs exactly three exponents")
        if self.window == "multires":
            self._check_multires()

    def _check_multires(self) -> None:
        """The short branch's constraints (only checked for ``window: multires``)."""
        for name in ("short_length", "short_fall", "short_n_fft", "crossfade_bins"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"cfp.{name} must be positive, got {getattr(self, name)}")
        if not self.short_length < self.win_length:
            raise ConfigError(
                f"cfp.short_length ({self.short_length}) must be shorter than cfp.win_length ({self.win_length})"
            )
        if not self.short_fall < self.short_length:
            raise ConfigError(f"cfp.short_fall must be in 1..{self.short_length - 1}, got {self.short_fall}")
        if self.short_n_fft % 4:
            raise ConfigError(f"cfp.short_n_fft must be a multiple of 4, got {self.short_n_fft}")
        if self.short_length > self.short_n_fft:
            raise ConfigError("cfp.short_length must not exceed cfp.short_n_fft")
        if self.short_n_fft > self.n_fft:
            raise ConfigError("cfp.short_n_fft must not exceed cfp.n_fft")
        if self.sample_rate / self.fmin > self.short_n_fft / 2:
            # GC keeps quefrencies up to fs / fmin; they must fit in the unique half.
            raise ConfigError(
                f"cfp.short_n_fft must be at least 2 * sample_rate / fmin = {2 * self.sample_rate / self.fmin:g}, "
                f"got {self.short_n_fft}"
            )
        if not self.fmin < self.split_hz < self.fmax:
            raise ConfigError(f"cfp.split_hz must lie between fmin and fmax, got {self.split_hz}")

    @property
    def freq_resolution(self) -> float:
        """Spacing of FFT bins [Hz]."""
        return self.sample_rate / self.n_fft

    @property
    def hop_seconds(self) -> float:
        """Frame hop [s]."""
        return self.hop / self.sample_rate

    @property
    def n_freq_kept(self) -> int:
        """FFT bins kept for the spectrum and GCoS channels (0 .. fmax)."""
        return int(round(self.fmax / self.freq_resolution)) + 1

    @property
    def n_quef_kept(self) -> int:
        """Quefrency bins kept for the GC channel (0 .. fs / fmin)."""
        return int(round(self.sample_rate / self.fmin)) + 1

    @property
    def lifter_quefrency(self) -> int:
        """Bins zeroed at both ends of the cepstrum (high-pass lifter), ``round(fs / fmax)``."""
        return int(round(self.sample_rate / self.fmax))

    @property
    def lifter_frequency(self) -> int:
        """Bins zeroed at both ends of GCoS, ``round(fmin / fr)``."""
        return int(round(self.fmin / self.freq_resolution))


@dataclass(frozen=True)
class NormConfig:
    """How CFP features are scaled before the network.

    Attributes
    ----------
    mode : {"fixed", "running", "song", "none"}
        ``fixed`` uses statistics stored with the model; ``running`` divides each channel by a
        causal running peak; ``song`` is the paper's per-song min-max (offline only);
        ``none`` returns ``log(1 + x)``.
    running_release : float [s]
        Release time constant of the running peak estimate.
    """

    mode: str = "fixed"
    running_release: float = 3.0

    def __post_init__(self) -> None:
        if self.mode not in NORM_MODES:
            raise ConfigError(f"norm.mode must be one of {NORM_MODES}, got {self.mode!r}")
        if self.running_release <= 0:
            raise ConfigError("norm.running_release must be positive")


@dataclass(frozen=True)
class ResampleConfig:
    """Streaming resampler settings.

    Attributes
    ----------
    quality : {"QQ", "LQ", "MQ", "HQ", "VHQ"}
        soxr quality recipe.
    """

    quality: str = "HQ"

    def __post_init__(self) -> None:
        if self.quality not in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
            raise ConfigError(f"resample.quality must be one of QQ, LQ, MQ, HQ, VHQ, got {self.quality!r}")


@dataclass(frozen=True)
class PipelineConfig:
    """The whole real-time pipeline configuration."""

    cfp: CfpConfig = field(default_factory=CfpConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    resample: ResampleConfig = field(default_factory=ResampleConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "PipelineConfig":
        """Build from a nested mapping; unknown keys are an error, missing ones take defaults."""
        return _from_mapping(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        """Load from a YAML file."""
        return cls.from_dict(load_yaml(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain nested mapping, round-trips through :meth:`from_dict`."""
        return _to_plain(dataclasses.asdict(self))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning I/O and syntax problems into :class:`ConfigError`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a mapping at the top level")
    return data


def _from_mapping(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {prefix or '<root>'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown config key(s) in {prefix or '<root>'}: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_mapping(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, default, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad config section {prefix or '<root>'}: {exc}") from None


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Check a YAML value against the type of its default (ints may stand for floats)."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if default and len(value) == len(default):
            return tuple(_coerce(v, d, key) for v, d in zip(value, default))
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value
