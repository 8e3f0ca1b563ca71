"""Specification of `ddpm_hf.data`: loading any image dataset, decoding it once, and the order of batches."""

from __future__ import annotations

import io

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from shared_data import CIFAR10, needs_cifar10

from ddpm_hf.data import (
    decode_images,
    find_image_column,
    global_batch_indices,
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

    def test_no_source_gives_the_builtin_shapes(self):
        loaded = load_image_dataset(None, image_size=16)
        assert len(loaded) > 1000 and find_image_column(loaded.features) == "image"

    @needs_cifar10
    def test_real_cifar10_with_its_img_column(self):
        data = load_training_images(str(CIFAR10), "test", None, resolution=32, channels=3, show_progress=False)
        assert data.column == "img" and data.images.shape == (1000, 3, 32, 32) and data.images.dtype == torch.uint8
        assert 80 < data.images.float().mean() < 160  # natural images, not blank


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
