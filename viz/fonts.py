"""Finding a font that draws Chinese for matplotlib, and what to do when there is none.

matplotlib's bundled DejaVu Sans has no CJK glyphs: Chinese labels come out as empty boxes ("tofu"). `find_cjk_font`
looks, in order, at $BRIVL_CJK_FONT, the files the usual packages install (Debian/Ubuntu `fonts-noto-cjk`,
`fonts-wqy-zenhei`, `fonts-wqy-microhei`, `fonts-droid-fallback`, `fonts-arphic-uming`; macOS and Windows system
fonts), the fonts matplotlib's font manager knows, and `fc-list :lang=zh`; a candidate counts only when its character
map really holds the probe characters. With none, callers draw a stand-in label and warn with `INSTALL_HINT`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ENV_VAR = "BRIVL_CJK_FONT"
PROBE = "运动汽车中文"  # characters a usable font must hold
INSTALL_HINT = ("install a CJK font, e.g. `apt-get install fonts-noto-cjk` (or fonts-wqy-zenhei) on Debian/Ubuntu, "
                f"or point ${ENV_VAR} at a .ttf/.otf/.ttc that has Chinese glyphs")
KNOWN_PATHS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # fonts-noto-cjk
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch, Fedora
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",  # fonts-wqy-zenhei
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",  # fonts-wqy-microhei
    "/usr/share/fonts/wqy-zenhei/wqy-zenhei.ttc",
    "/usr/share/fonts/wenquanyi/wqy-zenhei/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",  # fonts-droid-fallback
    "/usr/share/fonts/truetype/arphic/uming.ttc",  # fonts-arphic-uming
    "/usr/share/fonts/truetype/arphic/ukai.ttc",
    "/System/Library/Fonts/PingFang.ttc",  # macOS
    "/System/Library/Fonts/STHeiti Light.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/msyh.ttc",  # Windows: Microsoft YaHei, SimHei, SimSun
    "C:/Windows/Fonts/simhei.ttf",
    "C:/Windows/Fonts/simsun.ttc",
)
NAME_HINTS = ("cjk", "wenquanyi", "wqy", "droid sans fallback", "source han", "sarasa", "ar pl", "simhei", "simsun",
              "yahei", "pingfang", "heiti", "hiragino sans gb", "arial unicode", "noto sans sc", "noto serif sc",
              "noto sans cjk", "zenhei", "microhei", "unifont")


@dataclass(frozen=True)
class Font:
    """A font file and its family name."""

    name: str
    path: str

    def properties(self, size: float | None = None):
        """matplotlib FontProperties drawing with this file."""
        from matplotlib.font_manager import FontProperties  # deferred: matplotlib loads only to draw

        return FontProperties(fname=self.path, size=size)


@lru_cache(maxsize=64)
def charmap(path: str) -> frozenset[int]:
    """The code points a font file maps to glyphs (first face of a collection)."""
    from matplotlib.ft2font import FT2Font  # deferred: matplotlib loads only to draw

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def covers(font: Font | str, text: str) -> bool:
    """Whether the font has a glyph for every non-space character of text."""
    cmap = charmap(font.path if isinstance(font, Font) else str(font))
    return all(ord(ch) in cmap for ch in text if not ch.isspace())


def _name(path: str) -> str:
    from matplotlib.ft2font import FT2Font  # deferred: matplotlib loads only to draw

    try:
        return FT2Font(path).family_name
    except (OSError, RuntimeError, ValueError):
        return Path(path).stem


def _candidates() -> list[str]:
    paths: list[str] = []
    if os.environ.get(ENV_VAR):
        paths.append(os.environ[ENV_VAR])
    paths += [p for p in KNOWN_PATHS if Path(p).is_file()]
    from matplotlib import font_manager  # deferred: matplotlib loads only to draw

    for entry in font_manager.fontManager.ttflist:
        if any(h in entry.name.lower() or h in Path(entry.fname).name.lower() for h in NAME_HINTS):
            paths.append(entry.fname)
    for folder in ("/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts"),
                   str(Path.home() / ".local/share/fonts")):
        if Path(folder).is_dir():
            paths += [p for p in font_manager.findSystemFonts(fontpaths=[folder])
                      if any(h.replace(" ", "") in Path(p).name.lower() for h in NAME_HINTS)]
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10,
                                 check=False).stdout
            paths += [line.split(":")[0].strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    seen, unique = set(), []
    for p in paths:
        if p and p not in seen and Path(p).suffix.lower() in (".ttf", ".otf", ".ttc"):
            seen.add(p)
            unique.append(p)
    return unique


@lru_cache(maxsize=1)
def find_cjk_font() -> Font | None:
    """The first installed font that draws Chinese (see the module doc for where it looks), or None."""
    for path in _candidates():
        if Path(path).is_file() and covers(path, PROBE):
            return Font(_name(path), path)
    return None


def default_font() -> Font:
    """matplotlib's default sans-serif font file (DejaVu Sans)."""
    from matplotlib import font_manager  # deferred: matplotlib loads only to draw

    path = font_manager.findfont(font_manager.FontProperties(family=["sans-serif"]))
    return Font(_name(path), path)
