"""The named-dataset registry and the resolver that finds (or downloads) a dataset's folder.

Resolution order for ``resolve_dataset(x)``:

1. ``x`` is an existing file or folder → that path.
2. ``x`` names a registered dataset → ``$EMBEDSTACK_DATA_DIR/<local dir>`` (local copies), then
   ``<cache>/datasets/<name>`` (``$EMBEDSTACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/embedstack``, else
   ``~/.cache/embedstack``), then a verified download into the cache unless ``EMBEDSTACK_OFFLINE=1``.
3. Otherwise :class:`~embedstack.errors.DatasetError` naming every place looked at and how to
   provide the data.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedstack.errors import DatasetError

__all__ = [
    "DatasetSpec",
    "Download",
    "DATASETS",
    "register_dataset",
    "get_spec",
    "list_datasets",
    "dataset_info",
    "resolve_dataset",
    "data_dir",
    "cache_dir",
    "offline",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Download:
    """One file to fetch: ``url`` → ``filename`` in the dataset folder (extracted when an archive)."""

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    extract: bool = False
    strip_top: bool = True  # archives holding one top folder are unpacked without it
    size: int | None = None  # bytes, where known


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: what it is, where local copies live, and how to download and verify it.

    Attributes:
        name: registry name (``scifact``).
        kind: retrieval | sts | analogies | word-similarity | corpus | nli | classification | tagging |
            word-in-context.
        description: one line.
        local_dirs: candidate folders relative to ``$EMBEDSTACK_DATA_DIR``.
        marker: a file (relative to the folder) whose presence proves the folder holds the data.
        downloads: files to fetch into ``<cache>/datasets/<name>``.
        files: ``(relative path, sha256)`` checked after download (member checksums).
        aliases: other accepted names.
        license: licence of the data.
        homepage: where the dataset is described.
    """

    name: str
    kind: str
    description: str
    local_dirs: tuple[str, ...] = ()
    marker: str | None = None
    downloads: tuple[Download, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    aliases: tuple[str, ...] = ()
    license: str = ""
    homepage: str = ""

    def how_to_provide(self) -> str:
        """A sentence telling the user how to make this dataset available."""
        where = f"$EMBEDSTACK_DATA_DIR/{self.local_dirs[0]}" if self.local_dirs else f"<cache>/datasets/{self.name}"
        what = f" (it must contain {self.marker})" if self.marker else ""
        src = f" Source: {self.downloads[0].url}." if self.downloads else (f" See {self.homepage}." if self.homepage else "")
        return (f"Put a copy in {where}{what} and set EMBEDSTACK_DATA_DIR, or pass the folder's path "
                f"instead of the name.{src}")


DATASETS: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to the registry (``replace=True`` to overwrite an existing name)."""
    if spec.name in DATASETS and not replace:
        raise DatasetError(f"dataset {spec.name!r} is already registered; pass replace=True to overwrite it.")
    DATASETS[spec.name] = spec
    for a in (spec.name, *spec.aliases):
        _ALIASES[a.lower()] = spec.name
    return spec


def get_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name`` (or one of its aliases, case-insensitive)."""
    key = _ALIASES.get(str(name).lower())
    if key is None:
        from embedstack.models import did_you_mean

        raise DatasetError(
            f"unknown dataset {name!r}: it is neither an existing path nor a registered name."
            f"{did_you_mean(str(name), sorted(_ALIASES))} "
            f"Known names: {', '.join(sorted(DATASETS))}. Pass a folder/file path, or see `embedstack datasets list`."
        )
    return DATASETS[key]


def list_datasets() -> list[str]:
    """Sorted names of every registered dataset."""
    return sorted(DATASETS)


def offline() -> bool:
    """Whether ``EMBEDSTACK_OFFLINE`` forbids downloads."""
    return os.environ.get("EMBEDSTACK_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def data_dir() -> Path | None:
    """``$EMBEDSTACK_DATA_DIR`` as a path, or None when unset."""
    env = os.environ.get("EMBEDSTACK_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else None


def cache_dir() -> Path:
    """Root of embedstack's cache (datasets go to ``<cache>/datasets``)."""
    env = os.environ.get("EMBEDSTACK_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "embedstack"


def _present(folder: Path, spec: DatasetSpec) -> bool:
    if not folder.is_dir():
        return False
    return spec.marker is None or (folder / spec.marker).exists()


def _candidates(spec: DatasetSpec) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    root = data_dir()
    if root is not None:
        out += [("EMBEDSTACK_DATA_DIR", root / rel) for rel in spec.local_dirs]
    out.append(("cache", cache_dir() / "datasets" / spec.name))
    return out


def find_local(spec: DatasetSpec) -> Path | None:
    """The first local folder holding ``spec``'s data (data dir, then cache), or None."""
    for _where, p in _candidates(spec):
        if _present(p, spec):
            return p
    return None


def resolve_dataset(name_or_path: str | os.PathLike[str], *, download: bool = True,
                    progress: Any = None) -> Path:
    """Return the local path of a dataset given its registry name or a path.

    Args:
        name_or_path: an existing file/folder, or a registered name (``scifact``, ``stsb`` ...).
        download: allow downloading into the cache when no local copy exists.
        progress: optional ``callback(bytes_done, bytes_total_or_None)`` for downloads.

    Raises:
        DatasetError: not found; the message lists every place looked at and how to provide it.

    Example:
        >>> resolve_dataset(".").is_dir()
        True
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    try:
        spec = get_spec(str(name_or_path))
    except DatasetError:
        if os.sep in str(name_or_path) or str(name_or_path).startswith("."):
            raise DatasetError(f"dataset path {p} does not exist; check the path.") from None
        raise
    found = find_local(spec)
    if found is not None:
        return found
    looked = [f"{where}: {path}" + (f" (exists but lacks {spec.marker})" if path.is_dir() else "")
              for where, path in _candidates(spec)]
    if data_dir() is None:
        looked.insert(0, "EMBEDSTACK_DATA_DIR: not set")
    reason = ""
    if not spec.downloads:
        reason = "it cannot be downloaded automatically"
    elif offline():
        reason = "EMBEDSTACK_OFFLINE=1 forbids downloading it"
    elif not download:
        reason = "downloading was disabled"
    if not reason:
        target = cache_dir() / "datasets" / spec.name
        from embedstack.data._download import fetch

        log.info("downloading dataset %s into %s", spec.name, target)
        try:
            return fetch(spec, target, progress=progress)
        except DatasetError as exc:
            raise DatasetError(f"dataset {spec.name!r} was not found locally (looked in: {'; '.join(looked)}) "
                               f"and the download failed: {exc}") from None
    raise DatasetError(
        f"dataset {spec.name!r} was not found (looked in: {'; '.join(looked)}) and {reason}. {spec.how_to_provide()}"
    )


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dataset_info(name: str) -> dict[str, Any]:
    """Everything known about a registered dataset, including where (whether) it is found locally."""
    spec = get_spec(name)
    found = find_local(spec)
    return {
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "aliases": list(spec.aliases),
        "found": str(found) if found is not None else None,
        "local_bytes": _tree_bytes(found) if found is not None else None,
        "looked_in": [str(p) for _w, p in _candidates(spec)],
        "downloads": [
            {"url": d.url, "file": d.filename, "sha256": d.sha256, "md5": d.md5, "size": d.size, "extract": d.extract}
            for d in spec.downloads
        ],
        "verified_files": {rel: sha for rel, sha in spec.files},
        "download_bytes": sum(d.size or 0 for d in spec.downloads) or None,
        "license": spec.license,
        "homepage": spec.homepage,
        "how_to_provide": spec.how_to_provide(),
    }


def _spec_defaults() -> None:
    from embedstack.data._catalog import CATALOG

    for spec in CATALOG:
        register_dataset(spec, replace=True)


_spec_defaults()
