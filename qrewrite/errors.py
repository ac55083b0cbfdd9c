"""Exception types that qrewrite raises for problems the caller can fix.

The command line turns any `QrewriteError` into one line on stderr and exit code 2;
every other exception is an internal failure (exit code 1).
"""

from __future__ import annotations


class QrewriteError(Exception):
    """Base class of errors caused by the caller's input, config or data."""


class ConfigError(QrewriteError, ValueError):
    """An invalid configuration value, an unknown key or a contradiction between keys."""


class ModelInputError(QrewriteError, ValueError):
    """The input model cannot be read, is invalid, or points outside its folder."""


class CalibrationDataError(QrewriteError, ValueError):
    """Calibration samples are missing, empty, or do not fit the model's inputs."""


class MissingCalibrationDataError(CalibrationDataError):
    """The config needs calibration samples, and neither a reader nor random data was given."""


class NotBuiltError(QrewriteError, NotImplementedError):
    """A documented option or value whose feature qrewrite does not implement yet."""


class OutputPathError(QrewriteError, ValueError):
    """An output path in a missing folder, naming a folder, or naming one of the input files."""
