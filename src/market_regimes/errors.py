"""User-facing errors: each carries a one-line message that names what is wrong and where."""


class MarketRegimesError(Exception):
    """Base class for errors caused by input or configuration, not by a bug.

    Entry scripts print ``str(err)`` on one line and exit non-zero instead of a traceback.
    """


class DataError(MarketRegimesError, ValueError):
    """Bad or missing market data (file, column, row or symbol named in the message)."""


class ConfigError(MarketRegimesError, ValueError):
    """An invalid configuration value."""


def checked_options(cls, values, group: str) -> dict:
    """``values`` as a plain dict, raising ConfigError for keys that are not fields of dataclass ``cls``."""
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    values = dict(values or {})
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {group} option(s) {unknown}; known: {sorted(known)}")
    return values
