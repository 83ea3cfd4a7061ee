"""Files on disk: atomic writes, component folders (manifest + safetensors), interchange formats."""

from embedstack.io.atomic import atomic_dir, atomic_write_bytes, atomic_write_text, fsync_dir
from embedstack.io.manifest import (
    FORMAT_VERSION,
    load_arrays,
    read_manifest,
    save_arrays,
    sha256_file,
    write_manifest,
)

__all__ = [
    "FORMAT_VERSION",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "load_arrays",
    "read_manifest",
    "save_arrays",
    "sha256_file",
    "write_manifest",
]
