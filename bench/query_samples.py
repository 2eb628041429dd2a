"""The images `bit-bench --scenario` (LoadGen's query sample library) and `--arrival` send: real photos, with crops
and flips to make enough of them.

The parity set is 6 images, 4 of them synthetic: too few for LoadGen, which draws its queries from a library of
samples. The library is made from `--images` (files, or folders of them), or by default from the real photos
the installed packages ship (engine/parity_set.real_photo_paths). Each photo gives `VARIANTS_PER_PHOTO` samples:
the whole photo, then crops of decreasing size on a 3x3 grid of positions, each also mirrored. The order puts
every photo's whole, unflipped view first, so even a small library holds the images the bundle's parity set
stores TF's logits for (bench/loadgen_accuracy.py compares against them).

Samples are kept as uint8 at the model's resolution (a straight resize of the crop, as the parity set is made);
the float batch is made once per sample when LoadGen loads it (bench/loadgen_scenarios.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..engine.errors import BitError
from ..engine.parity_set import real_photo_paths
from ..engine.preprocess import InputSpec, read_image, resize_to

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CROP_SCALES = (0.9, 0.8, 0.7, 0.6, 0.5)  # of each side; 1.0 is the whole photo
GRID = (0.0, 0.5, 1.0)  # where a crop sits along each side's slack: start, middle, end
VARIANTS_PER_PHOTO = 2 * (1 + len(CROP_SCALES) * len(GRID) ** 2)  # (whole + crops) x (as is, mirrored)


@dataclass
class QuerySamples:
    images: list[np.ndarray]  # uint8 HWC at the model's resolution
    names: list[str]  # file:crop:flip, to say what each sample is


def image_files(paths) -> list[str]:
    """Files from `paths` (folders expanded to the images they hold, sorted), else the packages' real photos."""
    if not paths:
        files = real_photo_paths()
        if not files:
            raise BitError("no real photos installed (scikit-learn ships two); give --images FILES_OR_FOLDERS")
        return files
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise BitError(f"--images {path!r}: the folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise BitError(f"--images {path!r}: no such file or folder")
    return files


def check_count(paths, count: int | None) -> int:
    """The library's size: `count`, or all the images give; more than they give is a one-line BitError. Nothing
    is decoded, so bit-bench checks this before anything loads."""
    files = image_files(paths)
    most = len(files) * VARIANTS_PER_PHOTO
    if count is None:
        return most
    if count < 1:
        raise BitError("--samples must be at least 1")
    if count > most:
        raise BitError(
            f"--samples {count} is more than the {most} samples {len(files)} image(s) give "
            f"({VARIANTS_PER_PHOTO} crops and flips each); add --images or lower --samples"
        )
    return count


def _views():
    """(scale, y position, x position, mirrored) in library order: the whole photo first."""
    for flip in (False, True):
        yield 1.0, 0.0, 0.0, flip
        for scale in CROP_SCALES:
            for y in GRID:
                for x in GRID:
                    yield scale, y, x, flip


def _view(photo: np.ndarray, scale: float, y: float, x: float, flip: bool) -> np.ndarray:
    h, w = photo.shape[:2]
    ch, cw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = round((h - ch) * y), round((w - cw) * x)
    crop = photo[top : top + ch, left : left + cw]
    return crop[:, ::-1] if flip else crop


def build(spec: InputSpec, paths, count: int | None) -> QuerySamples:
    """`count` samples (default: all the photos give); more than the photos give is a one-line BitError."""
    count = check_count(paths, count)
    files = image_files(paths)
    photos = [read_image(f) for f in files]
    images, names = [], []
    for scale, y, x, flip in _views():
        for path, photo in zip(files, photos):
            if len(images) == count:
                return QuerySamples(images, names)
            images.append(np.ascontiguousarray(resize_to(_view(photo, scale, y, x, flip), spec)))
            names.append(f"{os.path.basename(path)}:{scale:g}@{y:g},{x:g}{':flipped' if flip else ''}")
    return QuerySamples(images, names)
