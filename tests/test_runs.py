"""Claims about runs.py, what a run leaves on disk and how a command reports a mistake: a data
error reaches the user with the flag that fixes it, also from a DataLoader worker; the run flags
mean the same in every command; the networks rebuild from a checkpoint's own options."""

import argparse

import pytest
import torch
from torch.utils.data import DataLoader

import data
import infer
import manipulate
import runs
import train


@pytest.mark.parametrize("fix, remedy", [
    (("label_nc", 41), "; or pass --label_nc 41"),
    (("label_nc", 0), "; or pass --label_nc 0"),
    (("no_instance", True), "; or pass --no_instance"),
    (("root", None), "; check --dataroot"),
])
def test_a_data_error_names_the_flag_on_the_command_line_and_the_argument_in_a_library(fix,
                                                                                      remedy):
    err = data.DataError("a.png: something is wrong", fix)
    assert runs.error_line(err) == "a.png: something is wrong" + remedy
    assert "--" not in str(err) and fix[0] in str(err)  # what a copied data.py says


class LabelIdTooLarge(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, index):
        raise data.DataError("x.png: label id 40 >= label_nc 35", fix=("label_nc", 41))


def test_a_data_error_in_a_worker_keeps_its_flag():
    """DataLoader workers pass an exception on as text: the flag is chosen before that."""
    loader = DataLoader(runs.CommandLineErrors(LabelIdTooLarge()), num_workers=1)
    with pytest.raises(runs.UserError) as excinfo:
        next(iter(loader))
    assert runs.error_line(excinfo.value) == ("x.png: label id 40 >= label_nc 35; or pass "
                                              "--label_nc 41")


def test_the_run_flags_mean_the_same_in_every_command():
    argv = ["--name", "x", "--checkpoints_dir", "c", "--which_epoch", "3", "--device", "cpu",
            "--amp", "--seed", "5"]
    expected = {"name": "x", "checkpoints_dir": "c", "which_epoch": "3", "device": "cpu",
                "amp": True, "seed": 5}
    parsers = {"train": train.build_parser(), "infer": infer.build_parser()}
    for command in ("encode", "restyle", "gallery"):
        parsers[command] = argparse.ArgumentParser()
        manipulate.add_model_options(parsers[command])
    for name, parser in parsers.items():
        opt = vars(parser.parse_known_args(argv)[0])
        assert {k: opt[k] for k in expected} == expected, name


def test_networks_rebuild_from_a_checkpoints_options_dict():
    opt = train.build_parser().parse_args(["--ngf", "4", "--n_downsample_global", "2",
                                           "--n_blocks_global", "1", "--ndf", "4", "--num_D", "2",
                                           "--instance_feat", "--nef", "4"])
    torch.manual_seed(0)
    G, D, E = runs.build_networks(opt)
    torch.manual_seed(0)
    G2, D2, E2 = runs.build_networks(vars(opt))
    for a, b in ((G, G2), (D, D2), (E, E2)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                     b.state_dict().values()))
    assert G.front.stem.conv.in_channels == 35 + 1 + 3  # labels, boundary map, E's features
    assert D.D[0].layers[0].conv.in_channels == 35 + 1 + 3  # labels, boundary map, image
    assert runs.size_multiple(opt) == 2 ** 4  # E's 4 downsamplings outnumber G1's 2


def test_checkpoint_names():
    assert runs.checkpoint_file("c/run").as_posix() == "c/run/latest.pt"
    assert runs.checkpoint_file("c/run", "20").as_posix() == "c/run/epoch_20.pt"
