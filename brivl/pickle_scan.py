"""Checking a torch pickle before it is unpickled: which globals it names and how much it asks to allocate.

`torch.load(weights_only=True)` runs no code, but it still admits `bytearray(1_500_000_000)` and lets a legacy
file declare storages of any size: a 1 KB file could allocate gigabytes. The scan below reads the opcode stream
(pickletools.genops), refuses every global the formats we read do not need, then replays the stream with
stand-ins that allocate nothing, to compare each storage's declared size with the bytes the file holds.
"""
from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import io
import pickle
import pickletools
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import CheckpointError

_REBUILDS = {"torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
             "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
             "torch._tensor._rebuild_from_type_v2"}
_ITEMSIZE = {"Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
             "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16}
# Typed storages by element size; torch.cuda.* names appear in checkpoints written on a GPU by old torch versions.
_STORAGES = ({f"torch.{k}Storage": v for k, v in _ITEMSIZE.items()}
             | {f"torch.cuda.{k}Storage": v for k, v in _ITEMSIZE.items()}
             | {"torch.UntypedStorage": 1, "torch.storage.UntypedStorage": 1})
_DTYPES = {f"torch.{n}" for n in dir(torch) if isinstance(getattr(torch, n, None), torch.dtype)}
# Objects whose construction is bounded by what the stream itself holds (a set of listed items, bytes of a string).
_PLAIN = {"collections.OrderedDict", "torch.Size", "torch.device", "torch.Tensor", "torch.nn.parameter.Parameter",
          "builtins.set", "builtins.frozenset", "builtins.complex", "collections.Counter", "_codecs.encode"}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of torch's legacy (pre-zip) format
_LEGACY_PICKLES = 5  # magic, protocol, sys_info, the object, the storage keys; raw storage bytes follow


def admitted(name: str, inert_modules: Iterable[str] = ()) -> bool:
    """Whether a global `module.name` may appear in a checkpoint (inert_modules: loaded as inert stand-ins)."""
    if name in _REBUILDS or name in _STORAGES or name in _DTYPES or name in _PLAIN:
        return True
    return any(name.startswith(m + ".") for m in inert_modules)


def globals_in(stream: BinaryIO) -> list[str]:
    """The globals one pickle names, read from its opcodes (the stream is left after its STOP)."""
    found: list[str] = []
    recent: list[Any] = []  # what each stack-changing opcode pushed: a string, or None for anything else
    memo: dict[int, Any] = {}
    for op, arg, _pos in pickletools.genops(stream):
        if op.name in _MEMO_PUTS or op.name == "MEMOIZE":
            memo[arg if op.name in _MEMO_PUTS else len(memo)] = recent[-1] if recent else None
            continue  # memo writes leave the stack as it was
        if op.name in ("GLOBAL", "INST"):
            found.append(_python3_name(*arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":
            module, name = (recent[-2], recent[-1]) if len(recent) >= 2 else (None, None)
            if not (isinstance(module, str) and isinstance(name, str)):
                raise pickle.UnpicklingError("a global whose name is computed, not written in the file")
            found.append(_python3_name(module, name))
        elif op.name in ("EXT1", "EXT2", "EXT4"):
            raise pickle.UnpicklingError(f"a global from the copyreg extension registry ({op.name} {arg})")
        value = arg if op.name in _STRING_OPS else memo.get(arg) if op.name in _MEMO_GETS else None
        recent = recent[-1:] + [value]  # only the last two pushes matter (STACK_GLOBAL's operands)
    return found


def _python3_name(module: str, name: str) -> str:
    """module.name as the unpickler resolves it (protocol 2 writes Python 2 names such as __builtin__)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


class _Stub:
    """Stands in for a tensor, a parameter or an inert object during the dry run: holds nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _Storage:
    """Stands in for a storage type: knows only its element size."""

    def __init__(self, itemsize: int) -> None:
        self.itemsize = itemsize


class _DryRun(pickle.Unpickler):
    """Replays a scanned pickle with stand-ins, recording each storage's declared size in bytes."""

    def __init__(self, stream: BinaryIO, inert_modules: Iterable[str]) -> None:
        super().__init__(stream)
        self.inert = tuple(inert_modules)
        self.storages: dict[str, int] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = _python3_name(module, name)
        module, name = full.rsplit(".", 1)
        if not admitted(full, self.inert):  # the opcode scan already refused these; kept as a second lock
            raise pickle.UnpicklingError(f"global {full!r}")
        if full in _STORAGES:
            return _Storage(_STORAGES[full])
        if full == "collections.OrderedDict":
            return collections.OrderedDict
        if full in ("builtins.set", "builtins.frozenset", "builtins.complex", "collections.Counter"):
            return {"set": set, "frozenset": frozenset, "complex": complex, "Counter": collections.Counter}[name]
        if full == "_codecs.encode":
            return _codecs.encode
        return _Stub

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _Storage)
                and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError(f"a persistent id that is not a storage: {str(pid)[:60]}")
        self.storages[str(pid[2])] = pid[4] * pid[1].itemsize
        return _Stub()


def scan_torch_file(path: str | Path, inert_modules: Iterable[str] = (),
                    error: type[CheckpointError] = CheckpointError) -> None:
    """Raise `error` (one line, naming the file) unless the torch checkpoint at path is safe to unpickle."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            _scan_zip(path, tuple(inert_modules))
        else:
            _scan_legacy(path, tuple(inert_modules))
    except pickle.UnpicklingError as e:
        raise error(f"{path}: refused to load: {e}") from None
    except (ValueError, EOFError, TypeError, AttributeError, IndexError, KeyError, zipfile.BadZipFile,
            RecursionError, MemoryError, OSError) as e:
        raise error(f"{path}: not a readable torch checkpoint (truncated or damaged?): "
                    f"{type(e).__name__}: {str(e)[:120]}") from None


def _check_globals(stream: BinaryIO, inert: tuple[str, ...]) -> None:
    for name in globals_in(stream):
        if not admitted(name, inert):
            raise pickle.UnpicklingError(
                f"the pickle names the global {name!r}, which is not a tensor rebuild, a storage or a plain "
                f"container (loading it could run code or allocate without bound)")


def _scan_zip(path: Path, inert: tuple[str, ...]) -> None:
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        # torch writes its entries uncompressed; a compressed one could inflate far beyond the file's size.
        if sum(i.file_size for i in infos) > size:
            raise pickle.UnpicklingError("its entries unpack to more bytes than the file holds (compressed)")
        pkls = [i for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
        if len(pkls) != 1:
            raise ValueError("no single data.pkl in the archive")
        data = archive.read(pkls[0])
        records = {i.filename[len(pkls[0].filename) - len("data.pkl"):]: i.file_size for i in infos}
    _check_globals(io.BytesIO(data), inert)
    run = _DryRun(io.BytesIO(data), inert)
    run.load()
    for key, nbytes in run.storages.items():
        if nbytes > records.get(f"data/{key}", 0):
            raise pickle.UnpicklingError(f"storage {key!r} declares {nbytes} bytes but the file holds "
                                         f"{records.get(f'data/{key}', 0)}")


def _scan_legacy(path: Path, inert: tuple[str, ...]) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        _check_globals(f, inert)
        f.seek(0)
        first = _DryRun(f, inert).load()
        count = _LEGACY_PICKLES if first == _TORCH_MAGIC else 1
        f.seek(0)
        for _ in range(count):
            _check_globals(f, inert)
        end = f.tell()
        f.seek(0)
        declared = 0
        for _ in range(count):
            run = _DryRun(f, inert)
            run.load()
            declared += sum(run.storages.values())
    if declared > size - end:
        raise pickle.UnpicklingError(f"its storages declare {declared} bytes but the file holds {size - end}")
