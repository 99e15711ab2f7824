"""Evaluation data on disk: class folders (zero-shot images), text<TAB>label files, retrieval manifests."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..boxes import release_caption, release_row, resolve_image
from ..data import IMAGE_SUFFIXES, DataError
from ..inputs import InputError


@dataclass
class ClassFolders:
    """Images in class folders: `folders[c]` is the folder name, `names[c]` the class name the model reads."""

    root: Path
    folders: list[str]
    names: list[str]
    images: list[Path]
    labels: list[int]

    @property
    def n_classes(self) -> int:
        """Number of classes (folders holding at least one image)."""
        return len(self.folders)


@dataclass
class LabelledTexts:
    """Texts with class labels: `classes[c]` is the label as written, `names[c]` the class name the model reads."""

    source: Path
    texts: list[str]
    labels: list[int]
    classes: list[str]
    names: list[str]


@dataclass
class RetrievalSet:
    """Images with one or more captions each: caption j describes image `caption_image[j]`."""

    source: Path
    images: list[Path]
    captions: list[str]
    caption_image: list[int] = field(default_factory=list)
    # Per image, its detector boxes in the file's pixels (None: the grid); None when the manifest has no boxes.
    boxes: list[list[list[float]] | None] | None = None


def read_name_map(path: str | Path | None) -> dict[str, str]:
    """A class-name mapping: JSON {"folder or label": "class name"} or lines 'folder<TAB>class name'."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such class-name mapping file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
            raise DataError(f"{path}: expected a JSON object mapping folder names to non-empty class names")
        return {str(k): v.strip() for k, v in data.items()}
    mapping = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{n}: expected 'folder<TAB>class name'")
        key, name = (s.strip() for s in line.split("\t", 1))
        if not key or not name:
            raise DataError(f"{path}:{n}: empty folder or class name")
        mapping[key] = name
    if not mapping:
        raise DataError(f"{path}: the class-name mapping is empty")
    return mapping


def _apply_map(keys: list[str], mapping: dict[str, str], source: Path, what: str) -> list[str]:
    unknown = sorted(set(mapping) - set(keys))
    if unknown:
        warnings.warn(f"{source}: the class-name mapping names {len(unknown)} {what}(s) not in the data "
                      f"(e.g. {unknown[0]!r})", stacklevel=3)
    names = [mapping.get(k, k) for k in keys]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{source}: two classes would share the class name {dup[0]!r}; give them distinct names")
    return names


def read_class_folders(root: str | Path, name_map: str | Path | None = None) -> ClassFolders:
    """Images under root/<class>/ (any depth); the folder name is the class name unless name_map renames it."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected one sub-folder of images per class)")
    folders, images, labels, empty = [], [], [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            empty.append(sub.name)
            continue
        images += files
        labels += [len(folders)] * len(files)
        folders.append(sub.name)
    if empty:
        warnings.warn(f"{root}: {len(empty)} class folder(s) hold no images and are left out "
                      f"(e.g. {empty[0]!r})", stacklevel=2)
    if len(folders) < 2:
        raise DataError(f"{root}: found {len(folders)} class folder(s) with images; zero-shot classification needs "
                        f"at least 2 (one sub-folder of images per class, named after the class)")
    names = _apply_map(folders, read_name_map(name_map), root, "folder")
    return ClassFolders(root, folders, names, images, labels)


def read_labelled_texts(path: str | Path, name_map: str | Path | None = None) -> LabelledTexts:
    """Rows 'text<TAB>label' (an optional header 'text<TAB>label' is skipped); classes sorted by label."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected lines 'text<TAB>label')")
    rows, blank = [], 0
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or (n == 1 and line.lower().replace(" ", "") == "text\tlabel"):
            continue
        if "\t" not in line:
            raise DataError(f"{path}:{n}: expected 'text<TAB>label'")
        text, label = line.rsplit("\t", 1)
        if not text.strip() or not label.strip():
            blank += 1
            continue
        rows.append((text.strip(), label.strip()))
    if blank:
        warnings.warn(f"{path}: skipped {blank} row(s) with an empty text or label", stacklevel=2)
    if not rows:
        raise DataError(f"{path}: no 'text<TAB>label' rows")
    classes = sorted({label for _, label in rows})
    if len(classes) < 2:
        raise DataError(f"{path}: every row has the label {classes[0]!r}; classification needs at least 2 labels")
    index = {c: i for i, c in enumerate(classes)}
    names = _apply_map(classes, read_name_map(name_map), path, "label")
    return LabelledTexts(path, [t for t, _ in rows], [index[label] for _, label in rows], classes, names)


def read_retrieval_set(path: str | Path) -> RetrievalSet:
    """A retrieval manifest: JSONL {"image", "text"|"caption"|"captions": [...]} or TSV 'image<TAB>caption'.

    JSONL lines may also be the BriVL-1.0 release's {"image_id", "sentences": [[key, text], ...], "bbox": [...]}:
    the caption is its 'sur_text' and the image keeps its first 36 boxes. Rows naming the same image are merged,
    so an image may have several captions (as AIC-ICC's five); image paths are relative to the manifest's folder
    (else to the current folder, as the release's own scripts read them).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest (expected .jsonl or .tsv rows of image and caption)")
    rows: list[tuple[str, list[str]]] = []
    boxes: dict[str, list[list[float]]] = {}
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl" and '"image_id"' in line:
            try:
                release = release_row(line, path, n, need_text=True)
            except InputError as e:
                raise DataError(str(e)) from None
            image, caps = str(release.image), release_caption(release)
            if '"bbox"' in line:
                boxes.setdefault(image, release.boxes)
        elif path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                image = row["image"]
                caps = row.get("captions", row.get("text", row.get("caption")))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"{path}:{n}: expected a JSON object with 'image' and 'text' or 'captions' "
                                f"({e})") from None
            caps = [caps] if isinstance(caps, str) else caps
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise DataError(f"{path}:{n}: 'captions' must be a string or a list of strings")
        elif path.suffix in (".tsv", ".txt"):
            if n == 1 and line.lower().startswith("image\t"):
                continue
            if "\t" not in line:
                raise DataError(f"{path}:{n}: expected 'image<TAB>caption'")
            image, cap = line.split("\t", 1)
            caps = [cap]
        else:
            raise DataError(f"{path}: unknown manifest format; use .jsonl or .tsv")
        caps = [c.strip() for c in caps if c.strip()]
        if not caps:
            raise DataError(f"{path}:{n}: the image {image!r} has no caption")
        rows.append((str(image), caps))
    if not rows:
        raise DataError(f"{path}: no image-caption rows")
    order: dict[str, int] = {}
    captions, caption_image = [], []
    for image, caps in rows:
        i = order.setdefault(image, len(order))
        captions += caps
        caption_image += [i] * len(caps)
    images = [resolve_image(image, path.parent) for image in order]
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} image file(s) not found (e.g. {missing[0]})")
    per_image = [boxes.get(image) for image in order] if boxes else None
    return RetrievalSet(path, images, captions, caption_image, per_image)
