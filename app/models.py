"""The studio's models: loaded once by name with `brivl.load`, kept for later requests, one lock per model for
work that hooks the model's layers (a hook sees every forward pass, so two such renders must not overlap)."""
import threading
from collections import OrderedDict

from .errors import StudioInputError


class ModelPool:
    """Models by name (a preset such as brivl-lite or tiny, a model folder, a weights file), loaded on first use."""

    def __init__(self, names: list[str], device: str = "cpu", keep: int = 4):
        self.names = list(dict.fromkeys(names))  # the choices offered in the page, default first
        self.device = device
        self.keep = max(keep, len(self.names))
        self._models: OrderedDict[str, object] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._hooks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def default(self) -> str:
        return self.names[0]

    def _lock(self, table: dict[str, threading.Lock], name: str) -> threading.Lock:
        with self._guard:
            return table.setdefault(name, threading.Lock())

    def get(self, name: str | None):
        """The model called name (default: the first), loading it once; a readable error if it cannot be loaded."""
        name = (name or self.default).strip()
        if not name:
            raise StudioInputError("no model given: pick brivl-lite or type the path of a model folder")
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

    def hook_lock(self, name: str | None) -> threading.Lock:
        """The lock that serialises layer-hooking work (neuron renders, activations) on one model."""
        return self._lock(self._hooks, (name or self.default).strip())


def _load(name: str, device: str):
    import brivl
    from brivl.checkpoint import CheckpointError
    from brivl.hub import ModelNotFoundError
    from brivl.tokenizer import TokenizerMissingError

    try:
        return brivl.load(name, device=device)
    except (ModelNotFoundError, FileNotFoundError) as e:
        raise StudioInputError(f"model {name!r} not found: {e}. Give brivl-lite, tiny, or the path of a folder "
                               f"written by save_pretrained / `brivl convert`") from None
    except (CheckpointError, TokenizerMissingError, ValueError) as e:
        raise StudioInputError(f"model {name!r} cannot be loaded: {e}") from None
