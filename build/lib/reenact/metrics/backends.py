"""Which package (and which version of it) computed a metric, for the provenance block of metrics.json."""

from __future__ import annotations

from importlib import metadata


def package_version(*distributions: str) -> str | None:
    """Version of the first installed distribution among ``distributions`` (None if none is installed)."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def describe(package: str, *distributions: str, **details: object) -> dict[str, object]:
    """A backend record: {"package": ..., "version": ..., **details}."""
    return {"package": package, "version": package_version(*(distributions or (package,))), **details}
