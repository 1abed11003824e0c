"""Logs that survive a killed run: append-only chunks in a sidecar folder beside the final file.

While a run trains with a log path `PATH`, what was logged reaches `PATH.partial/` every few
seconds as numbered chunk files, each written to a temporary name and renamed, so a kill at any
instant leaves whole chunks (and at worst a temporary file, ignored). At the end, the whole log
is written atomically to `PATH` and the sidecar removed. `recover(PATH)` rebuilds the log from
the chunks when there is no final file; `kerasbp.load_gradient_log` calls it.

A chunk is an `.npz` of the log's arrays (`GradientLog._arrays`): the per-row arrays hold the
rows since the previous chunk; the others (metadata, dead-unit tracking) are the latest.
"""

import glob
import os
import re
import shutil
import tempfile
import time
import warnings
import zipfile

import numpy as np

#: Arrays of a saved log that are not per logged row.
NOT_PER_ROW = re.compile(r"^(meta|optimizer_variable_names|alive_\d+)$")

#: Suffix of the sidecar folder beside a log path.
SUFFIX = ".partial"


def sidecar_path(path):
    """The sidecar folder of the log file `path`: `path + ".partial"`."""
    return os.fspath(path) + SUFFIX


class SidecarWriter:
    """Appends a log's new rows to `sidecar_path(path)` at most every `every_seconds`.

    Args:
        path: str or path-like, the final log file (`.npz`); its folder must exist.
        every_seconds: float, the least time between two chunks (a chunk is also written by
            `flush(force=True)`). Defaults to 2.0.
        gradients: bool, put the whole gradients of a `record="full"` log in the chunks (False
            where they are streamed to raw files anyway). Defaults to True.
        meta: dict of extra metadata for the chunks (`GradientLog._arrays`), or None.

    Attributes:
        rows_written: int, the rows already in chunks.
    """

    def __init__(self, path, every_seconds=2.0, gradients=True, meta=None):
        self.path = os.fspath(path)
        self.gradients = gradients
        self.meta = dict(meta or {})
        self.folder = sidecar_path(path)
        self.every_seconds = float(every_seconds)
        self.rows_written = 0
        self._chunks = 0
        self._last = time.monotonic()
        if os.path.isdir(self.folder):
            shutil.rmtree(self.folder)  # a sidecar of an earlier run of the same path
        os.makedirs(self.folder)

    def due(self):
        """bool: `every_seconds` have passed since the last chunk."""
        return time.monotonic() - self._last >= self.every_seconds

    def flush(self, log, force=False):
        """Write the rows of `log` (a `GradientLog`) not yet in a chunk, if it is time (or `force`).

        Returns:
            int, rows written by this call.

        Raises:
            OSError: if the chunk cannot be written (e.g. a full disk); the chunks before it stay.
        """
        n = len(log)
        if n <= self.rows_written or not (force or self.due()):
            return 0
        arrays = log._arrays(gradients=self.gradients and log.record == "full", **self.meta)
        chunk = {key: (value if NOT_PER_ROW.match(key) else value[self.rows_written : n]) for key, value in arrays.items()}
        name = os.path.join(self.folder, f"chunk-{self._chunks:06d}.npz")
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        written = n - self.rows_written
        self.rows_written, self._chunks, self._last = n, self._chunks + 1, time.monotonic()
        return written

    def remove(self):
        """Delete the sidecar (once the final file is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def chunk_names(path):
    """The chunk files in the sidecar of the log file `path`, in order (an empty list if none)."""
    return sorted(glob.glob(os.path.join(sidecar_path(path), "chunk-*.npz")))


def _concatenate(chunks):
    """Chunks joined along rows; 2-D float chunks of different widths (the per-example norms of
    batches of different sizes) padded with NaN to the widest."""
    if all(c.ndim == 2 and c.dtype.kind == "f" for c in chunks) and len({c.shape[1] for c in chunks}) > 1:
        width = max(c.shape[1] for c in chunks)
        chunks = [np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=np.nan) for c in chunks]
    return np.concatenate(chunks)


def recover(path):
    """The arrays of the log whose run was killed before `path` was written, from its sidecar.

    Chunks are read in order; one that cannot be read (torn by a crash) ends the recovery, and
    the steps before it are kept.

    Args:
        path: str or path-like, the final log file that is missing.

    Returns:
        dict of arrays as `GradientLog._arrays` gives them, or None when there is no sidecar
        or it holds no whole chunk. A `RuntimeWarning` says how many steps were recovered.
    """
    parts = []
    for name in chunk_names(path):
        try:
            with np.load(name, allow_pickle=False) as data:
                parts.append({key: data[key] for key in data.files})
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a torn chunk: what came before it stands
            warnings.warn(f"dropped unreadable chunk {name!r} of the sidecar and any after it: {e}", RuntimeWarning, stacklevel=2)
            break
    if not parts:
        return None
    arrays = {}
    for key in parts[-1]:
        if NOT_PER_ROW.match(key):
            arrays[key] = parts[-1][key]
        else:
            arrays[key] = _concatenate([p[key] for p in parts if key in p])
    warnings.warn(
        f"{os.fspath(path)!r} was not written (the run was killed, or its final save failed): recovered {len(arrays['steps'])} logged steps "
        f"from its sidecar {sidecar_path(path)!r}",
        RuntimeWarning,
        stacklevel=2,
    )
    return arrays
