"""Reference server for the pharmacy medication-interaction model (work in progress)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pharmacy-service")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
