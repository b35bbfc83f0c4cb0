"""Claims about infer.py: a trained G synthesizes a whole split into PNGs and a results page, or one
label map from files; NVIDIA's released generators load in their official layout and produce
images of the right size; instance features come from E or from the cluster file, reproducibly;
the cluster file holds plain arrays only and refuses a model it was not made for.

The end-to-end claims use tiny models trained for two iterations through ``train.main`` on a tiny
synthetic city (64x32, tiny widths) in module fixtures.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data
import infer
import runs
import synthetic_city
import train
from conftest import run_command

TINY = ["--loadSize", "64", "--ngf", "8", "--n_downsample_global", "2", "--n_blocks_global", "1",
        "--ndf", "8", "--num_D", "1", "--nef", "8", "--no_vgg_loss", "--num_workers", "0",
        "--device", "cpu", "--print_freq", "1000", "--display_freq", "1000", "--seed", "0"]

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
LAYOUT = Path(__file__).resolve().parent / "official_checkpoint_layout.json"
CITYSCAPES = SHARED / "data" / "cityscapes_sample"


# ---------------------------------------------------------------------------------------------
# Instance features from the cluster file: pure
# ---------------------------------------------------------------------------------------------

def two_images_of_instances():
    """(2, 1, 4, 4): road 7, cars 26000 / 26001, a person 24000 (a class without clusters)."""
    inst = torch.full((2, 1, 4, 4), 7)
    inst[0, 0, :2, :2] = 26000
    inst[0, 0, 2:, 2:] = 26001
    inst[1, 0, :2, :2] = 26000
    inst[1, 0, 3, 3] = 24000
    return inst


CLUSTERS = {7: torch.tensor([[1., 1, 1], [2, 2, 2]]),
            26: torch.tensor([[10., 0, 0], [0, 10, 0], [0, 0, 10], [5, 5, 5]])}


def test_each_instance_gets_one_centre_of_its_own_class():
    inst = two_images_of_instances()
    features, missing = infer.sample_cluster_features(inst, CLUSTERS, 3,
                                                      torch.Generator().manual_seed(0))
    assert features.shape == (2, 3, 4, 4) and missing == [24]
    for b in range(2):
        for i in inst[b].unique().tolist():
            values = features[b].permute(1, 2, 0)[inst[b, 0] == i]  # (pixels, 3)
            assert (values == values[0]).all()  # one vector per instance
            c = data.instance_class(i)
            if c in CLUSTERS:
                assert any(torch.equal(values[0], mu) for mu in CLUSTERS[c])
            else:
                assert (values == 0).all()  # a class without clusters gets zeros


def test_cluster_draws_are_reproducible_for_a_seed_and_vary_across_seeds():
    inst = two_images_of_instances()
    draw = [infer.sample_cluster_features(inst, CLUSTERS, 3, torch.Generator().manual_seed(s))[0]
            for s in (0, 0, 1, 2, 3)]
    assert torch.equal(draw[0], draw[1])
    assert any(not torch.equal(draw[0], d) for d in draw[2:])


def test_cluster_file_round_trips_as_plain_arrays(tmp_path):
    path = tmp_path / "clusters.npz"
    counts = {7: torch.tensor([3, 4]), 26: torch.tensor([1, 2, 3, 4])}
    infer.save_clusters(path, CLUSTERS, feat_num=3, label_nc=35, counts=counts)
    with np.load(path, allow_pickle=False) as f:  # no pickled object anywhere
        assert sorted(f.files) == ["centers_26", "centers_7", "class_ids", "counts_26",
                                   "counts_7", "feat_num", "label_nc"]
        assert f["class_ids"].tolist() == [7, 26]
    loaded = infer.load_clusters(path, feat_num=3, label_nc=35)
    assert loaded.keys() == CLUSTERS.keys()
    for c in CLUSTERS:
        assert torch.equal(loaded[c], CLUSTERS[c])


@pytest.mark.parametrize("feat_num, label_nc", [(4, 35), (3, 20)])
def test_cluster_file_of_another_feat_num_or_label_set_is_refused(tmp_path, feat_num, label_nc):
    path = tmp_path / "clusters.npz"
    infer.save_clusters(path, CLUSTERS, feat_num=3, label_nc=35)
    with pytest.raises(runs.UserError, match=r"made with feat_num 3, label_nc 35.*re-run"):
        infer.load_clusters(path, feat_num=feat_num, label_nc=label_nc)


def test_a_pickled_cluster_file_is_refused(tmp_path):
    """The official format, a .npy of a dict, needs pickle: refused with a one-line message."""
    path = tmp_path / "official.npy"
    np.save(path, {26: np.zeros((10, 3))}, allow_pickle=True)
    with pytest.raises(runs.UserError, match="not one written by manipulate.py encode"):
        infer.load_clusters(path)


# ---------------------------------------------------------------------------------------------
# End to end: tiny trained checkpoints
# ---------------------------------------------------------------------------------------------

def run(argv, capsys):
    """infer.main(argv) -> (exit code, stdout, stderr); a user error must be one line."""
    return run_command(infer.main, argv, capsys)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city") / "city"
    synthetic_city.make_synthetic_city(root, n_train=2, n_test=2, width=64, height=32, seed=0)
    return root


@pytest.fixture(scope="module")
def checkpoints(city, tmp_path_factory):
    """Two runs of two iterations: 'plain' (label map + boundaries) and 'feat' (--instance_feat)."""
    ckpt = tmp_path_factory.mktemp("checkpoints")
    for name, extra in [("plain", []), ("feat", ["--instance_feat"])]:
        train.main(["--dataroot", str(city), "--checkpoints_dir", str(ckpt), "--name", name,
                    "--max_iters", "2", *TINY, *extra])
    return ckpt


def triplet(city, index=0):
    """(label, inst, photo) paths of a test scene, and its stem."""
    stem = data.PairedDataset(city, "test").stems[index]
    return (city / "test_label" / f"{stem}_gtFine_labelIds.png",
            city / "test_inst" / f"{stem}_gtFine_instanceIds.png",
            city / "test_img" / f"{stem}_leftImg8bit.png", stem)


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)


def test_a_split_becomes_one_png_per_label_map_and_a_results_page(city, checkpoints, capsys,
                                                                  tmp_path):
    code, out, _ = run(["--name", "plain", "--checkpoints_dir", checkpoints, "--dataroot", city,
                        "--phase", "test", "--results_dir", tmp_path, "--num_workers", 0,
                        "--device", "cpu"], capsys)
    assert code == 0 and re.search(r"synthesized 2 images on cpu: [\d.]+ images/s", out)
    page = tmp_path / "plain" / "test_latest"
    page_html = (page / "index.html").read_text()
    for index in range(2):
        *_, stem = triplet(city, index)
        for kind in ("label", "synthesized", "real"):
            assert Image.open(page / "images" / f"{stem}_{kind}.png").size == (64, 32)
            assert f'src="images/{stem}_{kind}.png"' in page_html
    assert page_html.count("<tr>") == 3  # a header row and one row per image

    # the synthesized PNG is G's output (to 8-bit rounding), the real PNG the photo
    model = infer.load_model(checkpoints / "plain" / "latest.pt")
    item = infer.inference_dataset(model.opt, city, "test")[0]
    with torch.inference_mode():
        fake = infer.synthesize(model, item["label"][None], item["inst"][None])[0]
    expected = np.asarray(data.tensor_to_image(fake), dtype=np.int64)
    *_, photo, stem = triplet(city, 0)
    assert np.array_equal(pixels(page / "images" / f"{stem}_synthesized.png"), expected)
    assert np.array_equal(pixels(page / "images" / f"{stem}_real.png"), pixels(photo))


def test_one_label_map_from_files_matches_the_split(city, checkpoints, capsys, tmp_path):
    label, inst, _, stem = triplet(city, 1)
    split = tmp_path / "split"
    run(["--name", "plain", "--checkpoints_dir", checkpoints, "--dataroot", city,
         "--results_dir", split, "--num_workers", 0, "--device", "cpu"], capsys)
    code, out, _ = run(["--name", "plain", "--checkpoints_dir", checkpoints, "--label", label,
                        "--inst", inst, "--out", tmp_path / "one.png", "--device", "cpu"], capsys)
    assert code == 0 and "wrote" in out
    assert np.array_equal(pixels(tmp_path / "one.png"),
                          pixels(split / "plain" / "test_latest" / "images" /
                                 f"{stem}_synthesized.png"))


def test_instance_features_from_E_or_from_seeded_cluster_draws(city, checkpoints, capsys,
                                                               tmp_path):
    label, inst, photo, _ = triplet(city, 0)
    flags = ["--name", "feat", "--checkpoints_dir", checkpoints, "--device", "cpu",
             "--label", label, "--inst", inst]
    # encoded: E on the photo; without the photo it is a one-line error
    assert run([*flags, "--image", photo, "--feature_source", "encoded", "--out",
                tmp_path / "encoded.png"], capsys)[0] == 0
    code, _, err = run([*flags, "--feature_source", "encoded", "--out", tmp_path / "x.png"],
                       capsys)
    assert code == 2 and "needs the real photo" in err and len(err.strip().splitlines()) == 1

    # clusters: a cluster file with widely spread centres for every class but people
    g = torch.Generator().manual_seed(0)
    centers = {c: 3 * torch.randn(6, 3, generator=g) for c in range(35) if c != 24}
    cluster_file = tmp_path / "clusters.npz"
    infer.save_clusters(cluster_file, centers, feat_num=3, label_nc=35)
    drawn = []
    for seed in (0, 0, 1):
        out = tmp_path / f"clusters_{len(drawn)}.png"
        code, stdout, _ = run([*flags, "--feature_source", "clusters", "--cluster_file",
                               cluster_file, "--seed", seed, "--out", out], capsys)
        assert code == 0
        drawn.append(pixels(out))
    assert np.array_equal(drawn[0], drawn[1])  # a seed fixes the draw
    assert not np.array_equal(drawn[0], drawn[2])
    if (np.asarray(Image.open(inst)) // 1000 == 24).any():
        assert "class 24 (person) has no clusters" in stdout

    # a cluster file made for another encoder width is refused
    infer.save_clusters(cluster_file, {26: torch.zeros(2, 4)}, feat_num=4, label_nc=35)
    code, _, err = run([*flags, "--feature_source", "clusters", "--cluster_file", cluster_file,
                        "--out", tmp_path / "x.png"], capsys)
    assert code == 2 and "made with feat_num 4" in err


def test_missing_checkpoint_is_one_line(checkpoints, city, capsys):
    code, _, err = run(["--name", "nothing_here", "--checkpoints_dir", checkpoints,
                        "--dataroot", city], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no checkpoint there" in err


# ---------------------------------------------------------------------------------------------
# NVIDIA's released generators, in their official layout
# ---------------------------------------------------------------------------------------------

def official_state_dict(network, seed=0):
    """A state_dict with every key and shape of an official network (the layout file lists those
    of the released checkpoints), random values."""
    layout = json.loads(LAYOUT.read_text())["networks"][network]
    g = torch.Generator().manual_seed(seed)
    return {key: 0.02 * torch.randn(shape, generator=g) for key, shape in layout["keys"]}


@pytest.fixture(scope="module")
def official_1024p(tmp_path_factory):
    """latest_net_G.pth of label2city_1024p at its real shapes: 182.9 M parameters, a 730 MB
    file written once (about 5 s), in the official key layout; deleted after the module."""
    path = tmp_path_factory.mktemp("label2city_1024p", numbered=False) / "latest_net_G.pth"
    torch.save(official_state_dict("G_local_1024p"), path)
    yield path
    path.unlink()


def test_official_1024p_generator_synthesizes_a_cityscapes_split(official_1024p, capsys,
                                                                  tmp_path):
    if not CITYSCAPES.is_dir():
        pytest.skip(f"{CITYSCAPES} absent (../shared is not part of a fresh clone)")
    code, out, _ = run(["--official_checkpoint", official_1024p, "--netG", "local", "--ngf", 32,
                        "--dataroot", CITYSCAPES, "--phase", "train", "--how_many", 1,
                        "--loadSize", 256, "--resize_or_crop", "scale_width",
                        "--results_dir", tmp_path, "--num_workers", 0, "--device", "cpu"], capsys)
    assert code == 0 and "synthesized 1 images" in out
    images = tmp_path / "label2city_1024p" / "train_latest" / "images"
    [synthesized] = images.glob("*_synthesized.png")
    assert Image.open(synthesized).size == (256, 128)  # 2048x1024 scaled to width 256


def test_official_1024p_generator_runs_on_label_and_instance_files(official_1024p, capsys,
                                                                    tmp_path):
    """The label and instance maps of a released Cityscapes frame when ../shared has them, else
    a synthetic-city map (Cityscapes ids too); the file's own size with --resize_or_crop none."""
    if CITYSCAPES.is_dir():
        label = sorted((CITYSCAPES / "train_label").iterdir())[0]
        inst = sorted((CITYSCAPES / "train_inst").iterdir())[0]
        flags, size = ["--loadSize", 128, "--resize_or_crop", "scale_width"], (128, 64)
    else:
        root = synthetic_city.make_synthetic_city(tmp_path / "city", n_train=1, n_test=0, width=96,
                                                  height=64)
        label = next((root / "train_label").iterdir())
        inst = next((root / "train_inst").iterdir())
        flags, size = [], (96, 64)
    code, _, _ = run(["--official_checkpoint", official_1024p, "--label", label, "--inst", inst,
                      "--out", tmp_path / "out.png", "--device", "cpu", *flags], capsys)
    assert code == 0
    assert Image.open(tmp_path / "out.png").size == size


def test_official_checkpoint_that_is_not_a_weights_file_is_one_line(capsys, tmp_path):
    """A half-downloaded or mistaken file: one line naming it, not torch.load's traceback."""
    path = tmp_path / "latest_net_G.pth"
    path.write_text("<html>404 Not Found</html>")
    code, _, err = run(["--official_checkpoint", path, "--label", path, "--out",
                        tmp_path / "x.png", "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{path}: not a readable checkpoint" in err


def test_official_checkpoint_of_another_network_is_one_line(capsys, tmp_path):
    """The released encoder E given as a --netG global generator: the keys do not fit."""
    path = tmp_path / "latest_net_E.pth"
    torch.save(official_state_dict("E"), path)
    code, _, err = run(["--official_checkpoint", path, "--netG", "global", "--label", path,
                        "--out", tmp_path / "x.png", "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "does not fit this GlobalGenerator" in err
