"""modelhub SDK: helpers for serving models. See :mod:`modelhub.serving`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelhub-sdk")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
