"""A built-in training set that needs no network, and an analytic detector that judges generated samples.

The data set (`make_shapes_dataset`)
    Every image is ONE solid-coloured shape — a disc, an axis-aligned square or an upward (apex on top) isosceles
    triangle as wide as it is tall — on a plain dark background (`BACKGROUND`). The shape's colour is one of
    `PALETTE`, six saturated colours at least `MIN_COLOR_DISTANCE` apart from each other and from the background.
    The shape's side (the disc's diameter, the triangle's base and height) is a whole number of pixels
    between 50% and 75% of the image side, and its bounding box sits on the pixel grid at a random position that
    keeps it at least max(2 pixels, 6% of the side) from every edge, so the two outermost rings of pixels are always
    background. A pixel belongs to the shape when its centre does: hard edges without anti-aliasing, exactly two
    colours per image, and a shape of a given kind and size looks the same wherever it is.

    The distribution is deliberately small — 3 shapes × 6 colours × a few sizes × tens to hundreds of positions —
    so that a DDPM of about a million parameters learns it in a few minutes of CPU training at 16×16 (the
    `quickstart` preset draws over 90% recognisable shapes after 1,200 steps; with 30 background/shape colour pairs
    and smaller shapes it drew about 30%), and so that its samples can be judged by rules rather than by a trained
    classifier. Generating 4096 images of 32×32 takes well under a second.

The detector (`detect_shape`, `diagnose_shape`, `detection_rate`)
    Fixed rules, no learning, decide whether an image IS one solid shape on a plain background, and which one. All
    colour distances are Euclidean in RGB, in 8-bit levels. In order:

    1. plain background: the outermost ring of pixels gives the background colour (its median), and at least
       `min_border_fraction` of the ring lies within `border_tolerance` of it (rejects noise and textures);
    2. one shape colour: the colour of the pixels furthest from the background, refined by two rounds of 2-means
       (medians) together with the background colour; the two must be at least `min_contrast` apart (rejects blank
       images), and the shape colour within `palette_tolerance` of a colour of `PALETTE` (rejects the greyish
       mixtures of several images that an undertrained model draws);
    3. one shape: each pixel is projected onto the segment background → shape colour, and the pixels past its
       midpoint form the foreground; its largest 4-connected component must hold at least
       `min_component_fraction` of it (rejects two shapes, scattered blotches);
    4. solid colours: a one-pixel band on both sides of the component's outline may be soft (a generative model's
       edges are), but off that band at most `max_stray_fraction` × the shape's area of pixels may lie farther
       than `color_tolerance` from the colour of their region (rejects blur, averages of images, gradients, shapes
       of several colours);
    5. a sensible size: the component's bounding box spans between `min_size` and `max_size` of the image side, with
       an aspect ratio of at most `max_aspect`;
    6. a known outline: the component is compared with the ideal disc, square and triangle drawn exactly as the data
       set draws them, in the component's bounding box; the best intersection over union names the shape and must
       reach `min_iou`.

    The defaults recognise every image of the data set, also with Gaussian noise of σ = 8 levels per channel or with
    edges softened by a Gaussian blur of half a pixel, and reject pure noise, blank images, two shapes, heavily
    blurred shapes and averages of several images: the failure modes of an untrained or undertrained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
from PIL import Image

__all__ = [
    "BACKGROUND",
    "MIN_COLOR_DISTANCE",
    "PALETTE",
    "SHAPES",
    "detect_shape",
    "detection_rate",
    "diagnose_shape",
    "draw_shape",
    "make_shapes_dataset",
]

SHAPES: tuple[str, ...] = ("disc", "square", "triangle")
"""The kinds of shape, in the order of the data set's `ClassLabel`."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 20, 20),  # red
    (230, 230, 20),  # yellow
    (20, 230, 20),  # green
    (20, 230, 230),  # cyan
    (20, 20, 230),  # blue
    (230, 20, 230),  # magenta
)
"""The colours of the shapes (RGB, 8-bit): the six saturated corners of a shrunken RGB cube."""

BACKGROUND: tuple[int, int, int] = (20, 20, 20)
"""The colour of every background: the dark corner of the same cube, at least 210 from each shape colour."""

MIN_COLOR_DISTANCE = 200.0
"""A lower bound on the Euclidean RGB distance between any two colours of `PALETTE` and `BACKGROUND` (it is 210)."""

_MIN_SIDE, _MAX_SIDE = 0.5, 0.75  # shape side, as a fraction of the image side
_MARGIN = 0.06  # least gap between the shape and the image edge, as a fraction of the image side (at least 2 pixels)


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")


def _shape_mask(kind: str, height: int, width: int) -> np.ndarray:
    """The pixels of a `kind` shape that exactly fills a height×width box (a pixel belongs if its centre is inside).

    The disc is the ellipse inscribed in the box (a circle when the box is square); the square is the box itself;
    the triangle has its apex at the top centre and its base along the bottom row, row k (from 0) covering the
    pixels whose centres lie within (k + 1)/2 · width/height of the vertical axis, so that the top row is never
    empty and the bottom row is full.
    """
    y = (np.arange(height) + 0.5)[:, None]
    x = (np.arange(width) + 0.5)[None, :]
    half_w, half_h = width / 2, height / 2
    if kind == "disc":
        return ((x - half_w) / half_w) ** 2 + ((y - half_h) / half_h) ** 2 <= 1.0
    if kind == "square":
        return np.ones((height, width), dtype=bool)
    if kind == "triangle":
        return np.abs(x - half_w) <= half_w * (y + 0.5) / height
    raise ValueError(f"kind must be one of {SHAPES}, got {kind!r}")


def draw_shape(kind: str, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one image of the data set: a `kind` shape of a random size, position and colour pair.

    The shape's side is a whole number of pixels between 50% and 75% of `image_size` and its bounding box sits on
    the pixel grid, so every shape of a given size is rasterised identically (a symmetric disc, a symmetric
    triangle), wherever it is.

    Args:
        kind: one of `SHAPES`.
        image_size: side of the square image, in pixels (at least 8).
        rng: the source of randomness; the image is a deterministic function of its state.

    Returns:
        An RGB image containing exactly two colours: `BACKGROUND` and a shape colour from `PALETTE`.
    """
    if kind not in SHAPES:
        raise ValueError(f"kind must be one of {SHAPES}, got {kind!r}")
    _check_image_size(image_size)
    margin = max(2, round(_MARGIN * image_size))
    max_side = min(int(_MAX_SIDE * image_size), image_size - 2 * margin)
    side = int(rng.integers(min(int(np.ceil(_MIN_SIDE * image_size)), max_side), max_side + 1))
    top, left = rng.integers(margin, image_size - margin - side + 1, size=2)
    foreground = PALETTE[rng.integers(len(PALETTE))]
    mask = np.zeros((image_size, image_size), dtype=bool)
    mask[top : top + side, left : left + side] = _shape_mask(kind, side, side)
    pixels = np.where(mask[..., None], np.asarray(foreground, np.uint8), np.asarray(BACKGROUND, np.uint8))
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))


def make_shapes_dataset(num_images: int = 4096, image_size: int = 32, seed: int = 0) -> datasets.Dataset:
    """The built-in training set: `num_images` images of one solid shape on a plain background (see module docs).

    The three shapes are equally frequent (counts differ by at most one) in a shuffled order; the data set is a
    deterministic function of `seed`.

    Returns:
        A `datasets.Dataset` with features `{"image": Image(), "shape": ClassLabel(names=SHAPES)}`.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be an integer >= 1, got {num_images!r}")
    _check_image_size(image_size)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_images) % len(SHAPES))
    images = [draw_shape(SHAPES[label], int(image_size), rng) for label in labels]
    features = datasets.Features({"image": datasets.Image(), "shape": datasets.ClassLabel(names=list(SHAPES))})
    return datasets.Dataset.from_dict({"image": images, "shape": labels.tolist()}, features=features)


# ----------------------------------------------------------------------------------------------------------- detector


def _to_rgb_array(image: Any) -> np.ndarray:
    """An H×W×3 float64 array of 8-bit levels (0–255) from a PIL image or a uint8 / [0, 1]-float array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image must be a PIL image or an H×W×3 array, got an array of shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        return np.round(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array.astype(np.float64), 0.0, 255.0)
    raise ValueError(f"image must hold integers (0-255) or floats (0-1), got dtype {array.dtype}")


def _shift_stack(mask: np.ndarray, fill: Any) -> list[np.ndarray]:
    """The four 4-neighbours of every pixel, with `fill` outside the image."""
    padded = np.pad(mask, 1, constant_values=fill)
    return [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]


def _erode(mask: np.ndarray) -> np.ndarray:
    return np.logical_and.reduce([mask, *_shift_stack(mask, False)])


def _dilate(mask: np.ndarray) -> np.ndarray:
    return np.logical_or.reduce([mask, *_shift_stack(mask, False)])


def _component_labels(mask: np.ndarray) -> np.ndarray:
    """Label the 4-connected components of `mask`: each pixel gets the smallest flat index of its component.

    Pure numpy (min-label propagation with pointer jumping); pixels outside the mask get the label `mask.size`.
    """
    outside = mask.size
    labels = np.where(mask, np.arange(mask.size).reshape(mask.shape), outside)
    while True:
        smallest = np.minimum.reduce([labels, *_shift_stack(labels, outside)])
        smallest = np.where(mask, smallest, outside)
        flat = np.append(smallest.ravel(), outside)
        smallest = flat[smallest]  # pointer jumping: adopt the label of one's label
        if np.array_equal(smallest, labels):
            return labels
        labels = smallest


def diagnose_shape(
    image: Image.Image | np.ndarray,
    *,
    border_tolerance: float = 50.0,
    min_border_fraction: float = 0.95,
    min_contrast: float = 150.0,
    color_tolerance: float = 40.0,
    max_stray_fraction: float = 0.1,
    min_component_fraction: float = 0.95,
    min_size: float = 0.25,
    max_size: float = 0.85,
    max_aspect: float = 1.4,
    min_iou: float = 0.8,
    palette_tolerance: float = 80.0,
) -> tuple[str | None, str]:
    """`detect_shape` with its reason: (kind, "ok") for a shape, (None, the first rule the image breaks) otherwise.

    Colour distances are Euclidean in RGB, in 8-bit levels (0–441). See the module docstring for the rules.

    Args:
        image: a PIL image, an H×W×3 uint8 array, or an H×W×3 float array in [0, 1] (a pipeline's
            `output_type="np"`; converted with round(x·255)).
        border_tolerance: the greatest distance of a border pixel from the border's median colour.
        min_border_fraction: the least fraction of border pixels within `border_tolerance`.
        min_contrast: the least distance between the shape colour and the background colour.
        palette_tolerance: the greatest distance between the shape colour and the nearest colour of `PALETTE`.
        color_tolerance: the greatest distance of a pixel off the outline from the colour of its region.
        max_stray_fraction: the greatest number of pixels off the outline farther than `color_tolerance` from the
            colour of their region, as a fraction of the shape's area.
        min_component_fraction: the least fraction of the foreground pixels in its largest connected component.
        min_size: the least side of the shape's bounding box, as a fraction of the image side.
        max_size: the greatest side of the shape's bounding box, as a fraction of the image side.
        max_aspect: the greatest ratio of the longer to the shorter side of the bounding box.
        min_iou: the least intersection over union between the shape and the ideal shape in its bounding box.

    """
    pixels = _to_rgb_array(image)
    height, width = pixels.shape[:2]
    if height < 3 or width < 3:
        return None, "image smaller than 3×3"

    # 1. A nearly uniform border gives the background colour.
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    background = np.median(border, axis=0)
    if np.mean(np.linalg.norm(border - background, axis=1) <= border_tolerance) < min_border_fraction:
        return None, "border not uniform"

    # 2. The shape colour: the pixels furthest from the background, refined by 2-means.
    flat = pixels.reshape(-1, 3)
    distance = np.linalg.norm(flat - background, axis=1)
    far = distance >= max(min_contrast / 2, 0.5 * np.percentile(distance, 99.5))
    if not far.any():
        return None, "no foreground"
    foreground = np.median(flat[far], axis=0)
    for _ in range(2):
        is_fg = np.linalg.norm(flat - foreground, axis=1) < np.linalg.norm(flat - background, axis=1)
        if not is_fg.any() or is_fg.all():
            return None, "no foreground"
        foreground, background = np.median(flat[is_fg], axis=0), np.median(flat[~is_fg], axis=0)
    axis = foreground - background
    contrast = float(np.linalg.norm(axis))
    if contrast < min_contrast:
        return None, "contrast too low"
    if np.linalg.norm(np.asarray(PALETTE, dtype=np.float64) - foreground, axis=1).min() > palette_tolerance:
        return None, "shape colour not in the palette"

    # 3. Foreground: past the midpoint of the segment background → shape colour; one dominant component.
    position = ((pixels - background) @ axis / contrast**2).reshape(height, width)
    mask = position > 0.5
    labels = _component_labels(mask)
    ids, counts = np.unique(labels[mask], return_counts=True)
    if counts.max() < min_component_fraction * counts.sum():
        return None, "several components"
    shape = labels == ids[np.argmax(counts)]

    # 4. Solid colours away from the outline (a one-pixel band on either side of it is allowed to be soft).
    inside, outside = _erode(shape), ~_dilate(shape)
    if not inside.any():
        return None, "no interior"
    stray = np.sum(np.linalg.norm(pixels[inside] - foreground, axis=1) > color_tolerance)
    stray += np.sum(np.linalg.norm(pixels[outside] - background, axis=1) > color_tolerance)
    if stray > max_stray_fraction * shape.sum():
        return None, "colours not solid"

    # 5. A sensible size and aspect ratio.
    rows, cols = np.flatnonzero(shape.any(axis=1)), np.flatnonzero(shape.any(axis=0))
    box_h, box_w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    if not (min_size <= box_h / height <= max_size and min_size <= box_w / width <= max_size):
        return None, "size out of range"
    if max(box_h, box_w) / min(box_h, box_w) > max_aspect:
        return None, "aspect ratio out of range"

    # 6. The ideal shape that best matches the component in its bounding box.
    crop = shape[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ious = {}
    for kind in SHAPES:
        ideal = _shape_mask(kind, box_h, box_w)
        ious[kind] = np.sum(crop & ideal) / np.sum(crop | ideal)
    kind = max(ious, key=ious.__getitem__)
    return (kind, "ok") if ious[kind] >= min_iou else (None, "outline matches no shape")


def detect_shape(image: Image.Image | np.ndarray, **tolerances: float) -> str | None:
    """The kind of shape an image shows, or None when it is not one solid shape on a plain background.

    Args:
        image: a PIL image, an H×W×3 uint8 array, or an H×W×3 float array in [0, 1] (a pipeline's
            `output_type="np"`; converted with round(x·255)).
        **tolerances: the keyword arguments of `diagnose_shape`, which also says why an image is not a shape.

    Returns:
        One of `SHAPES`, or None.
    """
    return diagnose_shape(image, **tolerances)[0]


def detection_rate(images: Sequence[Image.Image | np.ndarray] | np.ndarray, **tolerances: Any) -> float:
    """The fraction of `images` in which `detect_shape` sees a shape (returns something other than None).

    Args:
        images: a sequence of PIL images or H×W×3 arrays, or an N×H×W×3 array (uint8, or floats in [0, 1]).
        **tolerances: keyword arguments for `detect_shape`.
    """
    if isinstance(images, np.ndarray) and images.ndim != 4:
        raise ValueError(f"images must be an N×H×W×3 array or a sequence of images, got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("images must not be empty")
    return sum(detect_shape(image, **tolerances) is not None for image in images) / len(images)
