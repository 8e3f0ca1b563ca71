"""Specification of `ddpm_hf.data`: loading any image dataset, decoding it once, and the order of batches."""

from __future__ import annotations

import io
import os

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from shared_data import CIFAR10, needs_cifar10

from ddpm_hf.data import (
    check_channels,
    decode_images,
    find_image_column,
    global_batch_indices,
    list_image_folder,
    load_image_dataset,
    load_training_images,
    prepare_image,
    to_model_input,
)


def png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def small_dataset(n: int = 6, column: str = "img") -> datasets.Dataset:
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)) for _ in range(n)]
    return datasets.Dataset.from_dict({column: images, "label": list(range(n))}).cast_column(column, datasets.Image())


class TestFindingTheImageColumn:
    def test_the_column_is_found_by_its_feature_type_whatever_its_name(self):
        assert find_image_column(small_dataset(column="img").features) == "img"
        assert find_image_column(small_dataset(column="picture").features) == "picture"

    def test_a_named_column_must_exist(self):
        with pytest.raises(ValueError, match="'image' does not exist.*img"):
            find_image_column(small_dataset().features, "image")

    def test_a_dataset_without_images_is_refused_listing_its_columns(self):
        features = datasets.Features({"text": datasets.Value("string"), "label": datasets.Value("int64")})
        with pytest.raises(ValueError, match="No image column.*text"):
            find_image_column(features)


class TestLoading:
    def test_a_parquet_repository_folder_like_the_hubs_cifar10(self, tmp_path):
        (tmp_path / "plain_text").mkdir()
        small_dataset().to_parquet(tmp_path / "plain_text" / "train-00000-of-00001.parquet")
        loaded = load_image_dataset(str(tmp_path), split="train")
        assert len(loaded) == 6 and find_image_column(loaded.features) == "img"

    def test_a_folder_saved_with_save_to_disk(self, tmp_path):
        datasets.DatasetDict({"train": small_dataset(4)}).save_to_disk(str(tmp_path / "saved"))
        assert len(load_image_dataset(str(tmp_path / "saved"))) == 4

    def test_a_folder_of_image_files(self, tmp_path):
        for i in range(3):
            PIL.Image.new("RGB", (10, 10), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
        loaded = load_image_dataset(str(tmp_path))
        assert len(loaded) == 3 and find_image_column(loaded.features) == "image"

    def test_a_dataset_that_does_not_exist_is_refused(self, tmp_path):
        with pytest.raises(ValueError, match="does-not-exist"):
            load_image_dataset("someone/does-not-exist")
        with pytest.raises(ValueError, match="no-such-folder"):
            load_image_dataset(str(tmp_path / "no-such-folder"))

    def test_a_missing_split_is_refused_listing_the_splits(self, tmp_path):
        datasets.DatasetDict({"train": small_dataset(2)}).save_to_disk(str(tmp_path / "saved"))
        with pytest.raises(ValueError, match=r"no split 'validation'.*\['train'\]"):
            load_image_dataset(str(tmp_path / "saved"), split="validation")

    def test_an_empty_split_is_refused(self, tmp_path):
        (tmp_path / "data").mkdir()
        small_dataset(2).select([]).to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
        with pytest.raises(ValueError, match="'train' of dataset .* is empty"):
            load_image_dataset(str(tmp_path))

    def test_a_missing_split_of_a_repository_folder_is_refused(self, tmp_path):
        (tmp_path / "data").mkdir()
        small_dataset(2).to_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
        with pytest.raises(ValueError, match="no split 'test'"):
            load_image_dataset(str(tmp_path), split="test")

    def test_an_empty_folder_is_said_to_hold_no_images_not_to_be_missing(self, tmp_path):
        (tmp_path / "data" / "sub").mkdir(parents=True)
        (tmp_path / "data" / "notes.txt").write_text("no images here")
        with pytest.raises(ValueError, match=r"Dataset folder .*data holds no images") as refused:
            load_image_dataset(str(tmp_path / "data"))
        assert "does not exist" not in str(refused.value)

    def test_no_source_gives_the_builtin_shapes(self):
        loaded = load_image_dataset(None, image_size=16)
        assert len(loaded) > 1000 and find_image_column(loaded.features) == "image"

    @needs_cifar10
    def test_real_cifar10_with_its_img_column(self):
        data = load_training_images(str(CIFAR10), "test", None, resolution=32, channels=3, show_progress=False)
        assert data.column == "img" and data.images.shape == (1000, 3, 32, 32) and data.images.dtype == torch.uint8
        assert 80 < data.images.float().mean() < 160  # natural images, not blank


class TestListingAnImageFolder:
    def test_a_plain_folder_is_listed_in_the_order_datasets_reads_it(self, tmp_path):
        """Nested folders, names that sort differently per component and as whole paths ("a-c.png" < "a/b.png"),
        upper-case extensions, hidden files, "__" folders and files that are not images: the same files in the same
        order as `datasets`' imagefolder, so that a run keeps its rows when its images come from the listing."""
        names = [
            "a-c.png", "a/b.png", "a/Z.PNG", "a b/c.jpg", "B.png", "a.png", "ab/x.png", "a0/y.jpeg", "__x.png",
            "__pycache__/p.png", ".hidden/h.png", "a/.h.png", "z/__q/r.png", "trainer/t.png", "é.png", "Ω/w.png",
        ]  # fmt: skip
        for name in names:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            PIL.Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
        (tmp_path / "README.md").write_text("not an image")
        loaded = datasets.load_dataset(
            "imagefolder", data_dir=str(tmp_path), split="train", cache_dir=str(tmp_path / ".c")
        )
        paths = [row["path"] for row in loaded.cast_column("image", datasets.Image(decode=False))["image"]]
        assert list_image_folder(tmp_path).names == [os.path.relpath(path, tmp_path) for path in paths]
        for other in ("test/x.png", "valid-1.png", "a/train/x.png", "metadata.jsonl", "labels.csv"):
            (tmp_path / other).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / other).write_bytes((tmp_path / "a.png").read_bytes())
            assert list_image_folder(tmp_path) is None, f"{other}: datasets reads the folder otherwise"
            (tmp_path / other).unlink()


class TestDecoding:
    def test_only_the_first_num_images_rows_are_decoded(self, tmp_path):
        """Evaluation decodes what it uses (two images for the figures, the first N for the NLL), not the split."""
        rows = [{"bytes": png_bytes(PIL.Image.new("RGB", (8, 8), (10 * i, 0, 0))), "path": None} for i in range(4)]
        rows.append({"bytes": b"not an image at all", "path": None})  # never read: past the first four
        dataset = datasets.Dataset.from_dict({"img": rows}).cast_column("img", datasets.Image())
        datasets.DatasetDict({"test": dataset}).save_to_disk(str(tmp_path / "saved"))
        data = load_training_images(str(tmp_path / "saved"), "test", None, 8, 3, show_progress=False, num_images=4)
        assert data.images.shape == (4, 3, 8, 8) and data.images[:, 0, 0, 0].tolist() == [0, 10, 20, 30]
        with pytest.raises(ValueError, match="row 4"):
            load_training_images(str(tmp_path / "saved"), "test", None, 8, 3, show_progress=False)

    def test_a_truncated_image_file_is_reported_with_its_row_and_its_path(self, tmp_path):
        for i in range(3):
            PIL.Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{i}.png")
        whole = (tmp_path / "1.png").read_bytes()
        (tmp_path / "1.png").write_bytes(whole[: len(whole) // 2])
        with pytest.raises(ValueError, match=r"row 1 .*1\.png") as refused:
            load_training_images(str(tmp_path), "train", None, 8, 3, show_progress=False)
        assert str(tmp_path / "1.png") in str(refused.value) and "\n" not in str(refused.value)

    @pytest.mark.parametrize("channels", [0, 2, 4])
    def test_a_model_of_other_than_1_or_3_channels_is_refused_before_the_data_is_read(self, channels, tmp_path):
        """A 4-channel UNet on RGB data: the message says which channel counts work, and nothing is decoded (the
        dataset named here does not even exist)."""
        message = rf"{channels} input channels.*1 \(greyscale\) or 3 \(RGB\)"
        with pytest.raises(ValueError, match=message):
            load_training_images(str(tmp_path / "never-read"), "train", None, 8, channels, show_progress=False)
        with pytest.raises(ValueError, match=message):
            decode_images(small_dataset(2), "img", 8, channels, show_progress=False)
        with pytest.raises(ValueError, match=message):
            check_channels(channels)

    def test_an_unreadable_image_is_reported_with_its_row(self):
        rows = [{"bytes": png_bytes(PIL.Image.new("RGB", (8, 8))), "path": None}] * 5
        rows[3] = {"bytes": b"not an image at all", "path": None}
        dataset = datasets.Dataset.from_dict({"img": rows}).cast_column("img", datasets.Image())
        with pytest.raises(ValueError, match="row 3"):
            decode_images(dataset, "img", 8, 3, show_progress=False)

    def test_greyscale_and_rgba_become_the_models_channel_count(self):
        grey = PIL.Image.new("L", (8, 8), 100)
        assert prepare_image(grey, 8, 3).shape == (3, 8, 8) and (prepare_image(grey, 8, 3) == 100).all()
        transparent = PIL.Image.new("RGBA", (8, 8), (10, 20, 30, 0))
        assert (prepare_image(transparent, 8, 3) == 255).all()  # composited on white
        opaque = PIL.Image.new("RGBA", (8, 8), (10, 20, 30, 255))
        assert prepare_image(opaque, 8, 3)[:, 0, 0].tolist() == [10, 20, 30]
        assert prepare_image(PIL.Image.new("RGB", (8, 8), (255, 255, 255)), 8, 1).shape == (1, 8, 8)

    def test_a_16_bit_greyscale_png_folder_is_decoded_to_its_levels_not_to_white(self, tmp_path):
        """The bug this guards against: PIL's own conversion clips 16-bit values at 255, so every pixel was white."""
        ramp = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369  # 0, 4369, …, 65535: levels 0, 17, …, 255
        for i in range(2):
            PIL.Image.fromarray(ramp).save(tmp_path / f"{i}.png")
        assert PIL.Image.open(tmp_path / "0.png").mode == "I;16"
        data = load_training_images(str(tmp_path), "train", None, 4, 1, show_progress=False)
        assert data.images[0, 0].flatten().tolist() == [17 * k for k in range(16)]

    def test_images_are_resized_by_their_shorter_side_and_centre_cropped(self):
        image = np.zeros((40, 80, 3), dtype=np.uint8)
        image[:, 20:60] = 255  # a white centre square between black side bands
        out = prepare_image(PIL.Image.fromarray(image), 10, 3)
        assert out.shape == (3, 10, 10) and (out[:, :, 1:-1] == 255).all() and out.min() > 200  # bicubic edges
        squashed = prepare_image(PIL.Image.fromarray(image), 10, 3, center_crop=False)
        assert squashed.shape == (3, 10, 10) and squashed[:, :, 0].max() < 50

    def test_model_input_is_in_minus_one_one_and_flips_mirror(self):
        images = torch.tensor([[[[0, 255]]], [[[0, 255]]]], dtype=torch.uint8)
        x = to_model_input(images, flip=torch.tensor([False, True]))
        assert x[0].flatten().tolist() == [-1.0, 1.0] and x[1].flatten().tolist() == [1.0, -1.0]


def _image(mode: str, pixels: list, **info) -> PIL.Image.Image:
    """A 2×2 image of `mode` with the four `pixels` (row by row)."""
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        return PIL.Image.fromarray(np.array(pixels, dtype=dtype).reshape(2, 2))
    image = PIL.Image.new(mode, (2, 2))
    if mode == "P":
        image.putpalette([255, 0, 0, 0, 0, 255])  # index 0 red, 1 blue
    image.putdata(pixels)
    image.info.update(info)
    return image


GREY = lambda *levels: [(v, v, v) for v in levels]  # noqa: E731
RED_LUMA, BLUE_LUMA = 76, 29  # ITU-R 601 luma of pure red and pure blue: 0.299 · 255 and 0.114 · 255
# mode, file format, the four pixels, the expected RGB pixels, the expected greyscale levels
EVERY_MODE = [
    ("1", "PNG", [0, 1, 1, 0], GREY(0, 255, 255, 0), [0, 255, 255, 0]),
    ("L", "PNG", [0, 100, 200, 255], GREY(0, 100, 200, 255), [0, 100, 200, 255]),
    ("LA", "PNG", [(100, 255), (100, 0), (0, 255), (200, 255)], GREY(100, 255, 0, 200), [100, 255, 0, 200]),
    ("P", "PNG", [0, 1, 0, 1], [(255, 0, 0), (0, 0, 255)] * 2, [RED_LUMA, BLUE_LUMA] * 2),
    ("RGB", "PNG", [(10, 20, 30), (255, 0, 0), (0, 0, 0), (255, 255, 255)],
     [(10, 20, 30), (255, 0, 0), (0, 0, 0), (255, 255, 255)], [18, RED_LUMA, 0, 255]),
    ("RGBA", "PNG", [(10, 20, 30, 255), (10, 20, 30, 0), (0, 0, 0, 255), (255, 0, 0, 255)],
     [(10, 20, 30), (255, 255, 255), (0, 0, 0), (255, 0, 0)], [18, 255, 0, RED_LUMA]),
    ("CMYK", "TIFF", [(0, 0, 0, 0), (0, 255, 255, 0), (255, 255, 255, 0), (0, 0, 0, 255)],
     [(255, 255, 255), (255, 0, 0), (0, 0, 0), (0, 0, 0)], [255, RED_LUMA, 0, 0]),
    ("I;16", "PNG", [0, 257, 32768, 65535], GREY(0, 1, 128, 255), [0, 1, 128, 255]),
    ("I;16", "TIFF", [0, 257, 32768, 65535], GREY(0, 1, 128, 255), [0, 1, 128, 255]),
    ("I", "TIFF", [-5, 257, 65535, 70000], GREY(0, 1, 255, 255), [0, 1, 255, 255]),
    ("F", "TIFF", [0.0, 0.5, 1.0, 0.25], GREY(0, 128, 255, 64), [0, 128, 255, 64]),
    ("F", "TIFF", [-3.0, 12.4, 300.0, 99.6], GREY(0, 12, 255, 100), [0, 12, 255, 100]),
]  # fmt: skip


class TestEveryImageModeBecomesEightBits:
    """Each mode PIL opens, written to a real file and read back, gives the pixel values `to_eight_bits` documents,
    for RGB and greyscale models alike."""

    @pytest.mark.parametrize(
        "mode, file_format, pixels, rgb, grey",
        EVERY_MODE,
        ids=[f"{row[0]}-{row[1]}-{i}" for i, row in enumerate(EVERY_MODE)],
    )
    def test_pixel_values(self, tmp_path, mode, file_format, pixels, rgb, grey):
        path = tmp_path / f"image.{file_format.lower()}"
        _image(mode, pixels).save(path, format=file_format)
        with PIL.Image.open(path) as image:
            assert image.mode == mode  # the file really holds that mode
            assert prepare_image(image, 2, 3).reshape(3, 4).T.tolist() == [list(pixel) for pixel in rgb]
            assert prepare_image(image, 2, 1).flatten().tolist() == grey

    def test_a_palette_with_a_transparent_index_is_composited_on_white(self, tmp_path):
        _image("P", [0, 1, 0, 1]).save(tmp_path / "p.png", transparency=1)
        with PIL.Image.open(tmp_path / "p.png") as image:
            assert image.mode == "P" and image.info["transparency"] == 1
            assert prepare_image(image, 2, 3).reshape(3, 4).T.tolist() == [[255, 0, 0], [255, 255, 255]] * 2
            assert prepare_image(image, 2, 1).flatten().tolist() == [RED_LUMA, 255] * 2


class TestBatchOrder:
    def test_every_image_is_seen_once_per_epoch_and_batches_straddle_epochs(self):
        n, batch = 10, 4
        stream = torch.cat([global_batch_indices(n, batch, seed=3, step=s) for s in range(5)])  # 2 epochs
        assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:20].tolist()) == list(range(10))
        assert not torch.equal(stream[:10], stream[10:20])  # a new permutation each epoch

    def test_the_order_is_a_function_of_seed_and_step_only(self):
        a = global_batch_indices(1000, 128, seed=0, step=77)
        assert torch.equal(a, global_batch_indices(1000, 128, seed=0, step=77))
        assert not torch.equal(a, global_batch_indices(1000, 128, seed=1, step=77))
