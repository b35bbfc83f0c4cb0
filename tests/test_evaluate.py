"""Claims about evaluate.py and ablations.py, the measurements of what was synthesized: the
Fréchet distance against closed forms, FID of a set against itself, mean IoU and accuracy against
hand-computed confusion matrices (ignored ids, classes absent from a split), the Cityscapes train
ids, every segmenter format through a file (random weights, no download), the synthetic city's
segmenter, a trained model scoring above its untrained twin, and validation during training.
"""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_fid.inception
import torch
import torchvision
from torch import nn

import ablations
import data
import evaluate
import runs
import train
import train_machinery
from conftest import TINY_FEAT, run_command


# ---------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------

def test_frechet_distance_of_two_gaussians_equals_the_closed_form():
    # N([0, 0], diag(1, 4)) and N([1, 2], diag(4, 1)): |mu diff|^2 = 5, and per axis
    # s1 + s2 - 2 sqrt(s1 s2) = 1 + 4 - 4 = 1, twice: d^2 = 7, whatever common rotation.
    mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, 2.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    assert evaluate.frechet_distance((mu1, s1), (mu2, s2)) == pytest.approx(7.0)
    c, s = math.cos(0.7), math.sin(0.7)
    R = np.array([[c, -s], [s, c]])
    rotated = evaluate.frechet_distance((R @ mu1, R @ s1 @ R.T), (R @ mu2, R @ s2 @ R.T))
    assert rotated == pytest.approx(7.0)


def test_confusion_matrix_and_scores_by_hand():
    # true:      0  0  1  1  2  ignored; predicted: 0  1  1  1  0  3 (on the ignored pixel)
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    prediction = torch.tensor([0, 1, 1, 1, 0, 3])
    confusion = evaluate.confusion_matrix(prediction, target, n_classes=4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    scores = evaluate.segmentation_scores(confusion)
    # IoU: class 0 1 / (1 + 1 + 1), class 1 2 / (2 + 1), class 2 0 / 1; class 3 is absent from
    # the split and never predicted on a scored pixel: no IoU, left out of the mean.
    assert scores["iou"] == pytest.approx([1 / 3, 2 / 3, 0.0, None], nan_ok=True)
    assert scores["iou"][3] is None
    assert scores["mIoU"] == pytest.approx(1 / 3) and scores["accuracy"] == pytest.approx(3 / 5)


def test_a_class_predicted_but_absent_from_the_ground_truth_counts_as_iou_0():
    target, prediction = torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 2])
    scores = evaluate.segmentation_scores(evaluate.confusion_matrix(prediction, target, 3))
    assert scores["iou"][0] == pytest.approx(3 / 4) and scores["iou"][2] == 0.0
    assert scores["mIoU"] == pytest.approx((3 / 4 + 0) / 2)


def test_label_ids_map_to_the_19_cityscapes_train_ids():
    """The Cityscapes benchmark's own definition: road is train id 0, bicycle 18; parking,
    caravan, trailer and the void ids are not evaluated."""
    table = evaluate.cityscapes_train_ids()
    assert len(evaluate.EVAL_CLASSES) == 19
    assert evaluate.EVAL_CLASSES[0] == "road" and evaluate.EVAL_CLASSES[18] == "bicycle"
    assert [table[i].item() for i in (7, 8, 11, 24, 26, 33)] == [0, 1, 2, 11, 13, 18]
    assert [table[i].item() for i in (0, 1, 5, 9, 29, 30, 34)] == [255] * 7


# ---------------------------------------------------------------------------------------------
# Segmenters and the Inception network from files (random weights, no download)
# ---------------------------------------------------------------------------------------------

def test_an_exported_segmenter_round_trips_with_its_input_size_and_range(tmp_path):
    torch.manual_seed(0)
    net = evaluate.SmallSegmenter(input_size=(32, 16)).eval()
    evaluate.save_segmenter(net, tmp_path / "seg.pt2")
    loaded = evaluate.load_segmenter(tmp_path / "seg.pt2")
    assert loaded.size == [32, 16] and not loaded.imagenet_normalize
    images = torch.rand(2, 3, 16, 32) * 2 - 1
    with torch.inference_mode():
        expected = net(images).argmax(dim=1)
    assert torch.equal(loaded(images), expected)


def test_a_torchvision_segmenter_from_a_weights_file(tmp_path):
    net = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=19, aux_loss=True)
    torch.save(net.state_dict(), tmp_path / "deeplab.pth")
    segmenter = evaluate.load_segmenter(tmp_path / "deeplab.pth", "deeplabv3_mobilenet_v3_large",
                                        size=(64, 32))
    assert segmenter.imagenet_normalize
    prediction = segmenter(torch.rand(1, 3, 48, 96) * 2 - 1)
    assert prediction.shape == (1, 48, 96) and int(prediction.max()) < 19


def test_a_torchscript_segmenter_must_say_its_normalisation(tmp_path):
    net = torch.jit.trace(nn.Conv2d(3, 19, 1).eval(), torch.zeros(1, 3, 8, 8))
    net.save(str(tmp_path / "seg.ts"))
    with pytest.raises(evaluate.UserError, match="does not say how its input is normalised"):
        evaluate.load_segmenter(tmp_path / "seg.ts", "torchscript")
    segmenter = evaluate.load_segmenter(tmp_path / "seg.ts", "torchscript", normalize="none")
    assert segmenter(torch.zeros(1, 3, 8, 8)).shape == (1, 8, 8)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """pytorch-fid's FID Inception, randomly initialised, saved under its weights' name. He
    initialisation keeps its 2048 features from vanishing through 94 layers (torchvision's
    default initialisation, meant to be trained, leaves them near 1e-8)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pytorch_fid.inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(torchvision.models.inception.Inception3, "load_state_dict",
                      lambda self, *a, **k: None)
        network = pytorch_fid.inception.fid_inception_v3()
    torch.manual_seed(0)
    for m in network.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / evaluate.INCEPTION_FILE
    torch.save(network.state_dict(), path)
    return path


def test_fid_of_a_set_against_itself_is_0_and_of_another_set_is_not(inception_file):
    inception = evaluate.load_inception(inception_file)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 32, 64, generator=g) * 2 - 1
    a, b, c = (evaluate.InceptionStatistics(inception) for _ in range(3))
    a.add(images)
    b.add(images)
    c.add(-images)
    same, other = evaluate.frechet_distance(a, b), evaluate.frechet_distance(a, c)
    assert abs(same) < 1e-5                       # seeded: -9e-08 (rounding in sqrtm)
    assert other > 1e3 * max(abs(same), 1e-5)     # seeded: 0.14 for this random network
    assert evaluate.frechet_distance(c, a) == pytest.approx(other)  # a distance: symmetric


def test_missing_inception_weights_are_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(evaluate.InceptionWeightsMissing) as err:
        evaluate.load_inception()
    message = str(err.value)
    assert "\n" not in message and evaluate.INCEPTION_FILE in message and "download" in message


# ---------------------------------------------------------------------------------------------
# The synthetic city, end to end
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def segmenter_file(feature_run, tmp_path_factory):
    """The synthetic city's segmenter, trained on the 24 real training photos of the shared
    tiny city for 20 epochs at 64x32 (seconds)."""
    path = tmp_path_factory.mktemp("segmenter") / "segmenter.pt2"
    evaluate.main(["segmenter", "--dataroot", str(feature_run["city"]), "--out", str(path),
                   "--epochs", "20", "--loadSize", "64"])
    return path


def test_the_synthetic_city_segmenter_recovers_the_real_photos_label_maps(feature_run,
                                                                          segmenter_file):
    segmenter = evaluate.load_segmenter(segmenter_file)
    test = data.PairedDataset(feature_run["city"], "test", resize_or_crop="none",
                              size_multiple=4, no_flip=True, is_train=False)
    oracle = evaluate.score_split(evaluate.real_photos, test, segmenter)
    assert oracle["mIoU"] > 0.5 and oracle["accuracy"] > 0.85  # seeded: 0.61 / 0.90


def test_a_trained_model_scores_clearly_above_its_untrained_twin(feature_run, segmenter_file,
                                                                tmp_path, capsys):
    def score(*extra):
        path = tmp_path / f"score{len(extra)}.json"
        code, out, _ = run_command(evaluate.main, [
            "score", *feature_run["flags"], "--dataroot", feature_run["city"],
            "--segmenter", segmenter_file, "--json", path, *extra], capsys)
        assert code == 0 and "mean IoU" in out
        return json.loads(path.read_text())

    trained, untrained, real = score(), score("--untrained"), score("--real")
    assert trained["images"] == untrained["images"] == 3
    assert trained["mIoU"] > untrained["mIoU"] + 0.1
    assert trained["accuracy"] > untrained["accuracy"] + 0.1
    assert real["mIoU"] > trained["mIoU"]  # the oracle stays ahead


def test_validation_during_training_logs_the_score_beside_the_losses(feature_run, segmenter_file,
                                                                    tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (pip install tensorboard)")
    train.main(["--dataroot", str(feature_run["city"]), "--checkpoints_dir", str(tmp_path),
                "--name", "val", *TINY_FEAT, "--niter", "1", "--niter_decay", "1",
                "--val_freq", "1", "--val_segmenter", str(segmenter_file),
                "--val_how_many", "2", "--print_freq", "8", "--tf_log"])
    rows = (tmp_path / "val" / "val_log.csv").read_text().splitlines()
    assert rows[0] == "epoch,iteration,mIoU,accuracy"
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "24"], ["2", "48"]]
    assert all(0 <= float(v) <= 1 for r in rows[1:] for v in r.split(",")[2:])
    assert (tmp_path / "val" / "loss_plot.png").stat().st_size > 0
    events = event_accumulator.EventAccumulator(str(tmp_path / "val" / "logs"))
    events.Reload()
    for column, key in ((2, "mIoU"), (3, "accuracy")):  # TensorBoard holds what the CSV holds
        logged = events.Scalars(f"validation/{key}")
        assert [e.step for e in logged] == [24, 48]
        assert [e.value for e in logged] == pytest.approx(
            [float(r.split(",")[column]) for r in rows[1:]], rel=1e-5)


def test_validation_runs_g_in_eval_mode_and_leaves_batch_norm_statistics_alone(
        feature_run, segmenter_file, tmp_path, capsys):
    """With --norm batch, scoring in train mode would use the split's batch statistics and fold
    them into the running ones: validation would change the model it measures."""
    opt = train.build_parser().parse_args([
        "--dataroot", str(feature_run["city"]), "--instance_feat", "--norm", "batch",
        "--val_freq", "1", "--val_segmenter", str(segmenter_file), *TINY_FEAT])
    torch.manual_seed(0)
    G, _, E = runs.build_networks(opt)
    before = {k: v.clone() for k, v in {**G.state_dict(), **E.state_dict()}.items()}
    procs = SimpleNamespace(is_main=True, device=torch.device("cpu"), use_amp=False)
    validation = train_machinery.Validation(opt, procs, tmp_path)
    validation.score(SimpleNamespace(G=G, E=E, epoch=1, iteration=1), SimpleNamespace(write=print))
    assert "validation on 3 test images" in capsys.readouterr().out
    after = {**G.state_dict(), **E.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics too
    assert G.training and E.training  # back to training


def test_the_ablation_script_trains_and_scores_every_variant_from_every_seed(
        feature_run, segmenter_file, tmp_path, capsys):
    """At a tiny budget (2 iterations), so only that it runs end to end, resumes, and tabulates:
    the numbers themselves are the README's, from the real budget."""
    argv = ["--dataroot", feature_run["city"], "--segmenter", segmenter_file,
            "--checkpoints_dir", tmp_path, "--max_iters", 2, "--seeds", "0,1",
            "--num_workers", 0, "--device", "cpu", "--json", tmp_path / "ablations.json"]
    code, out, _ = run_command(ablations.main, argv, capsys)
    assert code == 0
    rows = json.loads((tmp_path / "ablations.json").read_text())
    assert [(r["variant"], r["seed"]) for r in rows] == [
        (name, seed) for seed in (0, 1) for name, _, _ in ablations.VARIANTS]
    assert all(0 <= r["mIoU"] <= 1 and r["seconds"] > 0 for r in rows)
    table = [line for line in out.splitlines() if line.startswith("| ")][1:]  # past the header
    assert [line.split(" | ")[0][2:] for line in table] == [v[0] for v in ablations.VARIANTS]
    assert all(line.count(" to ") == 2 for line in table)  # mean (min to max) of both scores
    code, out, _ = run_command(ablations.main, argv, capsys)  # done: scored again, not trained
    assert code == 0 and "(trained before)" in out


def test_an_official_checkpoint_has_no_untrained_twin(tmp_path, capsys):
    code, _, err = run_command(evaluate.main, [
        "score", "--official_checkpoint", tmp_path / "latest_net_G.pth", "--untrained",
        "--dataroot", tmp_path, "--fid"], capsys)
    assert code == 2 and "--untrained needs a run of ours" in err


def test_validation_without_a_segmenter_is_refused_before_training(feature_run, tmp_path,
                                                                   capsys):
    code, _, err = run_command(train.main, [
        "--dataroot", feature_run["city"], "--checkpoints_dir", tmp_path, *TINY_FEAT,
        "--val_freq", "1"], capsys)
    assert code == 2 and "--val_freq needs --val_segmenter" in err
    assert not any(tmp_path.iterdir())
