"""Errors a user can cause. The CLI prints them as one line, never as a traceback."""


class MelodyRTError(Exception):
    """Base class of every user-facing error."""


class ConfigError(MelodyRTError):
    """A configuration file or value is invalid."""


class AudioInputError(MelodyRTError):
    """An audio file or buffer cannot be used (unreadable, empty, too short, bad rate...)."""


class ModelError(MelodyRTError):
    """A model file is missing, corrupt or does not match the runtime."""
