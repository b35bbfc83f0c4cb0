"""Claims about synthetic_city.py: the city is deterministic, records the style it renders,
loads as a dataset, is written atomically; and the measurements against its known answers
(purity, adjusted Rand index, the restyle change) are right by hand and show sec. 3.4's claims on
a tiny trained model."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import data
import edits
import synthetic_city
from conftest import run_command
from synthetic_city import adjusted_rand_index, purity


def all_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_city_is_deterministic_from_its_seed(tmp_path):
    cities = [all_bytes(synthetic_city.make_synthetic_city(tmp_path / name, n_train=3, n_test=1,
                                                         width=64, height=32, seed=seed))
            for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert len(cities[0]) == 3 * 4 + 1  # 3 + 1 triplets and styles.json
    assert cities[0] == cities[1]
    photo = Path("train_img/synth_000000_000019_leftImg8bit.png")
    assert cities[0][photo] != cities[2][photo]


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return synthetic_city.make_synthetic_city(tmp_path_factory.mktemp("city") / "city", n_train=16,
                                              n_test=2)


def test_synthetic_city_records_the_style_that_is_rendered(city):
    """Every instance id of every map has a style of its class, and the photo shows it: the median
    colour of each car, person and road is nearest to its recorded style's colour."""
    styles = json.loads((city / "styles.json").read_text())
    table = styles.pop("styles")
    seen = {synthetic_city.CAR: set(), synthetic_city.PERSON: set(), synthetic_city.ROAD: set()}
    for stem, recorded in styles.items():
        phase = "train" if stem.startswith("synth_") else "test"
        label = np.asarray(Image.open(city / f"{phase}_label/{stem}_gtFine_labelIds.png"))
        inst = np.asarray(Image.open(city / f"{phase}_inst/{stem}_gtFine_instanceIds.png"))
        inst = inst.astype(int)
        photo = np.asarray(Image.open(city / f"{phase}_img/{stem}_leftImg8bit.png")).astype(float)
        assert sorted(map(int, recorded)) == np.unique(inst).tolist()
        objects = inst >= 1000
        assert np.array_equal(inst[objects] // 1000, label[objects])
        assert np.array_equal(inst[~objects], label[~objects])  # stuff: instance id = label id
        for key, style in recorded.items():
            c = data.instance_class(int(key))
            assert style in table[str(c)]["names"]
            if c in seen:
                median = np.median(photo[inst == int(key)], axis=0)
                rgb = np.array(table[str(c)]["rgb"])
                nearest = table[str(c)]["names"][((rgb - median) ** 2).sum(1).argmin()]
                assert nearest == style, (stem, key)
                seen[c].add(style)
    assert seen[synthetic_city.CAR] == {"red", "blue", "white", "black"}
    assert seen[synthetic_city.ROAD] == {"asphalt", "cobblestone"}
    assert len(seen[synthetic_city.PERSON]) == 3


def test_synthetic_city_loads_as_a_pix2pixhd_dataset(city):
    styles = json.loads((city / "styles.json").read_text())
    for phase, n in (("train", 16), ("test", 2)):
        dataset = data.PairedDataset(city, phase, load_size=256, size_multiple=16)
        assert len(dataset) == n and set(dataset.stems) <= set(styles)
        item = dataset[0]
        assert item["label"].shape == (1, 128, 256) and item["image"].shape == (3, 128, 256)
        assert item["has_image"] and int(item["label"].max()) < 35


def test_write_command_writes_the_city(tmp_path, capsys):
    synthetic_city.main(["write", str(tmp_path / "c"), "--n_train", "2", "--n_test", "1",
                         "--width", "64", "--height", "32", "--seed", "3"])
    assert len(list((tmp_path / "c" / "train_img").glob("*_leftImg8bit.png"))) == 2
    inst = Image.open(tmp_path / "c/test_inst/synthtest_000000_000019_gtFine_instanceIds.png")
    assert inst.size == (64, 32) and inst.mode.startswith("I")  # 16-bit ids
    assert "2 training and 1 test scenes" in capsys.readouterr().out


def test_write_refuses_a_folder_that_already_holds_files(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("keep me")
    code, _, err = run_command(synthetic_city.main, ["write", tmp_path / "c", "--n_train", "1",
                                                     "--n_test", "0"], capsys)
    assert code == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "c" / "mine.txt").read_text() == "keep me"


def test_an_interrupted_write_leaves_no_half_city_and_the_next_write_completes(tmp_path,
                                                                              monkeypatch):
    calls, render = [], synthetic_city.render_scene

    def render_then_fail_on_the_second_scene(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return render(*args)

    monkeypatch.setattr(synthetic_city, "render_scene", render_then_fail_on_the_second_scene)
    with pytest.raises(KeyboardInterrupt):
        synthetic_city.make_synthetic_city(tmp_path / "c", n_train=3, n_test=0, width=32,
                                           height=16)
    assert not (tmp_path / "c").exists()  # only c.partial, which the next write replaces
    monkeypatch.setattr(synthetic_city, "render_scene", render)
    synthetic_city.make_synthetic_city(tmp_path / "c", n_train=3, n_test=0, width=32, height=16)
    assert len(list((tmp_path / "c" / "train_img").iterdir())) == 3
    assert not (tmp_path / "c.partial").exists()


# ---------------------------------------------------------------------------------------------
# Purity and the adjusted Rand index: pure functions
# ---------------------------------------------------------------------------------------------

def test_purity_and_adjusted_rand_index_by_hand():
    # clusters {0,0 | 1 | 2} vs truth {a,a | b,b}: purity 1, ARI (1 - 1/3) / (3/2 - 1/3) = 4/7
    assert purity([0, 0, 1, 2], ["a", "a", "b", "b"]) == 1.0
    assert adjusted_rand_index([0, 0, 1, 2], ["a", "a", "b", "b"]) == pytest.approx(4 / 7)
    # renaming clusters changes nothing; one merged cluster has purity = the majority share
    assert adjusted_rand_index([1, 1, 0, 0], [0, 0, 1, 1]) == 1.0
    assert purity([0, 0, 0, 0], [0, 0, 0, 1]) == 0.75
    # the worst split of 2 x 2 points is below chance
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    # one point: no pair to disagree about, as scikit-learn
    assert adjusted_rand_index([3], ["a"]) == 1.0


def test_adjusted_rand_index_is_near_zero_for_unrelated_partitions():
    g = np.random.default_rng(0)
    scores = [adjusted_rand_index(g.integers(0, 4, 400), g.integers(0, 3, 400)) for _ in range(20)]
    assert abs(np.mean(scores)) < 0.01


# ---------------------------------------------------------------------------------------------
# Sec. 3.4 measured on a tiny trained model
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(feature_run, tmp_path_factory):
    """``python synthetic_city.py evaluate`` on the shared tiny model, its numbers as JSON."""
    path = tmp_path_factory.mktemp("evaluation") / "evaluation.json"
    synthetic_city.main(["evaluate", *feature_run["flags"], "--dataroot",
                         str(feature_run["city"]), "--n_restyle", "3", "--json", str(path)])
    return json.loads(path.read_text())


def test_car_clusters_follow_the_true_car_colours(report):
    """Sec. 3.4's premise on the synthetic city, whose cars come in 4 colours: after a short
    training, K-means on E's features groups cars by colour clearly better than chance. Loose
    thresholds for a tiny model trained 150 iterations (the README has a longer run)."""
    car = report["clusters"]["car"]
    assert car["styles"] == 4 and car["instances"] >= 30
    assert car["ari_k_styles"] > 0.1  # 0 is chance
    assert car["purity_k_styles"] > car["majority"] + 0.1  # the majority colour is the baseline


def test_restyling_a_car_changes_the_car_far_more_than_the_rest(report):
    change = report["restyle"]
    assert change["inside"] > 3 * change["outside"]
    assert change["near"] > change["far"]  # what leaks out stays mostly near the car


def test_evaluate_without_styles_json_is_one_line(feature_run, tmp_path, capsys):
    code, _, err = run_command(synthetic_city.main, ["evaluate", *feature_run["flags"],
                                                     "--dataroot", tmp_path], capsys)
    assert code == 2 and "styles.json not found" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# The editor's edits measured (synthetic_city.py edits)
# ---------------------------------------------------------------------------------------------

def test_reference_colours_tell_the_recorded_car_colours_apart(city):
    """The yardstick of ``edits``: the nearest reference colour of a car's mean colour in the
    renderer's own photo is its own recorded class and style, for nearly every car."""
    dataset = data.PairedDataset(city, "train", load_size=128, resize_or_crop="none",
                                 is_train=False)
    styles = json.loads((city / "styles.json").read_text())
    references = synthetic_city.reference_colours(dataset, styles)
    hits = total = 0
    for index in range(len(dataset)):
        item = dataset[index]
        for key, style in styles[dataset.stems[index]].items():
            if int(key) // 1000 == synthetic_city.CAR:
                mask = item["inst"][0] == int(key)
                rgb = ((item["image"][:, mask] + 1) * 127.5).mean(dim=1).numpy()
                hits += synthetic_city.nearest_reference(rgb, references) == (26, style)
                total += 1
    assert total >= 20 and hits / total > 0.9


def test_centre_of_puts_a_pasted_object_back_exactly_where_it_was(city):
    inst = np.asarray(Image.open(sorted((city / "train_inst").iterdir())[0]), dtype=np.int64)
    label = np.asarray(Image.open(sorted((city / "train_label").iterdir())[0]), dtype=np.int64)
    car = int(min(i for i in np.unique(inst) if i // 1000 == 26))
    removed_label, removed_inst, _ = edits.remove(label, inst, car)
    _, pasted, new_id = edits.paste(removed_label, removed_inst, label, inst, car,
                                    synthetic_city.centre_of(inst == car))
    assert np.array_equal(pasted == new_id, inst == car)


def test_edits_change_the_edited_region_far_more_than_the_rest(feature_run, tmp_path, capsys):
    path = tmp_path / "edits.json"
    code, out, err = run_command(synthetic_city.main, [
        "edits", *feature_run["flags"], "--dataroot", feature_run["city"], "--n_images", 2,
        "--relabel_to", "sidewalk", "--json", path], capsys)
    assert code == 0, err
    assert "| relabel a car to sidewalk | 2 |" in out
    report = json.loads(path.read_text())
    assert set(report) == {"remove", "relabel", "paste"}
    for kind, r in report.items():
        assert r["images"] == 2 and r["inside"] > 2 * r["outside"], kind
        assert 0 <= r["new_class"] <= 1
