"""Claims about data.py: the boundary map and generator input of sec. 3.3, the data path of the
official code (layouts, pairing, transforms, normalisation), the synthetic city and its recorded
styles, and one-line messages for every bad input. Tiny images in tmp_path throughout."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cityscapes_sample"


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def constant_triplet(root, label_name, inst_name, photo_name, label_id, size=(8, 6)):
    """A label map of one id, its instance map (id * 1000 + 1) and a photo whose red channel
    encodes the id (7 * id): pairing mistakes show in the pixels."""
    W, H = size
    if label_name:
        save(root / label_name, np.full((H, W), label_id, np.uint8))
    if inst_name:
        save(root / inst_name, np.full((H, W), label_id * 1000 + 1, np.uint16))
    if photo_name:
        photo = np.zeros((H, W, 3), np.uint8)
        photo[..., 0] = 7 * label_id % 256
        save(root / photo_name, photo)


def red(image):
    """Photo tensor in [-1, 1] -> red channel as the 0..255 integers that were stored."""
    return ((image[0] + 1) * 127.5).round().long()


def message(excinfo):
    """The error's text: one line, in the words of the library (a copied data.py has no command
    line, so its errors name arguments, never flags)."""
    text = str(excinfo.value)
    assert "\n" not in text and "--" not in text
    return text


# ---------------------------------------------------------------------------------------------
# Sec. 3.3: boundary map, one-hot label, generator input
# ---------------------------------------------------------------------------------------------

def test_boundary_map_marks_both_pixels_of_every_4_neighbour_change():
    inst = torch.tensor([[1, 1, 2, 2],
                         [1, 1, 2, 2],
                         [3, 3, 3, 3]]).reshape(1, 1, 3, 4)
    expected = torch.tensor([[0., 1, 1, 0],
                             [1, 1, 1, 1],
                             [1, 1, 1, 1]])
    assert torch.equal(data.instance_boundaries(inst)[0, 0], expected)


def test_boundary_map_ignores_diagonal_neighbours():
    inst = torch.full((1, 1, 4, 5), 5)
    inst[0, 0, 2, 2] = 7  # a one-pixel instance
    expected = torch.zeros(4, 5)
    expected[2, 2] = expected[1, 2] = expected[3, 2] = expected[2, 1] = expected[2, 3] = 1
    out = data.instance_boundaries(inst)
    assert out.shape == (1, 1, 4, 5) and out.dtype == torch.float32
    assert torch.equal(out[0, 0], expected)  # (1, 1) touches 7 only diagonally: 0


def test_one_hot_puts_a_single_one_in_the_channel_of_each_label_id():
    label = torch.tensor([[0, 2], [1, 2]]).reshape(1, 1, 2, 2)
    s = data.one_hot(label, 4)
    assert s.shape == (1, 4, 2, 2) and s.dtype == torch.float32
    assert torch.equal(s[0, 2], torch.tensor([[0., 1], [0, 1]]))
    assert torch.equal(s[0, 3], torch.zeros(2, 2))  # an id that does not occur: empty channel
    assert torch.equal(s.sum(1), torch.ones(1, 2, 2))
    assert torch.equal(s.argmax(1, keepdim=True), label)


def test_one_hot_refuses_an_id_beyond_label_nc_naming_the_largest():
    label = torch.tensor([[0, 7], [9, 2]]).reshape(1, 1, 2, 2)
    with pytest.raises(ValueError) as excinfo:
        data.one_hot(label, 5)
    text = str(excinfo.value)
    assert "label id 9" in text and "label_nc must be at least 10" in text


def test_generator_input_is_one_hot_then_boundary_map():
    label = torch.randint(0, 5, (2, 1, 6, 8))
    inst = torch.randint(0, 3, (2, 1, 6, 8))
    x = data.generator_input(label, inst, 5)
    assert x.shape == (2, 6, 6, 8)
    assert torch.equal(x[:, :5], data.one_hot(label, 5))
    assert torch.equal(x[:, 5:], data.instance_boundaries(inst))
    assert data.generator_input(label, inst, 5, no_instance=True).shape == (2, 5, 6, 8)


def test_generator_input_uses_an_rgb_label_as_it_is_when_label_nc_is_0():
    label = torch.rand(1, 3, 4, 4) * 2 - 1
    inst = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    assert torch.equal(data.generator_input(label, inst, 0, no_instance=True), label)
    assert data.generator_input(label, inst, 0).shape == (1, 4, 4, 4)  # + boundary map


# ---------------------------------------------------------------------------------------------
# Layouts and pairing
# ---------------------------------------------------------------------------------------------

def test_pix2pixhd_layout_pairs_by_stem_not_by_sorted_position(tmp_path):
    # Sorted labels: a0, a; sorted photos: 0extra, a, a0 -- position pairing would mismatch both.
    constant_triplet(tmp_path, "train_label/a_gtFine_labelIds.png",
                     "train_inst/a_gtFine_instanceIds.png", "train_img/a.png", 3)
    constant_triplet(tmp_path, "train_label/a0_gtFine_labelIds.png", "train_inst/a0.png",
                     "train_img/a0.png", 11)
    constant_triplet(tmp_path, None, None, "train_img/0extra.png", 30)  # a photo with no label
    dataset = data.PairedDataset(tmp_path, label_nc=35, no_flip=True, size_multiple=2,
                                 resize_or_crop="none")
    assert dataset.layout == "pix2pixHD" and dataset.stems == ["a", "a0"]
    for item in dataset:
        label_id = int(item["label"][0, 0, 0])
        assert torch.all(item["label"] == label_id) and item["has_image"]
        assert torch.all(red(item["image"]) == 7 * label_id)
        assert torch.all(item["inst"] == label_id * 1000 + 1)
        assert Path(item["path"]).parent.name == "train_label"


def test_cityscapes_download_layout_is_detected_and_paired_across_cities(tmp_path):
    for city, frame, label_id in [("bochum", "000000", 26), ("aachen", "000001", 24)]:
        stem = f"{city}_{frame}_000019"
        constant_triplet(tmp_path, f"gtFine/train/{city}/{stem}_gtFine_labelIds.png",
                         f"gtFine/train/{city}/{stem}_gtFine_instanceIds.png",
                         f"leftImg8bit/train/{city}/{stem}_leftImg8bit.png", label_id)
        # the download's other files beside them are not label maps
        save(tmp_path / f"gtFine/train/{city}/{stem}_gtFine_color.png",
             np.zeros((6, 8, 4), np.uint8))
        (tmp_path / f"gtFine/train/{city}/{stem}_gtFine_polygons.json").write_text("{}")
    dataset = data.PairedDataset(tmp_path, no_flip=True, size_multiple=2, resize_or_crop="none")
    assert dataset.layout == "cityscapes"
    assert dataset.stems == ["aachen_000001_000019", "bochum_000000_000019"]
    for item, label_id in zip(dataset, (24, 26)):
        assert torch.all(item["label"] == label_id)
        assert torch.all(red(item["image"]) == 7 * label_id)
        assert torch.all(item["inst"] // 1000 == item["label"])


def test_label_nc_0_reads_rgb_inputs_from_A_and_photos_from_B(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    save(tmp_path / "train_A/x.png", a)
    save(tmp_path / "train_B/x.jpg", a[::-1].copy())
    item = data.PairedDataset(tmp_path, label_nc=0, no_instance=True, load_size=16, size_multiple=4,
                              is_train=False)[0]
    assert item["label"].shape == (3, 8, 16) and item["label"].dtype == torch.float32
    expected = torch.from_numpy(a).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(item["label"], expected, atol=1e-6)
    assert item["image"].shape == (3, 8, 16) and torch.all(item["inst"] == 0)


def test_a_test_split_without_photos_gives_zero_images_and_has_image_false(tmp_path):
    constant_triplet(tmp_path, "test_label/a.png", "test_inst/a.png", None, 7)
    item = data.PairedDataset(tmp_path, phase="test", resize_or_crop="none", size_multiple=2,
                              is_train=False)[0]
    assert item["has_image"] is False
    assert item["image"].shape == (3, 6, 8) and torch.all(item["image"] == 0)


# ---------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------

def sizes(root, **options):
    item = data.PairedDataset(root, is_train=False, **options)[0]
    shapes = {tuple(item[k].shape[-2:]) for k in ("label", "inst", "image")}
    assert len(shapes) == 1  # label, instance map and photo always agree
    return shapes.pop()


@pytest.mark.parametrize("size, options, expected", [
    ((64, 40), dict(resize_or_crop="scale_width", load_size=32, size_multiple=4), (20, 32)),
    # 42 -> 40 and 30 -> 32: the nearest multiple of 8, down and up (official __make_power_2)
    ((42, 30), dict(resize_or_crop="none", size_multiple=8), (32, 40)),
    ((64, 40), dict(resize_or_crop="resize_and_crop", load_size=32, fine_size=24, size_multiple=8),
     (24, 24)),
    # a crop never goes past the border: 48 x 48 from a 64 x 32 image is 48 x 32
    ((64, 32), dict(resize_or_crop="scale_width_and_crop", load_size=64, fine_size=48,
                    size_multiple=16), (32, 48)),
])
def test_transforms_give_the_official_sizes(tmp_path, size, options, expected):
    constant_triplet(tmp_path, "train_label/a.png", "train_inst/a.png", "train_img/a.png", 5, size)
    assert sizes(tmp_path, **options) == expected


def test_crop_and_flip_are_the_same_for_label_instance_map_and_photo(tmp_path):
    H, W = 32, 48
    y, x = np.mgrid[0:H, 0:W]
    label = ((x + 3 * y) % 35).astype(np.uint8)
    photo = np.stack([7 * label, 5 * y, 5 * x], -1).astype(np.uint8)  # encodes label and place
    save(tmp_path / "train_label/a.png", label)
    save(tmp_path / "train_inst/a.png", (label.astype(np.uint16) * 1000 + 5))
    save(tmp_path / "train_img/a.png", photo)
    dataset = data.PairedDataset(tmp_path, load_size=W, fine_size=16,
                                 resize_or_crop="scale_width_and_crop", size_multiple=16)
    flips, corners = set(), set()
    for seed in range(12):
        torch.manual_seed(seed)
        item = dataset[0]
        s, inst = item["label"][0], item["inst"][0]
        rgb = ((item["image"] + 1) * 127.5).round().long()  # (3, 16, 16)
        assert s.shape == (16, 16)
        assert torch.equal(rgb[0], 7 * s) and torch.equal(inst // 1000, s)
        xs = rgb[2, 0] // 5
        flips.add(bool(xs[0] > xs[-1]))
        corners.add((int(rgb[1, 0, 0]) // 5, int(xs.min())))
    assert flips == {True, False} and len(corners) > 1  # both flipped and not, crops vary


def test_no_flip_and_test_mode_keep_the_orientation(tmp_path):
    save(tmp_path / "train_label/a.png", np.tile(np.arange(16, dtype=np.uint8), (4, 1)))
    save(tmp_path / "train_img/a.png", np.zeros((4, 16, 3), np.uint8))
    for options in (dict(no_flip=True), dict(is_train=False)):
        dataset = data.PairedDataset(tmp_path, no_instance=True, load_size=16, size_multiple=4,
                                     **options)
        for seed in range(6):
            torch.manual_seed(seed)
            assert dataset[0]["label"][0, 0, 0] == 0


def test_photos_are_normalised_to_minus_one_one(tmp_path):
    photo = np.zeros((6, 8, 3), np.uint8)
    photo[:, 4:] = 255
    photo[0, 0] = 51  # (51 / 255 - 0.5) / 0.5 = -0.6
    save(tmp_path / "train_label/a.png", np.zeros((6, 8), np.uint8))
    save(tmp_path / "train_img/a.png", photo)
    image = data.PairedDataset(tmp_path, no_instance=True, resize_or_crop="none", size_multiple=2,
                               is_train=False)[0]["image"]
    assert image.dtype == torch.float32 and image.min() == -1 and image.max() == 1
    assert torch.allclose(image[:, 0, 0], torch.tensor(-0.6))


def test_tensor_to_image_inverts_the_normalisation_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "out" / "x.png"
    data.save_image(data.to_tensor(Image.fromarray(pixels)), path)
    assert np.array_equal(np.asarray(Image.open(path)), pixels)


def test_cityscapes_palette_and_names_follow_label_ids():
    assert len(data.CITYSCAPES_CLASSES) == 35
    assert data.class_name(7) == "road" and data.class_name(26) == "car"
    assert data.class_name(24) == "person" and data.class_name(33) == "bicycle"
    assert data.instance_class(26003) == 26 and data.instance_class(23) == 23
    colours = data.colorize_label(torch.tensor([[7, 26], [23, 40]]))
    assert colours.shape == (3, 2, 2) and colours.dtype == torch.uint8
    assert colours[:, 0, 0].tolist() == [128, 64, 128] and colours[:, 0, 1].tolist() == [0, 0, 142]


# ---------------------------------------------------------------------------------------------
# Bad input: one line naming the path and the fix
# ---------------------------------------------------------------------------------------------

def test_missing_root_says_how_to_get_cityscapes(tmp_path):
    root = tmp_path / "cityscapes"
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(root)
    text = message(excinfo)
    assert str(root) in text and "www.cityscapes-dataset.com" in text
    assert "gtFine_trainvaltest.zip" in text and "leftImg8bit_trainvaltest.zip" in text
    assert excinfo.value.fix == ("root", None) and text.endswith("; check root")


def test_unrecognised_layout_says_what_was_looked_for(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(tmp_path)
    text = message(excinfo)
    assert "train_label" in text and "gtFine" in text and "leftImg8bit" in text
    assert "photos/" in text  # what is there instead


def test_rgb_inputs_without_label_nc_0_are_pointed_at_the_flag(tmp_path):
    save(tmp_path / "train_A/x.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(tmp_path)
    assert "train_A/ holds RGB inputs" in message(excinfo)
    assert excinfo.value.fix == ("label_nc", 0)


def test_label_map_with_an_alpha_channel_reads_its_ids_and_a_cmyk_one_is_refused(tmp_path):
    ids = np.array([[0, 7], [26, 34]], np.uint8)
    grey_alpha = Image.fromarray(np.stack([ids, np.full_like(ids, 255)], -1), "LA")
    assert np.array_equal(np.asarray(data.check_label_map(grey_alpha, "a.png", 35)), ids)
    with pytest.raises(data.DataError, match="mode CMYK cannot hold label ids"):
        data.check_label_map(Image.new("CMYK", (2, 2)), "b.png", 35)


def test_labels_without_photos_are_named(tmp_path):
    for i, stem in enumerate(["a", "b", "c"]):
        constant_triplet(tmp_path, f"train_label/{stem}.png", f"train_inst/{stem}.png",
                         f"train_img/{stem}.png" if stem == "a" else None, i)
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(tmp_path)
    text = message(excinfo)
    assert "2 of 3" in text and "b, c" in text and "photo" in text and "train_img" in text


def test_labels_without_instance_maps_suggest_no_instance(tmp_path):
    constant_triplet(tmp_path, "train_label/a.png", None, "train_img/a.png", 1)
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(tmp_path)
    text = message(excinfo)
    assert "instance map" in text and "(a)" in text and excinfo.value.fix == ("no_instance", True)
    assert text.endswith("or set no_instance=True")
    assert len(data.PairedDataset(tmp_path, no_instance=True)) == 1


def test_two_files_of_one_stem_are_refused(tmp_path):
    constant_triplet(tmp_path, "train_label/a.png", "train_inst/a.png", "train_img/a.png", 1)
    constant_triplet(tmp_path, None, None, "train_img/a.jpg", 1)
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(tmp_path)
    assert "a.jpg" in message(excinfo) and "both pair as 'a'" in message(excinfo)


def test_a_macos_appledouble_file_is_named_as_one_to_delete(tmp_path):
    constant_triplet(tmp_path, "train_label/a.png", "train_inst/a.png", "train_img/a.png", 1)
    (tmp_path / "train_img/._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    with pytest.raises(data.DataError) as excinfo:
        data.read_image(tmp_path / "train_img/._a.png")
    assert "AppleDouble" in message(excinfo) and "delete" in message(excinfo)


def test_an_unreadable_image_is_named(tmp_path):
    constant_triplet(tmp_path, "train_label/a.png", "train_inst/a.png", "train_img/a.png", 1)
    (tmp_path / "train_img/a.png").write_bytes(b"not a png")
    dataset = data.PairedDataset(tmp_path)
    with pytest.raises(data.DataError) as excinfo:
        dataset[0]
    text = message(excinfo)
    assert str(tmp_path / "train_img/a.png") in text and "cannot read" in text


def test_label_and_photo_of_different_sizes_are_named_with_their_sizes(tmp_path):
    constant_triplet(tmp_path, "train_label/a.png", "train_inst/a.png", None, 1, size=(8, 4))
    constant_triplet(tmp_path, None, None, "train_img/a.png", 1, size=(8, 6))
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(tmp_path)[0]
    text = message(excinfo)
    assert "train_label/a.png is 8x4" in text and "train_img/a.png is 8x6" in text


def test_a_label_id_beyond_label_nc_names_the_file_and_the_largest_id(tmp_path):
    constant_triplet(tmp_path, "train_label/a.png", "train_inst/a.png", "train_img/a.png", 40)
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(tmp_path, label_nc=35)[0]
    text = message(excinfo)
    assert str(tmp_path / "train_label/a.png") in text and "label id 40" in text
    assert excinfo.value.fix == ("label_nc", 41) and "at least 41 classes" in text


def test_a_colour_label_map_is_explained(tmp_path):
    constant_triplet(tmp_path, None, "train_inst/a.png", "train_img/a.png", 1)
    colours = np.zeros((6, 8, 3), np.uint8)
    colours[:, :4] = (128, 64, 128)  # Cityscapes road colour: a *_color.png
    save(tmp_path / "train_label/a.png", colours)
    with pytest.raises(data.DataError) as excinfo:
        data.PairedDataset(tmp_path)[0]
    text = message(excinfo)
    assert str(tmp_path / "train_label/a.png") in text and "RGB colour image" in text
    assert "_labelIds.png" in text and excinfo.value.fix == ("label_nc", 0)


# ---------------------------------------------------------------------------------------------
# The real Cityscapes sample
# ---------------------------------------------------------------------------------------------

@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"no Cityscapes sample at {SAMPLE} "
                                                "(it lives beside the repository, not in it)")
def test_real_cityscapes_sample_loads_at_reduced_size():
    dataset = data.PairedDataset(SAMPLE, load_size=256, size_multiple=16, is_train=False)
    assert dataset.layout == "pix2pixHD" and len(dataset) == 8
    for i in range(3):
        item = dataset[i]
        s, inst, x = item["label"], item["inst"], item["image"]
        assert s.shape == inst.shape == (1, 128, 256) and x.shape == (3, 128, 256)
        assert s.dtype == inst.dtype == torch.int64
        assert int(s.max()) < 35 and x.min() >= -1 and x.max() <= 1
        objects = inst >= 1000
        assert objects.any()
        assert torch.equal(inst[objects] // 1000, s[objects])
        assert torch.equal(inst[~objects], s[~objects])
        assert data.generator_input(s[None], inst[None], 35).shape == (1, 36, 128, 256)
