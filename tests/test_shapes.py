"""Specification of the built-in shapes data set and of the analytic detector that judges samples (`ddpm_hf.shapes`)."""

from __future__ import annotations

import itertools
import time

import datasets
import numpy as np
import pytest
from PIL import Image, ImageFilter

from ddpm_hf.shapes import (
    BACKGROUND,
    MIN_COLOR_DISTANCE,
    PALETTE,
    SHAPES,
    detect_shape,
    detection_rate,
    diagnose_shape,
    draw_shape,
    make_shapes_dataset,
)


@pytest.fixture(scope="module", params=[32, 16], ids=["32px", "16px"])
def dataset(request) -> datasets.Dataset:
    return make_shapes_dataset(num_images=240, image_size=request.param, seed=0)


def _arrays(ds: datasets.Dataset) -> np.ndarray:
    return np.stack([np.asarray(image) for image in ds["image"]])


def _add_noise(images: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noisy = images + np.random.default_rng(seed).normal(0.0, sigma, images.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _blur(image: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def _canvas(size: int, color: tuple[int, int, int]) -> np.ndarray:
    return np.tile(np.asarray(color, dtype=np.uint8), (size, size, 1))


# ------------------------------------------------------------------------------------------------------------ data set


def test_dataset_has_requested_size_features_and_image_size(dataset):
    size = dataset[0]["image"].size[0]
    assert len(dataset) == 240
    assert dataset.features["image"] == datasets.Image()
    assert dataset.features["shape"] == datasets.ClassLabel(names=["disc", "square", "triangle"])
    assert dataset.features["shape"].names == list(SHAPES)
    assert {(image.size, image.mode) for image in dataset["image"]} == {((size, size), "RGB")}


def test_dataset_is_deterministic_in_the_seed():
    first, again = make_shapes_dataset(64, 16, seed=3), make_shapes_dataset(64, 16, seed=3)
    other = make_shapes_dataset(64, 16, seed=4)
    assert np.array_equal(_arrays(first), _arrays(again)) and first["shape"] == again["shape"]
    assert not np.array_equal(_arrays(first), _arrays(other))


def test_dataset_holds_the_three_shapes_equally_often_in_a_shuffled_order():
    labels = make_shapes_dataset(301, 8, seed=0)["shape"]
    counts = np.bincount(labels, minlength=3)
    assert counts.sum() == 301 and counts.max() - counts.min() <= 1
    assert labels[:30] != [i % 3 for i in range(30)]


def test_every_image_is_a_palette_shape_on_the_dark_background_with_a_background_border(dataset):
    images = _arrays(dataset)
    size = images.shape[1]
    palette = {tuple(color) for color in PALETTE} | {BACKGROUND}
    for image in images:
        colors, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        assert len(colors) == 2
        assert {tuple(int(v) for v in color) for color in colors} <= palette
        assert np.linalg.norm(colors[0].astype(float) - colors[1]) >= MIN_COLOR_DISTANCE
        background = image[0, 0]
        assert tuple(int(v) for v in background) == BACKGROUND
        shape = np.any(image != background, axis=-1)
        assert not shape[:2].any() and not shape[-2:].any() and not shape[:, :2].any() and not shape[:, -2:].any()
        height, width = np.ptp(np.flatnonzero(shape.any(axis=1))) + 1, np.ptp(np.flatnonzero(shape.any(axis=0))) + 1
        assert height == width and 0.5 * size <= height <= 0.75 * size


def test_dataset_colours_sizes_and_positions_vary(dataset):
    images = _arrays(dataset)
    colours = {tuple(image[np.any(image != image[0, 0], axis=-1)][0]) for image in images}  # a shape pixel
    areas = {int(np.any(image != image[0, 0], axis=-1).sum()) for image in images}
    assert len(colours) == len(PALETTE) and len(areas) > 10
    # A small distribution (at 16 px: 3 shapes × 6 colours × 55 size-position pairs), but far from a few images.
    assert len({image.tobytes() for image in images}) >= 0.6 * len(images)


def test_palette_colours_are_far_apart():
    distances = [np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations((*PALETTE, BACKGROUND), 2)]
    assert min(distances) >= MIN_COLOR_DISTANCE


def test_draw_shape_is_deterministic_in_the_generator_and_draws_the_requested_kind():
    for kind in SHAPES:
        first = draw_shape(kind, 32, np.random.default_rng(7))
        assert first.mode == "RGB" and first.size == (32, 32)
        assert np.array_equal(np.asarray(first), np.asarray(draw_shape(kind, 32, np.random.default_rng(7))))
        assert detect_shape(first) == kind


def test_4096_images_of_32px_are_made_quickly():
    start = time.perf_counter()
    ds = make_shapes_dataset()
    assert len(ds) == 4096 and ds[0]["image"].size == (32, 32)
    assert time.perf_counter() - start < 5.0


# ------------------------------------------------------------------------------------------------------------ detector


def test_detector_recognises_the_dataset(dataset):
    labels = [SHAPES[label] for label in dataset["shape"]]
    predictions = [detect_shape(image) for image in dataset["image"]]  # PIL images
    assert np.mean([p == label for p, label in zip(predictions, labels, strict=True)]) >= 0.99


def test_detector_recognises_noisy_images(dataset):
    """Samples of a diffusion model are slightly noisy: per-channel Gaussian noise of a few levels changes nothing."""
    labels = [SHAPES[label] for label in dataset["shape"]]
    noisy = _add_noise(_arrays(dataset).astype(np.float64), 4.0)
    assert np.mean([detect_shape(image) == label for image, label in zip(noisy, labels, strict=True)]) >= 0.99


def test_detector_recognises_soft_edges(dataset):
    """Edges blurred by half a pixel (a model's soft edges) are still edges."""
    labels = [SHAPES[label] for label in dataset["shape"]]
    soft = [_blur(image, 0.5) for image in _arrays(dataset)]
    assert np.mean([detect_shape(image) == label for image, label in zip(soft, labels, strict=True)]) >= 0.99


def test_detector_accepts_pipeline_float_output(dataset):
    """output_type="np": NHWC floats in [0, 1], as uint8 after round(x·255)."""
    images = _arrays(dataset)[:60]
    floats = images.astype(np.float32) / 255.0
    labels = [SHAPES[label] for label in dataset["shape"][:60]]
    assert [detect_shape(image) for image in floats] == [detect_shape(image) for image in images] == labels
    assert detection_rate(floats) == 1.0


def test_detector_rejects_gaussian_noise():
    rng = np.random.default_rng(0)
    for size in (16, 32):
        noise = np.clip(rng.normal(0.5, 0.3, (100, size, size, 3)), 0.0, 1.0)
        assert detection_rate(noise) == 0.0
        assert detection_rate(np.round(noise * 255).astype(np.uint8)) == 0.0


def test_detector_rejects_uniform_images():
    for color in (*PALETTE, (0, 0, 0), (255, 255, 255), (128, 128, 128)):
        assert detect_shape(_canvas(32, color)) is None
        assert detect_shape(_add_noise(_canvas(16, color).astype(np.float64), 4.0)) is None


def test_detector_rejects_two_shapes_of_one_colour():
    image = _canvas(32, PALETTE[0])
    image[10:20, 3:13] = PALETTE[4]
    image[12:22, 19:29] = PALETTE[4]
    assert diagnose_shape(image) == (None, "several components")


def test_detector_rejects_two_overlapping_shapes_of_two_colours():
    rng = np.random.default_rng(0)
    square = np.asarray(draw_shape("square", 32, rng)).copy()
    background = square[0, 0]
    shape = np.any(square != background, axis=-1)
    rows, cols = np.flatnonzero(shape.any(axis=1)), np.flatnonzero(shape.any(axis=0))
    other = next(c for c in PALETTE if c != tuple(background) and c != tuple(square[rows[0], cols[0]]))
    # A second square of another colour covering the lower right quarter of the first one.
    square[(rows[0] + rows[-1]) // 2 : rows[-1] + 3, (cols[0] + cols[-1]) // 2 : cols[-1] + 3] = other
    assert detect_shape(square) is None


def test_detector_rejects_two_touching_shapes():
    """Two shapes of one colour that touch form one component, but not a disc, a square or a triangle."""
    image = _canvas(32, PALETTE[1])
    y, x = np.mgrid[:32, :32] + 0.5
    image[(x - 11) ** 2 + (y - 12) ** 2 <= 36] = PALETTE[5]
    image[14:26, 14:26] = PALETTE[5]
    assert detect_shape(image) is None


@pytest.mark.parametrize("size", [32, 16])
def test_detector_rejects_heavily_blurred_samples(size):
    images = _arrays(make_shapes_dataset(100, size, seed=1))
    assert detection_rate([_blur(image, size / 8) for image in images]) == 0.0


@pytest.mark.parametrize("size", [32, 16])
def test_detector_rejects_the_mean_of_many_samples(size):
    images = _arrays(make_shapes_dataset(16 * 20, size, seed=2)).astype(np.float64)
    means = images.reshape(20, 16, size, size, 3).mean(axis=1)
    assert detection_rate(np.round(means).astype(np.uint8)) == 0.0


def test_detector_rejects_random_colour_blotches():
    rng = np.random.default_rng(0)
    # Smooth random colour fields.
    coarse = rng.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    fields = [np.asarray(Image.fromarray(c).resize((32, 32), Image.Resampling.BILINEAR)) for c in coarse]
    assert detection_rate(fields) == 0.0
    # A blotch of random colours on a plain background.
    blotches = []
    for _ in range(50):
        image = _canvas(32, PALETTE[rng.integers(len(PALETTE))])
        image[8:24, 8:24] = rng.integers(0, 256, (16, 16, 3))
        blotches.append(image)
    assert detection_rate(blotches) == 0.0
    # An irregular blob of one colour: a union of random rectangles.
    blobs = []
    for _ in range(50):
        image = _canvas(32, PALETTE[0])
        for _ in range(4):
            top, left = rng.integers(6, 18, size=2)
            height, width = rng.integers(3, 9, size=2)
            image[top : top + height, left : left + width] = PALETTE[2]
        blobs.append(image)
    assert detection_rate(blobs) <= 0.1


def test_detector_rejects_shapes_too_small_or_too_large():
    small = _canvas(32, PALETTE[0])
    small[14:18, 14:18] = PALETTE[3]
    large = _canvas(32, PALETTE[0])
    large[2:30, 2:30] = PALETTE[3]
    assert diagnose_shape(small) == (None, "size out of range")
    assert diagnose_shape(large) == (None, "size out of range")


def test_tolerances_are_keyword_arguments_that_matter(dataset):
    noisy = _add_noise(_arrays(dataset)[:30].astype(np.float64), 8.0)
    assert detection_rate(noisy) == 1.0
    assert detection_rate(noisy, color_tolerance=5.0, border_tolerance=5.0) == 0.0
    square = np.asarray(draw_shape("square", 32, np.random.default_rng(0)))
    assert detect_shape(square, min_iou=1.0) == "square"
    assert detect_shape(square, min_size=0.75) is None


def test_unknown_tolerances_are_refused():
    with pytest.raises(TypeError):
        detect_shape(_canvas(32, PALETTE[2]), min_iou_typo=0.5)


def test_diagnose_shape_says_why():
    square = draw_shape("square", 32, np.random.default_rng(0))
    assert diagnose_shape(square) == ("square", "ok")
    assert diagnose_shape(_canvas(32, PALETTE[2])) == (None, "no foreground")
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert diagnose_shape(noise) == (None, "border not uniform")


# ------------------------------------------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_images": 0}, "num_images"),
        ({"num_images": -3}, "num_images"),
        ({"num_images": 2.5}, "num_images"),
        ({"image_size": 7}, "image_size"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 16.0}, "image_size"),
    ],
)
def test_make_shapes_dataset_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_shapes_dataset(**kwargs)


def test_draw_shape_rejects_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind"):
        draw_shape("circle", 32, rng)
    with pytest.raises(ValueError, match="image_size"):
        draw_shape("disc", 4, rng)


def test_detector_rejects_bad_inputs():
    with pytest.raises(ValueError, match="image"):
        detect_shape(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="image"):
        detect_shape(np.zeros((32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="images"):
        detection_rate([])
    with pytest.raises(ValueError, match="images"):
        detection_rate(np.zeros((32, 32, 3), dtype=np.uint8))
