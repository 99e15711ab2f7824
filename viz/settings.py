"""The render settings every front end shares, checked once against one table of limits.

The command line (viz.cli) and the studio (app) build a `RenderSettings` from what their user typed and call
`checked` with their limits: `LIMITS` for the command line, `STUDIO_LIMITS` (the same table, narrowed so that
a page user's render ends in minutes on a CPU) for the studio. The messages name the setting and its range.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from brivl.errors import UserInputError

# The figures `brivl figures all` makes, in order (here, not in figures_all, so that the parser needs no torch).
FIGURES = ("fig2", "fig3", "fig4c", "fig5c", "s2a")
# name: (lowest, highest), both allowed; lr's lowest (0) is excluded.
LIMITS: dict[str, tuple[float, float]] = {"steps": (1, 100_000), "size": (16, 4096), "seed": (0, 2**31 - 1),
                                          "lr": (0.0, 10.0)}
STUDIO_LIMITS: dict[str, tuple[float, float]] = {**LIMITS, "steps": (1, 1024), "size": (32, 512)}
_EXCLUSIVE_LOW = {"lr"}


@dataclass(frozen=True)
class RenderSettings:
    """One render's settings (viz.render / viz.imagine / viz.neuron keywords); size None = the model's input."""

    steps: int = 128
    size: int | None = None
    seed: int = 0
    param: str = "fft"
    decorrelate: bool = True
    lr: float = 0.05

    @classmethod
    def checked(cls, limits: dict[str, tuple[float, float]] = LIMITS, *, prefix: str = "",
                error: type[UserInputError] = UserInputError, **values: Any) -> "RenderSettings":
        """Settings from values (numbers may come as text), each within limits; else `error` naming it.

        prefix is put before each setting's name in messages (the command line's "--").
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out = {}
        for name, value in values.items():
            if name not in fields:
                raise error(f"unknown render setting {name!r}; known: {', '.join(fields)}")
            out[name] = value if name not in limits or value is None else _number(name, value, limits, prefix, error)
        if out.get("param", "fft") not in ("fft", "pixel"):
            raise error(f"{prefix}param must be fft or pixel, got {out['param']!r}")
        return cls(**out)

    def kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of viz.render, viz.imagine and viz.neuron."""
        return dataclasses.asdict(self)


def _number(name: str, value: Any, limits: dict[str, tuple[float, float]], prefix: str,
            error: type[UserInputError]) -> int | float:
    lo, hi = limits[name]
    kind = float if name == "lr" else int
    try:
        number = kind(float(value)) if kind is int and not isinstance(value, bool) else kind(value)
    except (TypeError, ValueError):
        raise error(f"{prefix}{name} must be a number, got {value!r}") from None
    if kind is int and float(value) != number:
        raise error(f"{prefix}{name} must be a whole number, got {value!r}")
    unit = " pixels" if name == "size" else ""
    if name in _EXCLUSIVE_LOW and not (math.isfinite(number) and lo < number <= hi):
        raise error(f"{prefix}{name} must be in ({lo:g}, {hi:g}], got {value}")
    if not number >= lo:
        raise error(f"{prefix}{name} must be at least {lo:g}{unit} (at most {hi:g}), got {value}")
    if not number <= hi:
        raise error(f"{prefix}{name} must be between {lo:g} and {hi:g}{unit}, got {value}")
    return number
