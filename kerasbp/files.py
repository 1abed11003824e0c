"""Saving files safely: `atomic_write` writes to a temporary file and renames it into place."""

import os
import tempfile

from kerasbp.checks import check_output_path


def atomic_write(path, write, name="path"):
    """Call `write(file)` on a temporary binary file beside `path`, then rename it to `path`.

    An interrupted or failed save leaves the previous file (or none) at `path`, never a
    half-written one, and removes the temporary file. The saved file gets the permissions the
    process's umask gives a new file (mkstemp's would be private).

    Args:
        path: str or path-like, the file to write; its folder must exist.
        write: callable taking one binary file object opened for writing.
        name: str, the argument's name for error messages. Defaults to `"path"`.

    Returns:
        str, the path written.

    Raises:
        TypeError, ValueError: if `path` is not a file path in an existing folder.
        OSError: if writing fails (e.g. a full disk); nothing is left at `path`.
    """
    path = check_output_path(name, path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w+b") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
