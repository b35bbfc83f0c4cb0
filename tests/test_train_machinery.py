"""Claims about train_machinery.py, the parts of a training run that are not the paper: processes
agree on one autocast dtype and on their GPUs, the image pool keeps compact copies and answers as
the official one, a sample's random draws depend only on (seed, epoch, index), and a resumed loss
log keeps exactly the rows before the checkpoint."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import runs
import train_machinery


def agree_in_process(rank, dtypes, init_file, out_dir):
    """One of two gloo processes: the dtype ``agree_on_autocast_dtype`` settles on."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=2)
    agreed = train_machinery.agree_on_autocast_dtype(dtypes[rank], torch.device("cpu"))
    (Path(out_dir) / f"rank{rank}").write_text(str(agreed))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("dtypes, expected", [
    ((torch.bfloat16, torch.bfloat16), "torch.bfloat16"),
    ((torch.bfloat16, torch.float16), "torch.float16"),  # one older GPU: fp16 for all
])
def test_processes_agree_on_one_autocast_dtype(dtypes, expected, tmp_path):
    torch.multiprocessing.spawn(agree_in_process, args=(dtypes, tmp_path / "init", tmp_path),
                                nprocs=2)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == [expected, expected]


def test_world_size_without_local_rank_is_refused_rather_than_sharing_cuda_0(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(runs.UserError, match="LOCAL_RANK is not set.*torchrun"):
        train_machinery.local_rank(2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert train_machinery.local_rank(2) == 1


def test_image_pool_returns_past_pairs_half_of_the_time_once_full():
    pool = train_machinery.ImagePool(2, seed=0)

    def query(i):  # a pair of one label channel and a one-pixel "image" holding i
        return pool.query(torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), float(i)))[0, 1].item()

    assert [query(i) for i in range(2)] == [0, 1]  # filling: the new pair itself
    returned = [query(i) for i in range(2, 202)]
    from_history = sum(r != i for r, i in zip(returned, range(2, 202)))
    assert 70 < from_history < 130


def test_image_pool_stores_compact_copies_and_gives_back_the_same_pairs(tmp_path):
    """Labels (one-hot and boundary map, 0 or 1) as uint8, images in G's dtype, each in storage
    of its own: a view of the batch would keep the whole batch alive."""
    labels = torch.zeros(2, 6, 8, 8)
    labels[:, :5].scatter_(1, torch.randint(0, 5, (2, 1, 8, 8)), 1.0)
    labels[:, 5] = (torch.rand(2, 8, 8) > 0.8).float()
    images = (torch.rand(2, 3, 8, 8) * 2 - 1).bfloat16()  # as G makes them under autocast
    pool = train_machinery.ImagePool(4, seed=0)
    out = pool.query(labels, images)
    assert torch.equal(out, torch.cat([labels, images.float()], dim=1))  # one fp32 pair, as D got
    for label, image in pool.pairs:
        assert label.dtype == torch.uint8 and image.dtype == torch.bfloat16
        assert label.untyped_storage().nbytes() == label.numel()      # 6 x 8 x 8 bytes, no more
        assert image.untyped_storage().nbytes() == 2 * image.numel()
    torch.save(pool.state_dict(), tmp_path / "pool.pt")
    resumed = train_machinery.ImagePool(4, seed=0)
    resumed.load_state_dict(torch.load(tmp_path / "pool.pt", weights_only=True))
    for _ in range(3):  # full now: half of the answers come from the history, the same ones
        assert torch.equal(pool.query(labels.flip(0), images.flip(0)),
                           resumed.query(labels.flip(0), images.flip(0)))


class RandomDraws(torch.utils.data.Dataset):
    """Each item: one number from each of Python's, numpy's and torch's global generators."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_a_samples_random_draws_depend_only_on_seed_epoch_and_index():
    """What makes the crops and flips of a resumed run those of an uninterrupted one."""
    dataset = train_machinery.EpochSeeded(RandomDraws(), seed=3)
    dataset.epoch = 2
    first = [dataset[i] for i in range(4)]
    torch.manual_seed(123)  # whatever the global generators did before ...
    np.random.seed(7)
    assert [dataset[i] for i in reversed(range(4))] == first[::-1]  # ... and in any order
    dataset.epoch = 3
    assert all(a != b for a, b in zip(first, [dataset[i] for i in range(4)]))
    state = random.getstate()
    dataset[0]
    assert random.getstate() == state  # the global generators are left as they were


def test_a_resumed_loss_log_keeps_the_rows_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "loss_log.csv"
    columns = ["epoch", "iteration", "G_GAN", "D_real", "lr", "sec_per_iter"]
    train_machinery.start_log(path, columns)
    for it in (50, 100, 150):
        train_machinery.append_row(path, [1, it, 1.0, 0.5, 2e-4, 0.1])
    train_machinery.start_log(path, columns, keep_until=100)  # the checkpoint was at 100
    rows = path.read_text().splitlines()
    assert rows[0] == "epoch,iteration,G_GAN,D_real,lr,sec_per_iter"
    assert [r.split(",")[1] for r in rows[1:]] == ["50", "100"]
