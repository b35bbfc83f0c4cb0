"""Claims about edits.py, the semantic edits of a label map and its instance map: each edit on a
small map gives exactly the labels, instance ids and boundaries worked out by hand, ids never
collide, and the feature table follows the instances (sec. 3.4's restyle and diverse results)."""

import numpy as np
import pytest
import torch

import data
import edits
import infer
from edits import EditError

R, S, V, CAR, TRUCK, PERSON = 7, 8, 21, 26, 27, 24  # road, sidewalk, vegetation, car, truck, person


def street():
    """A 5x6 map: road with a sidewalk strip on the right, car 26000 (2x2) and car 26002 (one
    pixel) on the road. Returns (label, inst)."""
    inst = np.array([[R, R, R, R, S, S],
                     [R, 26000, 26000, R, S, S],
                     [R, 26000, 26000, R, S, S],
                     [R, R, R, 26002, S, S],
                     [R, R, R, R, S, S]])
    return np.vectorize(data.instance_class)(inst), inst


def boundaries(inst):
    return data.instance_boundaries(torch.as_tensor(inst)[None, None])[0, 0].numpy()


def test_new_instance_ids_follow_the_largest_of_their_class():
    _, inst = street()
    assert edits.new_instance_id(inst, CAR) == 26003       # after 26002, not the gap 26001
    assert edits.new_instance_id(inst, TRUCK) == 27000
    with pytest.raises(EditError, match="at most 1000"):
        edits.new_instance_id(np.array([[26999]]), CAR)


def test_relabel_an_object_to_another_object_class_gives_it_a_fresh_id():
    label, inst = street()
    new_label, new_inst, new_id = edits.relabel(label, inst, 26000, TRUCK)
    assert new_id == 27000
    assert (new_inst == 27000).sum() == 4 and not (new_inst == 26000).any()
    assert (new_label[new_inst == 27000] == TRUCK).all()
    assert np.array_equal(new_label[inst != 26000], label[inst != 26000])  # nothing else moved
    assert np.array_equal(label, street()[0])                               # inputs untouched


def test_relabel_an_object_to_stuff_merges_it_with_that_stuff():
    label, inst = street()
    new_label, new_inst, new_id = edits.relabel(label, inst, 26002, R)
    assert new_id == R and new_inst[3, 3] == R and new_label[3, 3] == R
    # the one-pixel car's boundary is gone: only the big car and the road / sidewalk edge remain
    assert np.array_equal(boundaries(new_inst), boundaries(np.where(inst == 26002, R, inst)))


def test_relabel_a_stuff_region_turns_all_its_pixels():
    label, inst = street()
    new_label, new_inst, _ = edits.relabel(label, inst, R, V)  # the road becomes vegetation
    assert ((new_label == V) == (label == R)).all() and ((new_inst == V) == (inst == R)).all()
    with pytest.raises(EditError, match="already of class 7"):
        edits.relabel(label, inst, R, R)
    with pytest.raises(EditError, match="no instance 26001"):
        edits.relabel(label, inst, 26001, TRUCK)


def test_remove_fills_with_the_most_common_stuff_on_the_border():
    label, inst = street()
    # car 26002 at row 3, column 3: road above, below and left, sidewalk right -> road
    new_label, new_inst, fill = edits.remove(label, inst, 26002)
    assert fill == R and new_inst[3, 3] == R and new_label[3, 3] == R
    expected = inst.copy()
    expected[3, 3] = R
    assert np.array_equal(new_inst, expected)
    assert np.array_equal(boundaries(new_inst), boundaries(expected))


def test_remove_ties_go_to_the_smaller_label_id():
    inst = np.array([[R, 26000, S]])  # one road and one sidewalk neighbour
    label = np.vectorize(data.instance_class)(inst)
    assert edits.remove(label, inst, 26000)[2] == R


def test_remove_grows_past_neighbouring_objects_to_reach_stuff():
    """A car boxed in by another car: its border holds no stuff; the next ring holds sidewalk at
    (0, 2) and (2, 0) and road at (1, 3), so sidewalk fills it."""
    inst = np.array([[S, S, S, S],
                     [S, 26001, 26001, R],
                     [S, 26001, 26000, 26001],
                     [R, 26001, 26001, 26001]])
    label = np.vectorize(data.instance_class)(inst)
    new_label, new_inst, fill = edits.remove(label, inst, 26000)
    assert fill == S and new_inst[2, 2] == S and (new_inst == 26001).sum() == 7


def test_remove_refuses_a_map_with_no_stuff():
    inst = np.array([[26000, 26001]])
    with pytest.raises(EditError, match="no stuff"):
        edits.remove(np.full((1, 2), CAR), inst, 26000)


def test_paste_places_a_flipped_scaled_object_with_a_new_id():
    """An L-shaped person (3 rows, 2 columns), flipped and scaled by 2 (6x4), centred on pixel
    (x 3, y 3) of an 8x8 road: top-left corner at (3 - 2, 3 - 3) = (1, 0)."""
    src_inst = np.array([[24000, 0],
                         [24000, 0],
                         [24000, 24000]])
    src_label = np.vectorize(data.instance_class)(src_inst)
    inst = np.full((8, 8), R)
    inst[7, 7] = 24000                          # a person already there: the new one is 24001
    label = np.vectorize(data.instance_class)(inst)
    new_label, new_inst, new_id = edits.paste(label, inst, src_label, src_inst, 24000, (3, 3),
                                              scale=2, flip=True)
    flipped_l = np.array([[0, 0, 1, 1]] * 4 + [[1, 1, 1, 1]] * 2, bool)  # (6, 4)
    expected = np.full((8, 8), R)
    expected[7, 7] = 24000
    expected[0:6, 1:5][flipped_l] = 24001
    assert new_id == 24001 and np.array_equal(new_inst, expected)
    assert np.array_equal(new_label, np.vectorize(data.instance_class)(expected))


def test_paste_clips_at_the_edge_and_refuses_stuff_and_empty_placements():
    src_inst = np.array([[26000, 26000]])
    src_label = np.full((1, 2), CAR)
    label, inst = np.full((2, 2), R), np.full((2, 2), R)
    _, new_inst, _ = edits.paste(label, inst, src_label, src_inst, 26000, (0, 1))  # half outside
    assert new_inst.tolist() == [[R, R], [26000, R]]
    with pytest.raises(EditError, match="paste takes objects"):
        edits.paste(label, inst, label, inst, R, (0, 0))
    with pytest.raises(EditError, match="outside"):
        edits.paste(label, inst, src_label, src_inst, 26000, (10, 10))


def test_paint_draws_stuff_with_a_brush_and_a_box():
    label, inst = street()
    disc = edits.brush((5, 6), 1, 1, 1)     # the pixel and its 4 neighbours
    assert disc.sum() == 5 and disc[1, 1] and disc[0, 1] and not disc[0, 0]
    new_label, new_inst = edits.paint(label, inst, disc, V)
    assert (new_inst == V).sum() == 5 and (new_inst == 26000).sum() == 1  # the car keeps (2, 2)
    assert ((new_label == V) == (new_inst == V)).all()
    rect = edits.box((5, 6), 5, 4, 4, 3)     # corners in any order: columns 4..5, rows 3..4
    assert rect.sum() == 4 and rect[3:5, 4:6].all()
    with pytest.raises(EditError, match="has instances"):
        edits.paint(label, inst, rect, CAR)
    with pytest.raises(EditError, match="empty"):
        edits.paint(label, inst, np.zeros((5, 6), bool), V)


def test_feature_table_round_trips_an_instance_pooled_map():
    _, inst = street()
    table = {R: torch.tensor([1., 2, 3]), S: torch.tensor([4., 5, 6]),
             26000: torch.tensor([7., 8, 9]), 26002: torch.tensor([0., 0, 1])}
    F = infer.table_feature_map(torch.as_tensor(inst)[None, None], table, 3)  # (1, 3, 5, 6)
    assert F.shape == (1, 3, 5, 6) and F[0, :, 1, 1].tolist() == [7, 8, 9]
    back = edits.feature_table(F, inst)
    assert back.keys() == table.keys() and all(torch.equal(back[i], table[i]) for i in table)


def test_restyle_changes_one_entry_and_complete_draws_for_new_ids():
    _, inst = street()
    table = {i: torch.zeros(2) for i in np.unique(inst).tolist()}
    restyled = edits.restyle(table, 26000, torch.tensor([5., 5]))
    assert restyled[26000].tolist() == [5, 5] and table[26000].tolist() == [0, 0]
    assert all(torch.equal(restyled[i], table[i]) for i in table if i != 26000)
    clusters = {TRUCK: torch.tensor([[1., 1], [2, 2]])}
    _, new_inst, _ = edits.relabel(street()[0], inst, 26000, TRUCK)
    completed = edits.complete(table, new_inst, clusters, 2, torch.Generator().manual_seed(0))
    assert 26000 not in completed and completed[27000].tolist() in ([1, 1], [2, 2])
    assert edits.complete(table, new_inst, {}, 2, None)[27000].tolist() == [0, 0]


def test_diverse_draws_exactly_what_infer_draws_with_the_same_seed():
    _, inst = street()
    clusters = {R: torch.randn(4, 3), CAR: torch.randn(5, 3)}  # sidewalk has none: zeros
    table = edits.diverse(inst, clusters, 3, seed=11)
    F = infer.table_feature_map(torch.as_tensor(inst)[None, None], table, 3)
    expected, missing = infer.sample_cluster_features(torch.as_tensor(inst)[None, None], clusters,
                                                      3, torch.Generator().manual_seed(11))
    assert torch.equal(F, expected) and missing == [S] and table[S].tolist() == [0, 0, 0]
