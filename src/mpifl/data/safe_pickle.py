"""A restricted unpickler for the two pickle formats mpifl reads: CIFAR's python batches and MNIST's ``mnist.pkl.gz``.

``pickle.load`` calls whatever callable a file names (``os.system``, ``subprocess.Popen``, ...), so a tampered or
foreign file would run code with the user's rights. Both formats hold only dicts, lists, tuples, bytes, str, numbers
and NumPy arrays, so :class:`RestrictedUnpickler` resolves just the globals that rebuild arrays and refuses every
other one before anything is called.
"""

from __future__ import annotations

import pickle
from typing import IO, Any, Callable

# The globals NumPy's pickles name (numpy<2 writes ``numpy.core``, numpy>=2 ``numpy._core``; protocol 5 uses
# ``_frombuffer``), plus ``_codecs.encode``, which protocol-2 pickles use for bytes. None of them can reach
# anything outside this list: every type or callable they receive comes from the same pickle, through find_class.
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
})


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside :data:`ALLOWED_GLOBALS`; nothing it names was called."""


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin-1 so no codec module is looked up."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} (only latin1 rebuilds bytes)")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds NumPy arrays and plain containers, and refuses every other global by name."""

    def __init__(self, file: IO[bytes], *, source: str, encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"{self.source}: refused to unpickle global {module}.{name} "
                                "(only NumPy arrays and plain containers are allowed)")


def load(fh: IO[bytes], *, source: str, encoding: str = "ASCII") -> Any:
    """Unpickle ``fh`` with :class:`RestrictedUnpickler`; ``source`` names the file in any refusal."""
    return RestrictedUnpickler(fh, source=source, encoding=encoding).load()
