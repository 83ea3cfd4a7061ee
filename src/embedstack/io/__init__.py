"""Files on disk: atomic writes and the output guard, component folders (manifest + checksums +
safetensors), interchange formats."""

from embedstack.io.atomic import (
    SENTENCE_MODEL,
    AtomicFile,
    atomic_dir,
    atomic_file,
    atomic_write_bytes,
    atomic_write_text,
    check_output,
    fsync_dir,
)
from embedstack.io.manifest import (
    FORMAT_VERSION,
    file_checksums,
    load_arrays,
    read_manifest,
    save_arrays,
    sha256_file,
    verify_artifact,
    verify_enabled,
    verify_files,
    write_manifest,
)

__all__ = [
    "FORMAT_VERSION",
    "SENTENCE_MODEL",
    "AtomicFile",
    "atomic_dir",
    "atomic_file",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output",
    "file_checksums",
    "fsync_dir",
    "load_arrays",
    "read_manifest",
    "save_arrays",
    "sha256_file",
    "verify_artifact",
    "verify_enabled",
    "verify_files",
    "write_manifest",
]
