"""Read pickles without running their code: an allow-list :class:`pickle.Unpickler`.

``pickle.load`` calls whatever callable a file names (``os.system`` through
``__reduce__`` is the classic example), so a pickle from elsewhere is a program, not
data. :func:`safe_load` admits only what data files need:

- plain containers and scalars: ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``,
  ``collections.OrderedDict``, ``int``, ``float``, ``complex``, ``bool``, ``str``,
  ``bytes``, ``bytearray``, ``None`` (most need no callable at all);
- numpy scalars and dtypes (``numpy.float64(0.5)`` in a loss log);
- torch tensors as ``pickle.dump`` writes them: ``torch._utils._rebuild_tensor_v2``
  around ``torch.storage._load_from_bytes``. The latter would run
  ``torch.load(..., weights_only=False)`` on the embedded bytes, so it is replaced by a
  function that reads them with ``weights_only=True`` (torch's own restricted loader),
  mapped to the CPU.

Anything else raises :class:`UnsafePickleError` naming the refused ``module.name``
before it is imported or called.

>>> import pickle
>>> safe_loads(pickle.dumps({"params": {"lr": 1e-3, "binarization_type": "sign"}}))
{'params': {'lr': 0.001, 'binarization_type': 'sign'}}
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import torch


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle names a callable outside the allow-list (it was not imported or called)."""


def _storage_from_bytes(data: bytes) -> Any:
    # torch.storage._load_from_bytes, but restricted: the bytes are a torch.save'd
    # storage and must not be allowed to carry code of their own.
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError(f"tensor storage must be bytes, got {type(data).__name__}")
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _numpy_global(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


_BUILTINS = {
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "set": set,
    "frozenset": frozenset,
    "int": int,
    "float": float,
    "complex": complex,
    "bool": bool,
    "str": str,
    "bytes": bytes,
    "bytearray": bytearray,
}

ALLOWED_GLOBALS: tuple[str, ...] = (
    *(f"builtins.{name}" for name in _BUILTINS),
    "collections.OrderedDict",
    "_codecs.encode",
    "torch._utils._rebuild_tensor_v2",
    "torch.storage._load_from_bytes",
    "numpy.dtype",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray.scalar",
)
"""Every ``module.name`` a pickle may refer to."""


def _resolve(module: str, name: str) -> Any:
    if module == "builtins":
        return _BUILTINS[name]
    if module == "collections":
        return collections.OrderedDict
    if module == "_codecs":
        import codecs

        return codecs.encode  # protocol-2 pickles spell bytes as encode(str, "latin1")
    if module == "torch._utils":
        return torch._utils._rebuild_tensor_v2
    if module == "torch.storage":
        return _storage_from_bytes
    return _numpy_global(module, name)


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 0-2 pickles name Python 2's module
            module = "builtins"
        if f"{module}.{name}" not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: the pickle calls code outside the "
                "allow-list (plain containers, numbers, strings, numpy scalars, torch "
                "tensors). pickle.load on this file would run it; do not open it with pickle."
            )
        return _resolve(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r}: not a plain data pickle")


def safe_loads(data: bytes) -> Any:
    """:func:`safe_load` of bytes."""
    return _load_named(io.BytesIO(data), "<bytes>")


def safe_load(file: str | Path | BinaryIO) -> Any:
    """Unpickle ``file`` (a path or a binary file object) with :class:`SafeUnpickler`.

    Raises FileNotFoundError for a missing path, :class:`UnsafePickleError` (a ValueError)
    for a refused global and ValueError naming the file for a truncated or corrupt pickle.
    """
    if isinstance(file, str | Path):
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"pickle file {str(path)!r} does not exist")
        with open(path, "rb") as f:
            return _load_named(f, str(path))
    return _load_named(file, getattr(file, "name", "<stream>"))


def _load_named(f: BinaryIO, name: str) -> Any:
    try:
        return SafeUnpickler(f).load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{name}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError) as err:
        raise ValueError(f"{name}: not a readable pickle ({type(err).__name__}: {err})") from err
