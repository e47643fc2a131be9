"""The offline natural-image stand-in (compute/photos_mod.load_offline_photos): shapes, labels, disjoint
train and test regions, patches that match their recorded boxes, determinism, clear errors."""
import shutil

import numpy as np
import pytest

from neuralreg_schema.compute.classifier import datasets, train as train_classifier
from neuralreg_schema.compute.classifier import photos as photos_mod


@pytest.fixture(scope="module")
def photos():
    return datasets.load_dataset("offline-photos")


def test_shapes_labels_and_stand_in_name(photos):
    n_classes = len(photos_mod.PHOTO_FILES)
    per_train = photos_mod.PHOTO_TRAIN_PER_SCALE * len(photos_mod.PHOTO_SCALES)
    per_test = photos_mod.PHOTO_TEST_PER_SCALE * len(photos_mod.PHOTO_SCALES)
    assert photos.train_images.shape == (n_classes * per_train, 32, 32) and photos.train_images.dtype == np.uint8
    assert photos.test_images.shape == (n_classes * per_test, 32, 32)
    assert np.bincount(photos.train_labels).tolist() == [per_train] * n_classes
    assert np.bincount(photos.test_labels).tolist() == [per_test] * n_classes
    assert photos.classes == list(photos_mod.PHOTO_FILES)
    assert photos.is_stand_in and "stand-in" in photos.name and "STAND-IN" in photos.summary()
    assert "skimage" in photos.source and photos.source.count(".png") == n_classes
    # classes interleaved: the first 256 training images (the tiny recipe's max_train) hold every class
    assert set(photos.train_labels[:256]) == set(range(n_classes))
    # real photo content, not blank: patches vary
    assert photos.train_images.reshape(len(photos.train_images), -1).std(axis=1).mean() > 10


def test_train_and_test_regions_are_disjoint(photos):
    cols = photos.meta["box_columns"]
    assert cols == ("photo", "scale", "top", "left", "bottom", "right")
    train, test = photos.meta["train_boxes"], photos.meta["test_boxes"]
    np.testing.assert_array_equal(train[:, 0], photos.train_labels)
    np.testing.assert_array_equal(test[:, 0], photos.test_labels)
    for index, name in enumerate(photos.classes):
        width = photos_mod.read_photo(name).shape[1]
        regions = photos_mod.photo_regions(width)
        assert regions["test"][0] - regions["train"][1] == photos_mod.PHOTO_GUARD
        tr, te = train[train[:, 0] == index], test[test[:, 0] == index]
        assert tr[:, 3].min() >= 0 and tr[:, 5].max() <= regions["train"][1]
        assert te[:, 3].min() >= regions["test"][0] and te[:, 5].max() <= width
        # no train box intersects a test box (pixel sets disjoint)
        overlap = (np.minimum(tr[:, None, 5], te[None, :, 5]) > np.maximum(tr[:, None, 3], te[None, :, 3])) & \
                  (np.minimum(tr[:, None, 4], te[None, :, 4]) > np.maximum(tr[:, None, 2], te[None, :, 2]))
        assert not overlap.any(), name
        assert set(np.unique(tr[:, 1])) == set(photos_mod.PHOTO_SCALES) == set(np.unique(te[:, 1]))
        assert ((tr[:, 4] - tr[:, 2]) == 32 * tr[:, 1]).all() and ((tr[:, 5] - tr[:, 3]) == 32 * tr[:, 1]).all()


def test_patches_are_the_area_averaged_photo_inside_their_box(photos):
    for split in ("train", "test"):
        images, boxes = getattr(photos, f"{split}_images"), photos.meta[f"{split}_boxes"]
        for i in (0, 1, 2, 17, len(images) - 1):
            photo, scale, top, left, bottom, right = boxes[i]
            gray = photos_mod.read_photo(photos.classes[photo]).astype(np.float64)
            crop = gray[top:bottom, left:right].reshape(32, scale, 32, scale).mean(axis=(1, 3))
            np.testing.assert_array_equal(images[i], np.floor(crop + 0.5).astype(np.uint8))


def test_rgb_photos_are_converted_to_grey_by_bt601():
    from PIL import Image
    rgb = np.asarray(Image.open(photos_mod.photo_folder() / photos_mod.PHOTO_FILES["astronaut"]))
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    np.testing.assert_array_equal(photos_mod.read_photo("astronaut"), (299 * r + 587 * g + 114 * b + 500) // 1000)


def test_deterministic(photos):
    again = photos_mod.load_offline_photos()
    assert train_classifier.data_fingerprint(again) == train_classifier.data_fingerprint(photos)
    np.testing.assert_array_equal(again.meta["test_boxes"], photos.meta["test_boxes"])
    other = photos_mod.load_offline_photos(seed=1, photos=("camera", "brick"))
    assert not np.array_equal(other.train_images[:10], photos.train_images[:10])


def test_a_missing_photo_is_a_clear_error(tmp_path):
    for name in ("camera", "grass"):
        shutil.copy(photos_mod.photo_folder() / photos_mod.PHOTO_FILES[name], tmp_path)
    small = photos_mod.load_offline_photos(folder=tmp_path, photos=("camera", "grass"))
    assert small.classes == ["camera", "grass"] and len(small.train_images) == 300
    with pytest.raises(datasets.DatasetError, match=r"8 photo\(s\).*missing.*astronaut\.png.*brick\.png.*scikit-image"):
        photos_mod.load_offline_photos(folder=tmp_path)
    with pytest.raises(datasets.DatasetError, match=r"photo 'brick'.*missing.*brick\.png"):
        photos_mod.read_photo("brick", tmp_path)
    (tmp_path / "brick.png").write_bytes(b"not a png")
    with pytest.raises(datasets.DatasetError, match="cannot read"):
        photos_mod.load_offline_photos(folder=tmp_path, photos=("camera", "brick"))
    with pytest.raises(datasets.DatasetError, match="unknown photo"):
        photos_mod.read_photo("rocket")


def test_a_photo_too_small_for_its_patches_is_refused():
    with pytest.raises(datasets.DatasetError, match="too small"):
        photos_mod.photo_patches(np.zeros((100, 120), dtype=np.uint8), 0, name="tiny")
