"""Claims about manipulate.py, the semantic manipulation of sec. 3.4: K-means recovers appearance
modes, an instance can be chosen three ways, restyling one instance changes that instance more
than the rest, galleries draw every cluster, and every user mistake is one line.

The end-to-end claims use the tiny model trained with --instance_feat on a tiny synthetic city
that conftest.py shares (``feature_run``), after ``encode``. How well its clusters find the true
styles is test_synthetic_city.py's claim.
"""

import re

import numpy as np
import pytest
import torch
from PIL import Image

import infer
import manipulate
import runs
import train
from conftest import TINY_FEAT, run_command
from manipulate import kmeans


# ---------------------------------------------------------------------------------------------
# K-means: pure functions
# ---------------------------------------------------------------------------------------------

def blobs(seed=0, n=40, spread=0.3):
    """Five well-separated Gaussian blobs in 3-D (centres 5 apart, sd 0.3) and their labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0., 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5], [5, 5, 5]])
    truth = torch.arange(5).repeat_interleave(n)
    return centres[truth] + spread * torch.randn(len(truth), 3, generator=g), truth, centres


def test_kmeans_recovers_well_separated_blobs_exactly():
    x, truth, centres = blobs()
    result = kmeans(x, 5, torch.Generator().manual_seed(0))
    # the true partition up to renaming: five (cluster, blob) pairs, five distinct clusters
    pairs = set(zip(result.assignment.tolist(), truth.tolist()))
    assert len(pairs) == 5 and len({cluster for cluster, _ in pairs}) == 5
    # each found centre is the mean of one blob, so within a few sd / sqrt(40) of the true centre
    order = result.centers[:, None].sub(centres[None].double()).norm(dim=-1).argmin(dim=1)
    assert sorted(order.tolist()) == [0, 1, 2, 3, 4]
    assert (result.centers - centres[order].double()).norm(dim=1).max() < 0.3
    assert result.inertia == pytest.approx(
        sum(float(((x[truth == k] - x[truth == k].mean(0)) ** 2).sum()) for k in range(5)),
        rel=1e-6)


def test_kmeans_is_deterministic_for_a_seed():
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(1))  # no structure
    a = kmeans(x, 10, torch.Generator().manual_seed(7))
    b = kmeans(x, 10, torch.Generator().manual_seed(7))
    assert torch.equal(a.centers, b.centers) and torch.equal(a.assignment, b.assignment)


def test_kmeans_assignment_is_nearest_centre_and_centres_are_means():
    """The fixed point of Lloyd's iterations: both conditions of a K-means optimum hold."""
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(2))
    r = kmeans(x, 6, torch.Generator().manual_seed(0))
    assert torch.equal(r.assignment, manipulate.nearest_cluster(x, r.centers))
    for k in range(6):
        assert torch.allclose(r.centers[k], x[r.assignment == k].double().mean(0))


def test_kmeans_inertia_not_worse_than_scikit_learn():
    sklearn_cluster = pytest.importorskip("sklearn.cluster", reason="scikit-learn not installed")
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(3))
    ours = kmeans(x, 10, torch.Generator().manual_seed(0))
    theirs = sklearn_cluster.KMeans(n_clusters=10, n_init=4, random_state=0).fit(x.numpy())
    assert ours.inertia <= theirs.inertia_ * 1.01


def test_kmeans_uses_fewer_clusters_when_fewer_distinct_points():
    x = torch.tensor([[0., 0], [0, 0], [1, 1], [1, 1], [2, 2]])
    r = kmeans(x, 10, torch.Generator().manual_seed(0))
    assert len(r.centers) == 3 and r.inertia == 0.0


def test_lloyd_refills_an_empty_cluster():
    x, truth, _ = blobs(n=10)
    start = torch.tensor([[0., 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 5], [100, 100, 100]]).double()
    r = manipulate.lloyd(x.double(), start)
    assert torch.bincount(r.assignment, minlength=5).min() > 0


# ---------------------------------------------------------------------------------------------
# Choosing an instance: pure
# ---------------------------------------------------------------------------------------------

def toy_instance_map():
    """(1, 1, 4, 6): road (7) on the left, cars 26000 and 26002 and a person 24000 on the right."""
    inst = torch.full((4, 6), 7)
    inst[0:2, 3:5] = 26002
    inst[2:4, 3:5] = 26000
    inst[:, 5] = 24000
    return inst.reshape(1, 1, 4, 6)


def test_select_instance_by_id_by_class_index_and_by_pixel():
    inst = toy_instance_map()
    assert manipulate.select_instance(inst, instance_id=26002) == 26002
    assert manipulate.select_instance(inst, instance="car:0") == 26000  # by increasing id
    assert manipulate.select_instance(inst, instance="car:1") == 26002
    assert manipulate.select_instance(inst, instance="26:1") == 26002
    assert manipulate.select_instance(inst, instance="road:0") == 7
    assert manipulate.select_instance(inst, at=(3, 0)) == 26002  # x = column, y = row
    assert manipulate.select_instance(inst, at=(5, 3)) == 24000


@pytest.mark.parametrize("how, expected", [
    (dict(instance_id=26001), r"no such instance.*7 road 12 px, 24000 person 4 px, 26000 car 4 px"),
    (dict(instance="car:2"), r"2 instance\(s\) of class 26 \(car\)"),
    (dict(instance="spaceship:0"), r"unknown class 'spaceship'"),
    (dict(at=(6, 0)), r"outside the 6x4 map"),
    (dict(instance_id=7, at=(0, 0)), r"choose the instance one way"),
])
def test_select_instance_errors_say_what_the_map_holds(how, expected):
    with pytest.raises(runs.UserError, match=expected):
        manipulate.select_instance(toy_instance_map(), **how)


def test_set_instance_feature_touches_only_that_instance():
    inst = toy_instance_map()
    features = torch.randn(1, 3, 4, 6)
    edited = manipulate.set_instance_feature(features, inst, 26000, torch.tensor([1., 2, 3]))
    mask = (inst == 26000).expand_as(features)
    assert torch.equal(edited[~mask], features[~mask])
    assert torch.equal(edited[:, :, 2, 3], torch.tensor([[1., 2, 3]]))


def test_change_inside_outside_in_8bit_levels():
    before = torch.zeros(1, 3, 8, 8)
    after = before.clone()
    after[..., 2:4, 2:4] = 1.0   # +127.5 levels inside the instance
    after[..., 7, 7] = 2 / 127.5  # 2 levels far away
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 2:4, 2:4] = True
    change = manipulate.change_inside_outside(before, after, mask, near=1)
    assert change["inside"] == pytest.approx(127.5)
    assert change["near"] == 0.0 and change["far"] == pytest.approx(2 / (64 - 16))
    assert change["outside"] == pytest.approx(2 / 60)


def test_only_instances_above_the_size_threshold_are_clustered():
    """Official encode_features: keep an instance when pixels / (H W / 32) > 0.5."""
    features = torch.tensor([[0., 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]])
    instances = manipulate.Instances(
        stems=["a", "a", "b", "b"], ids=torch.tensor([26000, 26001, 26000, 7]),
        classes=torch.tensor([26, 26, 26, 7]), features=features,
        area=torch.tensor([0.3125, 0.5, 0.9375, 14.0]))
    centers, counts, kept = manipulate.cluster_classes(instances, n_clusters=10, min_area=0.5)
    assert kept == {7: 1, 26: 1}  # area 0.5 is not above the threshold
    assert torch.equal(centers[26], torch.tensor([[2., 2, 2]]))
    assert counts[26].tolist() == [1]


# ---------------------------------------------------------------------------------------------
# End to end on a tiny synthetic city
# ---------------------------------------------------------------------------------------------

def run(argv, capsys):
    """manipulate.main(argv) -> (exit code, stdout, stderr); a user error must be one line."""
    return run_command(manipulate.main, argv, capsys)


@pytest.fixture(scope="module")
def trained(feature_run):
    return feature_run


@pytest.fixture(scope="module")
def city(feature_run):
    return feature_run["city"]


@pytest.fixture(scope="module")
def plain(city, tmp_path_factory):
    """A checkpoint trained without --instance_feat: it has no encoder E."""
    ckpt = tmp_path_factory.mktemp("plain")
    train.main(["--dataroot", str(city), "--checkpoints_dir", str(ckpt), "--name", "plain",
                "--max_iters", "1", *TINY_FEAT])
    return ckpt


def first_car(city):
    """(instance id, (x, y) of one of its pixels, pixel count) of test image 0's first car."""
    inst = np.asarray(Image.open(sorted((city / "test_inst").iterdir())[0]), dtype=np.int64)
    car = int(min(i for i in np.unique(inst) if i // 1000 == 26))
    ys, xs = np.nonzero(inst == car)
    return car, (int(xs[len(xs) // 2]), int(ys[len(ys) // 2])), len(xs)


def test_encode_writes_at_most_10_centres_per_class(trained):
    with np.load(trained["clusters"], allow_pickle=False) as f:
        classes = f["class_ids"].tolist()
        assert {7, 26} <= set(classes)  # road and car
        for c in classes:
            K = len(f[f"centers_{c}"])
            assert 1 <= K <= 10 and f[f"counts_{c}"].sum() >= K  # every cluster has a member
            assert f[f"centers_{c}"].shape[1] == 3  # feat_num
        assert int(f["feat_num"]) == 3 and int(f["label_nc"]) == 35


@pytest.mark.parametrize("how", ["id", "class_index", "pixel"])
def test_restyle_chooses_an_instance_three_ways(trained, city, capsys, tmp_path, how):
    car, (x, y), pixels = first_car(city)
    choice = {"id": ["--instance_id", car], "class_index": ["--instance", "car:0"],
              "pixel": ["--at", f"{x},{y}"]}[how]
    out = tmp_path / "restyle.png"
    code, stdout, _ = run(["restyle", *trained["flags"], "--dataroot", city, "--index", 0,
                           *choice, "--cluster", 0, "--out", out], capsys)
    assert code == 0
    assert f"instance {car} (car, {pixels} px) -> cluster 0" in stdout
    inside, outside = map(float, re.search(r"inside ([\d.]+), outside ([\d.]+)", stdout).groups())
    assert inside > outside
    assert Image.open(out).size == (128, 32)  # before | after
    mask = np.asarray(Image.open(tmp_path / "restyle_mask.png"))
    assert mask.shape == (32, 64) and set(np.unique(mask)) <= {0, 255}


def test_gallery_draws_one_instance_with_every_cluster_of_its_class(trained, city, capsys,
                                                                    tmp_path):
    car, _, _ = first_car(city)
    with np.load(trained["clusters"]) as f:
        K = len(f["centers_26"])
    out = tmp_path / "gallery.png"
    code, stdout, _ = run(["gallery", *trained["flags"], "--dataroot", city, "--index", 0,
                           "--instance_id", car, "--columns", K + 1, "--out", out], capsys)
    assert code == 0 and f"with its class's {K} clusters" in stdout
    sheet = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
    assert sheet.shape == (32, 64 * (K + 1), 3)  # the highlighted label map, then K tiles
    tiles = [sheet[2:, 64 * (k + 1):64 * (k + 2)] for k in range(K)]  # below the captions
    # different centres give different cars: every pair of tiles differs somewhere
    for a in range(K):
        for b in range(a + 1, K):
            assert np.abs(tiles[a] - tiles[b]).max() > 0


def test_list_prints_ids_class_names_and_pixel_counts(trained, city, capsys):
    car, _, pixels = first_car(city)
    code, stdout, _ = run(["restyle", *trained["flags"], "--dataroot", city, "--index", 0,
                           "--list"], capsys)
    assert code == 0
    assert re.search(rf"^\s*{car}\s+car\s+{pixels} px$", stdout, re.M)
    assert re.search(r"^\s*7\s+road\s+\d+ px$", stdout, re.M)


def test_instance_id_not_in_the_map_is_one_line_listing_the_map(trained, city, capsys):
    code, _, err = run(["restyle", *trained["flags"], "--dataroot", city, "--index", 0,
                        "--instance_id", 26099], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--instance_id 26099: no such instance" in err and "7 road" in err


def test_class_without_clusters_is_one_line(trained, city, capsys, tmp_path):
    only_road = tmp_path / "road_only.npz"
    infer.save_clusters(only_road, {7: torch.zeros(2, 3)}, feat_num=3, label_nc=35)
    code, _, err = run(["restyle", *trained["flags"], "--dataroot", city, "--index", 0,
                        "--instance", "car:0", "--cluster_file", only_road], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "class 26 (car) has no clusters" in err and "7 road" in err


def test_cluster_file_of_another_feat_num_is_one_line(trained, city, capsys, tmp_path):
    other = tmp_path / "feat4.npz"
    infer.save_clusters(other, {26: torch.zeros(2, 4)}, feat_num=4, label_nc=35)
    code, _, err = run(["gallery", *trained["flags"], "--dataroot", city, "--index", 0,
                        "--instance", "car:0", "--cluster_file", other], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "made with feat_num 4, label_nc 35, but this model has feat_num 3" in err


def test_checkpoint_without_encoder_is_one_line(plain, city, capsys):
    code, _, err = run(["encode", "--name", "plain", "--checkpoints_dir", plain, "--dataroot",
                        city, "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "has no encoder E" in err and "--instance_feat" in err
