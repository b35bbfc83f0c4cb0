"""Issue 11, "nothing lost, nothing silently wrong": every bad input a hostile but realistic user
can give the four commands, through their real command lines.

One table, one claim per row. Each bad input, given to ``train.py``, ``infer.py``,
``manipulate.py`` or ``synthetic_city.py`` (their ``main(argv)``, in this process, with
``sys.argv[0]`` the script's name as on a real command line):

* ends with a non-zero exit code;
* writes exactly one line of the program's own on stderr (``train.py: ...``; tqdm's progress
  bar is the only other thing allowed there), and no traceback;
* that line names the flag or the file, and matches the row's pattern;
* changes nothing on disk: every file and folder the row made (a copied run folder, a copied
  dataset, files in the way) holds the same bytes afterwards, and nothing new appears, not even
  an empty run folder. A failed command is as if it never ran.

The rows run on a tiny synthetic city (3 training scenes and 1 test scene of 64x32) and on three
tiny runs of 2 iterations made once for the module: ``plain`` (no instance features),
``feat`` (``--instance_feat``, then ``manipulate.py encode``) and ``other`` (the same with
another seed: another model, whose cluster file means other features).
"""

import functools
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

import infer
import manipulate
import synthetic_city
import train
from conftest import run_command, tree

TINY = ["--loadSize", "64", "--ngf", "8", "--n_downsample_global", "2", "--n_blocks_global", "1",
        "--ndf", "8", "--num_D", "1", "--nef", "8", "--no_vgg_loss", "--num_workers", "0",
        "--device", "cpu", "--print_freq", "1000", "--display_freq", "1000", "--seed", "0"]

# Each command's main() and the script name it runs as (argparse names it in its errors).
PROGRAMS = {"train": (train.main, "train.py"), "infer": (infer.main, "infer.py"),
            "manipulate": (manipulate.main, "manipulate.py"),
            "synthetic_city": (synthetic_city.main, "synthetic_city.py")}

TQDM_LINE = re.compile(r"\|\s*\d+/\d+ \[")  # "epoch 1/200:  33%|###  | 1/3 [00:01<00:03, ..."


# ---------------------------------------------------------------------------------------------
# Running a command, and what it left
# ---------------------------------------------------------------------------------------------

def run_program(program, argv, monkeypatch, capsys):
    """``program``'s main(argv), as its script -> (exit code, stdout, stderr lines that are not
    a progress bar). No traceback may appear anywhere."""
    main, script = PROGRAMS[program]
    monkeypatch.setattr(sys, "argv", [script])
    code, out, err = run_command(main, argv, capsys)
    assert "Traceback" not in out
    lines = [line for line in re.split(r"[\r\n]", err)
             if line.strip() and not TQDM_LINE.search(line)]
    return code, out, lines




def differences(before, after):
    """What changed between two ``tree``s, in words (empty when nothing did)."""
    return ([f"removed {p}" for p in before.keys() - after.keys()]
            + [f"added {p}" for p in after.keys() - before.keys()]
            + [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]])


# ---------------------------------------------------------------------------------------------
# What the rows start from: pristine fixtures, and each row's own copies of them
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The tiny city, and one checkpoints folder holding the runs 'plain', 'feat' and 'other'
    (with their cluster files). Rows never touch these: they work on copies."""
    root = tmp_path_factory.mktemp("pristine")
    city = synthetic_city.make_synthetic_city(root / "city", n_train=3, n_test=1, width=64,
                                              height=32, seed=0)
    ckpt = root / "checkpoints"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors train fastest on one thread
    try:
        for name, extra in [("plain", []), ("feat", ["--instance_feat"]),
                            ("other", ["--instance_feat", "--seed", "1"])]:
            train.main(["--dataroot", str(city), "--checkpoints_dir", str(ckpt), "--name", name,
                        "--max_iters", "2", *TINY, *extra])
            if "--instance_feat" in extra:
                manipulate.main(["encode", "--name", name, "--checkpoints_dir", str(ckpt),
                                 "--device", "cpu", "--dataroot", str(city)])
    finally:
        torch.set_num_threads(threads)
    return {"city": city, "ckpt": ckpt}


class Setting:
    """One row's world, under its own ``tmp``: copies of the pristine city and runs, made on
    first use, files to put in the way, and the command lines of the four programs."""

    def __init__(self, tmp, pristine):
        self.tmp, self.pristine = Path(tmp), pristine

    @functools.cached_property
    def city(self):
        return Path(shutil.copytree(self.pristine["city"], self.tmp / "city"))

    @functools.cached_property
    def ckpt(self):
        return Path(shutil.copytree(self.pristine["ckpt"], self.tmp / "checkpoints"))

    def file(self, name, content=b"not what you think"):
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path

    def folder(self, name, exist_ok=False):
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=exist_ok)
        return path

    def scene(self, kind, split="train"):
        """The file of kind 'label', 'inst' or 'img' of the split's first scene, the one train.py
        reads before anything else."""
        return sorted((self.city / f"{split}_{kind}").iterdir())[0]

    # The command lines
    def train(self, *extra, name="new", dataroot=None):
        return ["--dataroot", dataroot or self.city, "--checkpoints_dir", self.ckpt,
                "--name", name, *TINY, *extra]

    def infer(self, *extra, name="plain"):
        return ["--name", name, "--checkpoints_dir", self.ckpt, "--device", "cpu",
                "--num_workers", "0", *extra]

    def infer_one(self, *extra, name="plain", out="out.png"):
        """infer.py on the test scene's files."""
        return self.infer("--label", self.scene("label", "test"), "--inst",
                          self.scene("inst", "test"), "--out", self.tmp / out, *extra, name=name)

    def manipulate(self, command, *extra, name="feat"):
        return [command, "--name", name, "--checkpoints_dir", self.ckpt, "--device", "cpu",
                *extra]

    def restyle(self, *extra, command="restyle", choose=("--instance", "car:0")):
        """restyle (or gallery) of the first car of the test scene, into tmp."""
        return self.manipulate(command, "--dataroot", self.city, "--index", "0", *choose,
                               *(["--out", self.tmp / "restyled.png"]
                                 if "--out" not in extra else []), *extra)

    # Changing files of the city
    def replace(self, path, image, suffix=None):
        """``path`` replaced by ``image`` (a PIL image), saved under the same stem with
        ``suffix`` (the format follows the suffix)."""
        image.load()  # before its file goes
        path.unlink()
        target = path.with_suffix(suffix or path.suffix)
        image.save(target)
        return target

    def paint(self, path, value):
        """The map at ``path`` with ``value`` painted into its top-left 8x8 corner, in place."""
        ids = np.array(Image.open(path))
        ids[:8, :8] = value
        Image.fromarray(ids).save(path)
        return path


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

class Case(NamedTuple):
    id: str
    program: str                   # a key of PROGRAMS
    argv: Callable                 # Setting -> argv; may change the Setting's files first
    expect: str                    # a regex the program's one line must contain


CASES = []


def case(id, program, expect):
    """Register the decorated ``argv`` function as a row."""
    def register(argv):
        CASES.append(Case(id, program, argv, expect))
        return argv
    return register


# train.py: each option's own range, checked as it is parsed ----------------------------------

for flag, value, why in [
        ("--batchSize", "0", "must be 1 or more"), ("--ngf", "0", "must be 1 or more"),
        ("--ndf", "0", "must be 1 or more"), ("--num_D", "0", "must be 1 or more"),
        ("--n_layers_D", "0", "must be 1 or more"),
        ("--n_downsample_global", "-1", "must be 0 or more"),
        ("--feat_num", "0", "must be 1 or more"),
        ("--lr", "nan", "must be a number above 0"), ("--lr", "-1", "must be a number above 0"),
        ("--lr", "inf", "must be a number above 0"),
        ("--beta1", "1", r"must be a number in \[0, 1\)"),
        ("--lambda_feat", "-1", "must be a number at least 0"),
        ("--lambda_feat", "nan", "must be a number at least 0"),
        ("--num_workers", "-1", "must be 0 or more"),
        ("--display_freq", "0", "must be 1 or more"), ("--print_freq", "0", "must be 1 or more"),
        ("--save_latest_freq", "0", "must be 1 or more"),
        ("--save_epoch_freq", "0", "must be 1 or more"),
        ("--niter", "-1", "must be 0 or more"), ("--niter_decay", "-1", "must be 0 or more"),
        ("--label_nc", "-5", "must be 0 or more"), ("--loadSize", "0", "must be 1 or more"),
        ("--fineSize", "0", "must be 1 or more"), ("--max_iters", "0", "must be 1 or more"),
        ("--seed", "-1", "must be 0 or more"), ("--pool_size", "-1", "must be 0 or more"),
        ("--ngf", "x", "expects a whole number, got 'x'"),
        ("--lr", "fast", "expects a number, got 'fast'"),
        ("--netG", "medium", "invalid choice: 'medium'"),
        ("--resize_or_crop", "scale", "invalid choice: 'scale'"),
        ("--gan_mode", "wgan", "invalid choice: 'wgan'"),
        ("--device", "tpu", "invalid choice: 'tpu'")]:
    CASES.append(Case(f"train {flag} {value}", "train",
                      lambda s, flag=flag, value=value: s.train(flag, value),
                      rf"argument {flag}(/--\w+)?: {why}.*see --help"))


@case("train unknown flag --batch_size", "train", r"unrecognized arguments: --batch_size 4")
def _(s):
    return s.train("--batch_size", "4")


@case("train --device cuda without CUDA", "train", r"--device cuda: no CUDA device.*--device cpu")
def _(s):
    return s.train("--device", "cuda")


# train.py: options that contradict each other -------------------------------------------------

@case("train --niter 0 --niter_decay 0", "train", r"--niter 0 --niter_decay 0 trains no epoch")
def _(s):
    return s.train("--niter", "0", "--niter_decay", "0")


@case("train --fineSize above --loadSize", "train",
      r"--fineSize 128 is larger than --loadSize 64.*lower --fineSize")
def _(s):
    return s.train("--resize_or_crop", "resize_and_crop", "--fineSize", "128")


@case("train --loadSize below G's downsampling", "train",
      r"--loadSize 8 is smaller than 16, the total downsampling of G.*raise --loadSize")
def _(s):
    return s.train("--loadSize", "8", "--n_downsample_global", "4")


@case("train resized height below G's downsampling", "train",
      r"synth_000000_000019_gtFine_labelIds\.png: 64x32 resized to 16x8 is smaller than "
      r"size_multiple 16.*check --loadSize")
def _(s):
    return s.train("--loadSize", "16", "--n_downsample_global", "4")


@case("train --niter_fix_global with --netG global", "train",
      r"--niter_fix_global .* needs --netG local")
def _(s):
    return s.train("--niter_fix_global", "1")


@case("train --start_over --continue_train", "train",
      r"--start_over and --continue_train contradict each other")
def _(s):
    return s.train("--start_over", "--continue_train", name="plain")


@case("train --instance_feat --no_instance", "train",
      r"--instance_feat needs instance maps: drop --no_instance")
def _(s):
    return s.train("--instance_feat", "--no_instance")


@case("train --no_lsgan --gan_mode hinge", "train",
      r"--no_lsgan and --gan_mode hinge contradict each other")
def _(s):
    return s.train("--no_lsgan", "--gan_mode", "hinge")


# train.py on a run folder that already holds a run (the copied 'plain', at iteration 2) ---------

@case("train forgotten --continue_train", "train",
      r"checkpoints/plain already holds a run \(latest\.pt at iteration 2, epoch 1\): resume it "
      r"with --continue_train.*--start_over")
def _(s):
    return s.train(name="plain")


@case("train --batchSize 0 on an existing run", "train", r"argument --batchSize")
def _(s):
    return s.train("--batchSize", "0", name="plain")


@case("train --continue_train --ngf 16", "train",
      r"--continue_train: .*latest\.pt was trained with different architecture options: "
      r"ngf \(checkpoint 8, now 16\)")
def _(s):
    return s.train("--continue_train", "--ngf", "16", name="plain")


@case("train --continue_train --which_epoch 7", "train",
      r"--continue_train: .*plain/epoch_7\.pt not found.*--which_epoch")
def _(s):
    return s.train("--continue_train", "--which_epoch", "7", name="plain")


@case("train --continue_train --batchSize 2 mid-epoch", "train",
      r"stopped mid-epoch with 1 process\(es\) x --batchSize 1")
def _(s):
    # --max_iters 3: while the bug lasts the row trains one iteration, not 200 epochs
    return s.train("--continue_train", "--batchSize", "2", "--max_iters", "3", name="plain")


@case("train --continue_train of a truncated latest.pt", "train",
      r"plain/latest\.pt: not a readable checkpoint")
def _(s):
    latest = s.ckpt / "plain" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    return s.train("--continue_train", name="plain")


@case("train --continue_train of a run that does not exist", "train",
      r"--continue_train: .*nothing_here/latest\.pt not found; drop --continue_train")
def _(s):
    return s.train("--continue_train", name="nothing_here")


@case("train --start_over with a bad photo keeps the old run in place", "train",
      r"synth_000000_000019_leftImg8bit\.png: cannot read this image")
def _(s):
    s.scene("img").write_bytes(b"\x89PNG\r\n\x1a\n half a picture")
    return s.train("--start_over", name="plain")


# train.py: the data -----------------------------------------------------------------------------

@case("train --dataroot missing", "train",
      r"--dataroot .*cityscapes does not exist: get Cityscapes from .*synthetic city")
def _(s):
    return s.train(dataroot=s.tmp / "cityscapes")


@case("train --dataroot an empty folder", "train",
      r"empty: no 'train' split found: looked for .*train_label.*found no folders; check "
      r"--dataroot")
def _(s):
    return s.train(dataroot=s.folder("empty"))


@case("train --dataroot a file", "train", r"--dataroot .*a_file.*(not a folder|is a file)")
def _(s):
    return s.train(dataroot=s.file("a_file"))


@case("train labels without photos", "train",
      r"the training split has no photos \(train_img/ or leftImg8bit/\)")
def _(s):
    shutil.rmtree(s.city / "train_img")
    return s.train()


@case("train one photo missing", "train",
      r"1 of 3 label maps have no photo in .*train_img \(synth_000001_000019\): add the photos")
def _(s):
    sorted((s.city / "train_img").iterdir())[1].unlink()
    return s.train()


@case("train labels without instance maps", "train",
      r"3 of 3 label maps have no instance map in .*train_inst.*or pass --no_instance")
def _(s):
    shutil.rmtree(s.city / "train_inst")
    return s.train()


@case("train two files pair as one stem", "train",
      r"both pair as 'synth_000000_000019': keep one of them")
def _(s):
    photo = s.scene("img")
    Image.open(photo).save(photo.with_suffix(".jpg"))
    return s.train()


@case("train a palette (mode P) label map", "train",
      r"synth_000000_000019_gtFine_labelIds\.png is a palette image")
def _(s):
    label = s.scene("label")
    Image.open(label).convert("P").save(label)
    return s.train()


@case("train a JPEG label map", "train",
      r"synth_000000_000019_gtFine_labelIds\.jpg is a JPEG.*save the ids as PNG")
def _(s):
    label = s.scene("label")
    s.replace(label, Image.open(label), ".jpg")
    return s.train()


@case("train a JPEG instance map", "train",
      r"synth_000000_000019_gtFine_instanceIds\.jpg is a JPEG.*instance map must be lossless")
def _(s):
    inst = s.scene("inst")
    ids = np.asarray(Image.open(inst)).astype(np.int64)
    s.replace(inst, Image.fromarray((ids % 256).astype(np.uint8)), ".jpg")
    return s.train()


@case("train label id 255 (ignore)", "train",
      r"labelIds\.png: label id 255 >= label_nc 35: 255 is the 'ignore' id")
def _(s):
    s.paint(s.scene("label"), 255)
    return s.train()


@case("train label id >= label_nc", "train",
      r"labelIds\.png: label id 40 >= label_nc 35.*or pass --label_nc 41")
def _(s):
    s.paint(s.scene("label"), 40)
    return s.train()


@case("train --label_nc below the ids of the maps", "train",
      r"labelIds\.png: label id 26 >= label_nc 20.*or pass --label_nc 27")
def _(s):
    return s.train("--label_nc", "20")


@case("train an RGB colour label map", "train",
      r"labelIds\.png is an RGB colour image where label ids are expected.*or pass --label_nc 0")
def _(s):
    label = s.scene("label")
    ids = np.asarray(Image.open(label))
    Image.fromarray(np.stack([ids, ids * 2, ids * 3], axis=-1).astype(np.uint8)).save(label)
    return s.train()


@case("train a float (mode F) label map", "train",
      r"labelIds\.tif: a label map of PIL mode F cannot hold label ids")
def _(s):
    label = s.scene("label")
    s.replace(label, Image.fromarray(np.asarray(Image.open(label), dtype=np.float32)), ".tif")
    return s.train()


@case("train an RGB instance map", "train",
      r"instanceIds\.png is a colour image where instance ids are expected.*or pass "
      r"--no_instance")
def _(s):
    inst = s.scene("inst")
    Image.open(s.scene("img")).save(inst)
    return s.train()


@case("train negative instance ids (32-bit TIFF)", "train",
      r"instanceIds\.tif: negative instance id -1")
def _(s):
    inst = s.scene("inst")
    ids = np.asarray(Image.open(inst)).astype(np.int32)
    ids[:4, :4] = -1
    s.replace(inst, Image.fromarray(ids, mode="I"), ".tif")
    return s.train()


@case("train a photo of another size", "train",
      r"labelIds\.png is 64x32 but .*leftImg8bit\.png is 32x16.*must be the same size")
def _(s):
    photo = s.scene("img")
    Image.open(photo).resize((32, 16)).save(photo)
    return s.train()


@case("train --label_nc 0 with single-channel inputs", "train",
      r"train_A/0\.png has one channel, but label_nc 0 reads RGB pictures.*check --label_nc")
def _(s):
    for folder, mode in (("train_A", "L"), ("train_B", "RGB")):
        for i in range(2):
            Image.new(mode, (64, 32), 128).save(s.folder(f"edges/{folder}", exist_ok=True)
                                                / f"{i}.png")
    return s.train("--label_nc", "0", "--no_instance", dataroot=s.tmp / "edges")


@case("train a truncated label map", "train",
      r"labelIds\.png: cannot read this image.*replace or re-download the file")
def _(s):
    label = s.scene("label")
    label.write_bytes(label.read_bytes()[:100])
    return s.train()


@case("train an empty (0-byte) photo", "train",
      r"leftImg8bit\.png: cannot read this image.*replace or re-download the file")
def _(s):
    s.scene("img").write_bytes(b"")
    return s.train()


@case("train macOS AppleDouble ._ files beside every image", "train",
      r"\._synth_000000_000019_gtFine_labelIds\.png is a macOS AppleDouble file.*delete the "
      r"\._\* files")
def _(s):
    # What copying a folder from a Mac to a FAT or network drive leaves: a ._NAME beside every
    # NAME, holding its metadata. They pair up with each other, as the stem '._synth_...'.
    for folder in ("train_label", "train_inst", "train_img"):
        for path in sorted((s.city / folder).iterdir()):
            path.with_name("._" + path.name).write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac "
                                                         b"OS X        " + bytes(4000))
    return s.train()


@case("train --name ''", "train", r"--name")
def _(s):
    # --max_iters 1: while the bug lasts the row trains one iteration, not 200 epochs
    return s.train("--max_iters", "1", name="")


@case("train negative label id (32-bit TIFF)", "train", r"labelIds\.tif: negative label id -1")
def _(s):
    label = s.scene("label")
    ids = np.asarray(Image.open(label)).astype(np.int32)
    ids[:4, :4] = -1
    s.replace(label, Image.fromarray(ids, mode="I"), ".tif")
    return s.train()


@case("train --label_nc 0 on a dataset of label ids", "train",
      r"no 'train' split found: looked for .*train_A.*train_label/ holds label ids.*or pass "
      r"--label_nc 35")
def _(s):
    return s.train("--label_nc", "0")


@case("train a dataset of RGB inputs without --label_nc 0", "train",
      r"no 'train' split found: .*train_A/ holds RGB inputs, which label_nc 0 reads.*or pass "
      r"--label_nc 0")
def _(s):
    for folder in ("train_A", "train_B"):
        Image.new("RGB", (64, 32), "white").save(s.folder(f"edges/{folder}") / "0.png")
    return s.train("--no_instance", dataroot=s.tmp / "edges")


@case("train --load_pretrain of a G1 of another width", "train",
      r"--load_pretrain .*plain/latest\.pt: its G does not fit this G1.*--ngf equal to this "
      r"run's --ngf \* 2\^n_local_enhancers")
def _(s):
    return s.train("--netG", "local", "--load_pretrain", s.ckpt / "plain")


@case("train --checkpoints_dir under a regular file", "train",
      r"--checkpoints_dir .*a_file/checkpoints/new: cannot write there .*a file is in the way")
def _(s):
    argv = s.train()
    argv[argv.index("--checkpoints_dir") + 1] = s.file("a_file") / "checkpoints"
    return argv


@case("train --load_pretrain missing", "train",
      r"--load_pretrain .*no_such_run: no checkpoint at .*no_such_run; pass the folder of a "
      r"--netG global run")
def _(s):
    return s.train("--load_pretrain", s.tmp / "no_such_run")


@case("train --load_pretrain of a non-checkpoint file", "train",
      r"notes\.txt: not a readable checkpoint.*another kind of file")
def _(s):
    return s.train("--load_pretrain", s.file("notes.txt", b"my notes"))


@case("train --load_pretrain of a foreign torch file", "train",
      r"latest_net_G\.pth is not a checkpoint written by train\.py")
def _(s):
    torch.save({"model.1.weight": torch.zeros(1)}, s.file("latest_net_G.pth"))
    return s.train("--load_pretrain", s.tmp / "latest_net_G.pth")


# infer.py -------------------------------------------------------------------------------------

@case("infer --out x.txt", "infer", r"--out .*x\.txt: not an image file name; end it in \.png")
def _(s):
    return s.infer_one(out="x.txt")


@case("infer --out an existing folder", "infer",
      r"--out .*outdir: not an image file name; end it in \.png")
def _(s):
    s.folder("outdir")
    return s.infer_one(out="outdir")


@case("infer --out a folder named like an image", "infer",
      r"--out .*pictures\.png is a folder; give a file name such as .*pictures\.png/out\.png")
def _(s):
    s.folder("pictures.png")
    return s.infer_one(out="pictures.png")


@case("infer --out under a regular file", "infer", r"--out .*a_file/x\.png: cannot write there")
def _(s):
    s.file("a_file")
    return s.infer_one(out="a_file/x.png")


@case("infer --label without --out", "infer", r"--label needs --out O\.png")
def _(s):
    return s.infer("--label", s.scene("label", "test"))


@case("infer --results_dir under a regular file", "infer",
      r"--results_dir .*a_file/results.*cannot write there")
def _(s):
    return s.infer("--dataroot", s.city, "--results_dir", s.file("a_file") / "results")


@case("infer --official_checkpoint given our latest.pt", "infer",
      r"latest\.pt is a checkpoint written by this project's train\.py, not NVIDIA's: load it "
      r"with --name plain --checkpoints_dir .*checkpoints")
def _(s):
    return ["--official_checkpoint", s.ckpt / "plain" / "latest.pt", "--label",
            s.scene("label", "test"), "--out", s.tmp / "out.png", "--device", "cpu"]


@case("infer --official_checkpoint an HTML page", "infer",
      r"latest_net_G\.pth: not a readable checkpoint.*download or train it again")
def _(s):
    page = s.file("latest_net_G.pth", b"<html><body>404 Not Found</body></html>")
    return ["--official_checkpoint", page, "--label", s.scene("label", "test"), "--out",
            s.tmp / "out.png", "--device", "cpu"]


@case("infer --label a JPEG", "infer", r"labelIds\.jpg is a JPEG")
def _(s):
    label = s.scene("label", "test")
    jpeg = s.replace(label, Image.open(label), ".jpg")
    return s.infer("--label", jpeg, "--inst", s.scene("inst", "test"), "--out",
                   s.tmp / "out.png")


@case("infer --label missing", "infer", r"no_such_label\.png: cannot read this image")
def _(s):
    return s.infer("--label", s.tmp / "no_such_label.png", "--out", s.tmp / "out.png")


@case("infer --inst of another size", "infer",
      r"labelIds\.png is 64x32 but .*small_inst\.png is 32x16: .*must be the same size")
def _(s):
    small = s.tmp / "small_inst.png"
    Image.open(s.scene("inst", "test")).resize((32, 16), Image.NEAREST).save(small)
    return s.infer("--label", s.scene("label", "test"), "--inst", small, "--out",
                   s.tmp / "out.png")


@case("infer --label an RGB colour map", "infer",
      r"labelIds\.png is an RGB colour image where label ids are expected(?!.*--label_nc 0)")
def _(s):
    label = s.scene("label", "test")
    ids = np.asarray(Image.open(label))
    Image.fromarray(np.stack([ids, ids * 2, ids * 3], axis=-1).astype(np.uint8)).save(label)
    return s.infer_one()


@case("infer --label with an id >= the model's label_nc", "infer",
      r"labelIds\.png: label id 40 >= label_nc 35(?!.*--label_nc 41)")
def _(s):
    s.paint(s.scene("label", "test"), 40)
    return s.infer_one()


@case("infer a split without instance maps", "infer",
      r"1 of 1 label maps have no instance map in .*test_inst(?!.*--no_instance)")
def _(s):
    shutil.rmtree(s.city / "test_inst")
    return s.infer("--dataroot", s.city, "--results_dir", s.tmp / "results")


@case("infer --dataroot a file", "infer", r"--dataroot .*a_file.*(not a folder|is a file)")
def _(s):
    return s.infer("--dataroot", s.file("a_file"), "--results_dir", s.tmp / "results")


@case("infer --name of a run that does not exist", "infer",
      r"nothing_here/latest\.pt: no checkpoint there; train one with train\.py --name "
      r"nothing_here")
def _(s):
    return s.infer("--dataroot", s.city, "--results_dir", s.tmp / "results", name="nothing_here")


@case("infer --which_epoch 3 (no epoch_3.pt)", "infer",
      r"plain/epoch_3\.pt: no checkpoint there.*--which_epoch")
def _(s):
    return s.infer_one("--which_epoch", "3")


@case("infer --how_many 0", "infer", r"argument --how_many: must be 1 or more, got 0")
def _(s):
    return s.infer("--dataroot", s.city, "--how_many", "0")


@case("infer --phase of a split that does not exist", "infer",
      r"no 'val' split found.*found test_img/ test_inst/ test_label/ train_img/")
def _(s):
    return s.infer("--dataroot", s.city, "--phase", "val", "--results_dir", s.tmp / "results")


@case("infer --loadSize below G's downsampling", "infer",
      r"labelIds\.png: 64x32 resized to 2x1 is smaller than size_multiple 4.*check --loadSize")
def _(s):
    return s.infer_one("--loadSize", "2")


@case("infer an empty cluster file", "infer",
      r"cluster file .*empty\.npz is not one written by manipulate\.py encode.*re-run")
def _(s):
    return s.infer_one("--feature_source", "clusters", "--cluster_file",
                       s.file("empty.npz", b""), name="feat")


@case("infer a truncated cluster file", "infer",
      r"cluster file .*clusters\.npz is not one written by manipulate\.py encode.*re-run")
def _(s):
    clusters = s.ckpt / "feat" / "clusters.npz"
    clusters.write_bytes(clusters.read_bytes()[:1500])
    return s.infer_one("--feature_source", "clusters", name="feat")


@case("infer the cluster file of another model", "infer",
      r"cluster file .*other/clusters\.npz was made for another model.*re-run `python "
      r"manipulate\.py encode`, or pass --allow_other_clusters")
def _(s):
    return s.infer_one("--feature_source", "clusters", "--cluster_file",
                       s.ckpt / "other" / "clusters.npz", name="feat")


@case("infer --feature_source encoded without a photo", "infer",
      r"--feature_source encoded needs the real photo \(--image")
def _(s):
    return s.infer_one("--feature_source", "encoded", name="feat")


@case("infer --features without --label", "infer",
      r"--features is the feature table of one edited map: use it with --label and --inst")
def _(s):
    return s.infer("--dataroot", s.city, "--features", s.file("f.npz"), name="feat")


@case("infer --features for a run without E", "infer",
      r"--features .*f\.npz: this model was trained without --instance_feat")
def _(s):
    return s.infer_one("--features", s.file("f.npz"))


@case("infer --features not a feature table", "infer",
      r"--features .*f\.npz: not a feature table saved by the editor")
def _(s):
    return s.infer_one("--features", s.file("f.npz"), name="feat")


@case("infer --features without the map's instances", "infer",
      r"the instance features name no vector for instance\(s\) \[7, ")
def _(s):
    infer.write_feature_table(s.tmp / "f.npz", {1: torch.zeros(3)})
    return s.infer_one("--features", s.tmp / "f.npz", name="feat")


# manipulate.py --------------------------------------------------------------------------------

@case("manipulate encode --n_clusters 0", "manipulate",
      r"^manipulate\.py encode: argument --n_clusters: must be 1 or more")
def _(s):
    return s.manipulate("encode", "--dataroot", s.city, "--n_clusters", "0")


@case("manipulate encode of a run without E", "manipulate",
      r"plain/latest\.pt: this checkpoint has no encoder E.*--instance_feat")
def _(s):
    return s.manipulate("encode", "--dataroot", s.city, name="plain")


@case("manipulate encode --dataroot missing", "manipulate",
      r"no_city does not exist.*check --dataroot")
def _(s):
    return s.manipulate("encode", "--dataroot", s.tmp / "no_city")


@case("manipulate encode --cluster_file under a regular file", "manipulate",
      r"--cluster_file .*a_file: cannot write there")
def _(s):
    return s.manipulate("encode", "--dataroot", s.city, "--cluster_file",
                        s.file("a_file") / "clusters.npz")


@case("manipulate restyle --at outside the file", "manipulate",
      r"--at 500,500: outside the 64x32 label map .*labelIds\.png")
def _(s):
    return s.restyle(choose=("--at", "500,500"))


@case("manipulate restyle --at=-1,5", "manipulate", r"--at -1,5: outside the 64x32 label map")
def _(s):
    return s.restyle(choose=("--at=-1,5",))


@case("manipulate restyle --at 3", "manipulate", r"--at 3: write X,Y in pixels")
def _(s):
    return s.restyle(choose=("--at", "3"))


@case("manipulate restyle --out x.txt", "manipulate", r"--out .*x\.txt: not an image file name")
def _(s):
    return s.restyle("--out", s.tmp / "x.txt")


@case("manipulate restyle --index 99", "manipulate",
      r"--index 99: the test split of .*city has 1 images \(0\.\.0\)")
def _(s):
    argv = s.restyle()
    argv[argv.index("--index") + 1] = "99"
    return argv


@case("manipulate restyle --index -1", "manipulate",
      r"^manipulate\.py restyle: argument --index: must be 0 or more, got -1")
def _(s):
    argv = s.restyle()
    argv[argv.index("--index") + 1] = "-1"
    return argv


@case("manipulate restyle --instance car", "manipulate",
      r"--instance car: write CLASS:INDEX, such as car:0")
def _(s):
    return s.restyle(choose=("--instance", "car"))


@case("manipulate restyle --instance spaceship:0", "manipulate",
      r"unknown class 'spaceship': use a label id or a Cityscapes class name")
def _(s):
    return s.restyle(choose=("--instance", "spaceship:0"))


@case("manipulate restyle --instance_id 26099", "manipulate",
      r"--instance_id 26099: no such instance in .*labelIds\.png; it has 7 road")
def _(s):
    return s.restyle(choose=("--instance_id", "26099"))


@case("manipulate restyle with no instance chosen", "manipulate",
      r"choose the instance one way: --instance_id ID, --instance CLASS:INDEX or --at X,Y")
def _(s):
    return s.restyle(choose=())


@case("manipulate restyle --cluster 99", "manipulate",
      r"--cluster 99: class 26 \(car\) has \d+ clusters")
def _(s):
    return s.restyle("--cluster", "99")


@case("manipulate restyle --label without --inst", "manipulate",
      r"--label needs --inst: manipulation works on instances")
def _(s):
    return s.manipulate("restyle", "--label", s.scene("label", "test"), "--instance", "car:0",
                        "--out", s.tmp / "restyled.png")


@case("manipulate restyle the cluster file of another model", "manipulate",
      r"other/clusters\.npz was made for another model.*--allow_other_clusters")
def _(s):
    return s.restyle("--cluster_file", s.ckpt / "other" / "clusters.npz")


@case("manipulate restyle an empty cluster file", "manipulate",
      r"cluster file .*empty\.npz is not one written by manipulate\.py encode")
def _(s):
    return s.restyle("--cluster_file", s.file("empty.npz", b""))


@case("manipulate gallery --columns 0", "manipulate",
      r"^manipulate\.py gallery: argument --columns: must be 1 or more")
def _(s):
    return s.restyle("--columns", "0", command="gallery")


@case("manipulate restyle --name of a run that does not exist", "manipulate",
      r"nothing_here/latest\.pt: no checkpoint there")
def _(s):
    argv = s.restyle()
    argv[argv.index("--name") + 1] = "nothing_here"
    return argv


@case("manipulate edit --dataroot missing", "manipulate",
      r"--dataroot .*no_city: no such folder")
def _(s):
    return s.manipulate("edit", "--dataroot", s.tmp / "no_city", "--port", "0")


@case("manipulate edit --port 70000", "manipulate", r"--port 70000: ports are 0\.\.65535")
def _(s):
    return s.manipulate("edit", "--dataroot", s.city, "--port", "70000")


@case("manipulate edit --port already taken", "manipulate",
      r"--host 127\.0\.0\.1 --port \d+: cannot listen there.*pass another --port")
def _(s):
    s.busy = socket.socket()
    s.busy.bind(("127.0.0.1", 0))
    s.busy.listen()
    return s.manipulate("edit", "--dataroot", s.city, "--port", s.busy.getsockname()[1])


# synthetic_city.py ----------------------------------------------------------------------------

@case("synthetic_city write into a folder holding a file", "synthetic_city",
      r"mine already exists; the synthetic city is written only to a new \(or empty\) folder")
def _(s):
    s.file("mine/notes.txt", b"my notes")
    return ["write", s.tmp / "mine", "--n_train", "1", "--n_test", "0"]


@case("synthetic_city write under a regular file", "synthetic_city",
      r"a_file/city.*choose a new folder")
def _(s):
    return ["write", s.file("a_file") / "city", "--n_train", "1", "--n_test", "0"]


@case("synthetic_city write onto an existing file", "synthetic_city",
      r"notes\.txt already exists; the synthetic city is written only to a new")
def _(s):
    return ["write", s.file("notes.txt", b"my notes"), "--n_train", "1", "--n_test", "0"]


@case("synthetic_city write --width 0", "synthetic_city",
      r"^synthetic_city\.py write: argument --width: must be 16 or more, got 0")
def _(s):
    return ["write", s.tmp / "new_city", "--width", "0"]


@case("synthetic_city evaluate the cluster file of another model", "synthetic_city",
      r"other/clusters\.npz was made for another model.*--allow_other_clusters")
def _(s):
    return ["evaluate", "--name", "feat", "--checkpoints_dir", s.ckpt, "--device", "cpu",
            "--dataroot", s.city, "--cluster_file", s.ckpt / "other" / "clusters.npz",
            "--n_restyle", "1"]


@case("synthetic_city evaluate without a cluster file", "synthetic_city",
      r"cluster file .*plain/clusters\.npz not found; make it with `python manipulate\.py "
      r"encode")
def _(s):
    return ["evaluate", "--name", "feat", "--checkpoints_dir", s.ckpt, "--device", "cpu",
            "--dataroot", s.city, "--cluster_file", s.ckpt / "plain" / "clusters.npz"]


@case("synthetic_city edits without styles.json", "synthetic_city",
      r"--dataroot .*: no styles\.json; edits are measured on a synthetic city")
def _(s):
    return ["edits", "--name", "feat", "--checkpoints_dir", s.ckpt, "--device", "cpu",
            "--dataroot", s.folder("not_a_city")]


@case("synthetic_city edits --relabel_to spaceship", "synthetic_city",
      r"unknown class 'spaceship'")
def _(s):
    return ["edits", "--name", "feat", "--checkpoints_dir", s.ckpt, "--device", "cpu",
            "--dataroot", s.city, "--relabel_to", "spaceship"]


# ---------------------------------------------------------------------------------------------
# The claim, for every row
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("row", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_naming_it_and_changes_nothing(row, pristine, tmp_path,
                                                             monkeypatch, capsys):
    setting = Setting(tmp_path / "world", pristine)
    setting.tmp.mkdir()
    monkeypatch.chdir(setting.tmp)  # default outputs (results/, checkpoints/) land in the snapshot
    argv = row.argv(setting)
    before = tree(setting.tmp)
    code, _, lines = run_program(row.program, argv, monkeypatch, capsys)
    assert code not in (0, None), lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(PROGRAMS[row.program][1]), lines
    assert re.search(row.expect, lines[0]), lines[0]
    assert differences(before, tree(setting.tmp)) == []


def test_the_table_has_at_least_50_rows_with_distinct_ids():
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)
