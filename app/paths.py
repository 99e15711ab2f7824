"""The folders a studio may read: a page user names files only inside the roots its operator allowed.

Paths are resolved (symlinks followed) before they are compared with the roots, and refused before anything
says whether they exist, so the page cannot probe the rest of the machine. Hidden entries (.ssh, .git, .env)
under a root are refused too: a default root such as the working directory may hold them.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from brivl.cache import cache_dir

from .errors import StudioInputError

# Photos for the upload tabs' examples: the repository's examples/ folder, when the studio runs from a checkout.
EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples"
MAX_PHRASE_FILE_BYTES = 64 * 2**20  # jieba's dictionary is 5 MB
PHRASE_SUFFIXES = (".txt",)


def upload_folder() -> Path:
    """Where Gradio keeps what page users upload (GRADIO_TEMP_DIR, else the system's temporary folder/gradio)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def default_roots() -> list[Path]:
    """The working directory, the repository's examples and brivl's cache."""
    return [Path.cwd(), EXAMPLE_DIR, cache_dir()]


class Roots:
    """The allowed folders, resolved once."""

    def __init__(self, folders: Sequence[str | Path] | None = None) -> None:
        chosen = default_roots() if not folders else [Path(f).expanduser() for f in folders]
        self.folders = list(dict.fromkeys(f.resolve() for f in chosen))

    def contains(self, path: Path) -> bool:
        """Whether a resolved path lies inside a root and below no hidden entry of it (never among the uploads)."""
        uploads = upload_folder()
        if path == uploads or path.is_relative_to(uploads):
            return False  # a page user's upload must not become a model or VQGAN even if a root holds the folder
        for root in self.folders:
            if path == root or path.is_relative_to(root):
                return not any(part.startswith(".") for part in path.relative_to(root).parts)
        return False

    def check(self, text: str | None, what: str) -> Path:
        """The resolved path a user typed; StudioInputError if it lies outside the roots (checked before existence)."""
        text = (text or "").strip()
        if not text:
            raise StudioInputError(f"no {what} given")
        try:
            path = Path(text).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            raise StudioInputError(f"{text}: not a usable path") from None
        if not self.contains(path):
            raise StudioInputError(f"{text}: outside the folders this studio may read; its operator chooses them "
                                   f"with `brivl studio --allow-dir FOLDER`")
        return path

    def keep(self, paths: Iterable[Path]) -> list[Path]:
        """The paths whose targets lie inside the roots (a symlink in an allowed folder may point anywhere)."""
        return [p for p in paths if self.contains(p.resolve())]

    def folder(self, text: str | None) -> Path:
        """An existing folder inside the roots."""
        path = self.check(text, "folder (type the path of a folder of images on this machine)")
        if not path.is_dir():
            raise StudioInputError(f"{text.strip()}: no such folder on this machine")
        return path

    def phrase_file(self, text: str) -> Path:
        """A phrase list file inside the roots: a .txt file of moderate size."""
        path = self.check(text, "phrase file")
        if not path.is_file():
            raise StudioInputError(f"{text.strip()}: no such phrase file (one phrase per line); or type jieba")
        if path.suffix.lower() not in PHRASE_SUFFIXES:
            raise StudioInputError(f"{text.strip()}: a phrase list is a .txt file, one phrase per line")
        if path.stat().st_size > MAX_PHRASE_FILE_BYTES:
            raise StudioInputError(f"{text.strip()}: larger than {MAX_PHRASE_FILE_BYTES // 2**20} MB")
        return path
