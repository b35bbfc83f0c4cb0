"""Claims about tests/benchmark.py: every kind of case it times still runs against the code it
measures (the benchmark is not part of the suite, so without this a renamed function would only
show on the next benchmark, perhaps on a lent GPU). One run of each, at a tiny size."""

import pytest
import torch

import benchmark

CPU = torch.device("cpu")


@pytest.mark.parametrize("netG, official_order", [("global", False), ("local", True)])
def test_a_training_iteration_case_runs(netG, official_order):
    run = benchmark.case_train(CPU, False, (128, 64), netG, official_order)
    run()


def test_the_other_cases_run():
    for run in (benchmark.case_infer(CPU, False, (128, 64)), benchmark.case_encode_pool(CPU, False),
                benchmark.case_pool(CPU, False, loop=False), benchmark.case_draw_clusters(CPU)):
        run()
