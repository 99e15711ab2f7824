"""The studio's models: loaded once by name with `brivl.load`, kept for later requests, and one readers-writer lock
per model. Most work only runs the model (shared: any number at once); work that hooks a layer (neuron renders,
channel activations) takes it alone (exclusive), because a forward hook sees every forward pass of the model,
other requests' included."""
import contextlib
import threading
from collections import OrderedDict

import brivl
from brivl.checkpoint import CheckpointError
from brivl.hub import ModelNotFoundError
from brivl.tokenizer import TokenizerMissingError

from .errors import StudioInputError
from .paths import Roots

# Presets name no file a user chooses (brivl-lite is built from installed packages, tiny is seeded).
_PRESET_NAMES = ("brivl-lite", "tiny", "brivl-1.0", "brivl-paper")

class SharedLock:
    """Many shared holders or one exclusive holder; a waiting exclusive holder keeps new shared ones out."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self):
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class ModelPool:
    """Models by name (a preset such as brivl-lite or tiny, a model folder, a weights file), loaded on first use."""

    def __init__(self, names: list[str], device: str = "cpu", keep: int = 4, roots: Roots | None = None):
        self.names = list(dict.fromkeys(names))  # the choices offered in the page, default first
        self.roots = roots or Roots()  # where a typed model path may point
        self.device = device
        self.keep = max(keep, len(self.names))
        self._models: OrderedDict[str, object] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._use: dict[str, SharedLock] = {}
        self._guard = threading.Lock()

    @property
    def default(self) -> str:
        return self.names[0]

    def _lock(self, table: dict, name: str) -> threading.Lock:
        with self._guard:
            return table.setdefault(name, threading.Lock())

    def get(self, name: str | None):
        """The model called name (default: the first), loading it once; a readable error if it cannot be loaded."""
        name = (name or self.default).strip()
        if not name:
            raise StudioInputError("no model given: pick brivl-lite or type the path of a model folder")
        if name not in self.names and name not in _PRESET_NAMES:
            if name.startswith("openclip:"):  # it may name a weights file anywhere: the operator lists these
                raise StudioInputError(f"{name}: OpenCLIP models are offered only when the studio is started with "
                                       f"--model {name.split(':', 2)[0]}:...")
            self.roots.check(name.removeprefix("hf:"), "model")  # a typed path: only inside the operator's folders
        with self._guard:
            if name in self._models:
                self._models.move_to_end(name)
                return self._models[name]
        with self._lock(self._loading, name):  # one load per name, even with many requests waiting for it
            with self._guard:
                if name in self._models:
                    return self._models[name]
            model = _load(name, self.device)
            with self._guard:
                self._models[name] = model
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
            return model

    def _usage(self, name: str | None) -> SharedLock:
        with self._guard:
            return self._use.setdefault((name or self.default).strip(), SharedLock())

    def shared(self, name: str | None):
        """Hold while running the model without hooks (many requests at once)."""
        return self._usage(name).shared()

    def exclusive(self, name: str | None):
        """Hold while a forward hook is on the model's layers (no other request runs the model meanwhile)."""
        return self._usage(name).exclusive()


def _load(name: str, device: str):
    try:
        return brivl.load(name, device=device)
    except (ModelNotFoundError, FileNotFoundError) as e:
        raise StudioInputError(f"model {name!r} not found: {e}. Give brivl-lite, tiny, or the path of a folder "
                               f"written by save_pretrained / `brivl convert` (hf:FOLDER for a CLIP-family folder)") from None
    except (CheckpointError, TokenizerMissingError, ValueError) as e:
        raise StudioInputError(f"model {name!r} cannot be loaded: {e}") from None
