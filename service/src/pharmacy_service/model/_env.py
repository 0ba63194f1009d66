"""The model's switches from the environment, with one spelling of true and false."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["env_flag"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    """``name`` as a boolean, ``default`` when unset or empty; anything else is an error that
    names the variable."""
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is invalid: use true or false.")
