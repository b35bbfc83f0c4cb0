"""Claims about editor.py, the semantic editor's server: every edit of the API changes the image
where it should, undo and redo walk the history, a saved edit is reproduced by infer.py from the
saved files, a run without E still edits labels and says why styles are off, and the security
rules hold (bind address, no file named by the browser, body size limit, malformed requests get
a 400 and the server goes on). The browser itself is test_editor_browser.py's."""

import base64
import http.client
import io
import json
import socket
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import editor
import infer
import manipulate
import train
from runs import UserError
from conftest import TINY_FEAT, run_command


def picture(url):
    """A data URL of a PNG -> (H, W, 3) float array."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))),
                      dtype=np.float64)


def ok(session, action, body=None):
    status, answer = editor.handle(session, action, body or {})
    assert status == 200, answer
    return answer


def largest_car(session):
    inst = session.state.inst
    ids, counts = np.unique(inst[inst // 1000 == 26], return_counts=True)
    return int(ids[counts.argmax()])


def pixel_of(inst, instance_id):
    ys, xs = np.nonzero(inst == instance_id)
    return int(xs[len(xs) // 2]), int(ys[len(ys) // 2])


@pytest.fixture(scope="module")
def session(feature_run, tmp_path_factory):
    model = infer.load_model(feature_run["ckpt"] / "feat" / "latest.pt")
    clusters = infer.load_clusters(feature_run["clusters"])
    return editor.Editor(model, feature_run["city"], "test", clusters,
                         tmp_path_factory.mktemp("edits"))


@pytest.fixture(scope="module")
def plain_session(feature_run, tmp_path_factory):
    """A run trained without --instance_feat: no E, no styles."""
    ckpt = tmp_path_factory.mktemp("plain")
    train.main(["--dataroot", str(feature_run["city"]), "--checkpoints_dir", str(ckpt), "--name",
                "plain", "--max_iters", "1", *TINY_FEAT])
    model = infer.load_model(ckpt / "plain" / "latest.pt")
    return editor.Editor(model, feature_run["city"], "test", None,
                         tmp_path_factory.mktemp("plain_edits")), ckpt


def test_select_then_remove_changes_the_image_inside_the_object_most(session):
    ok(session, "open", {"index": 0})
    car = largest_car(session)
    x, y = pixel_of(session.state.inst, car)
    selected = ok(session, "select", {"x": x, "y": y})["view"]["selected"]
    assert selected["id"] == car and selected["name"] == "car"
    mask = session.state.inst == car
    before = picture(session.view()["image"])
    view = ok(session, "remove", {"id": car})["view"]
    assert not (session.state.inst == car).any() and view["selected"] is None
    assert (session.state.label[mask] < 24).all()                  # stuff now
    change = np.abs(picture(view["image"]) - before).mean(axis=2)
    assert change[mask].mean() > 2 * change[~mask].mean()
    assert view["undo"] and not view["redo"]


def test_relabel_add_paint_restyle_each_push_one_step_and_undo_redo_walk_them(session):
    ok(session, "open", {"index": 0})
    car = largest_car(session)
    ok(session, "relabel", {"id": car, "class": "truck"})
    assert session.selected == 27000 and session.state.table[27000].shape == (3,)
    source = session.gallery[0]
    ok(session, "add", {"index": source["index"], "id": source["id"], "x": 10, "y": 20,
                        "scale": 0.5, "flip": True})
    new = session.selected
    assert new // 1000 == source["id"] // 1000 and session.state.inst[20, 10] == new
    src_table = session.features_of(source["index"], session.dataset[source["index"]])
    assert np.array_equal(session.state.table[new], src_table[source["id"]])  # its own feature
    ok(session, "paint", {"class": 21, "x": 0, "y": 0, "x1": 3, "y1": 2})
    assert (session.state.inst[0:3, 0:4] == 21).all()
    k = len(session.clusters[26]) - 1
    car2 = largest_car(session)
    ok(session, "restyle", {"id": car2, "cluster": k})
    assert np.array_equal(session.state.table[car2], session.clusters[26][k])
    assert session.position == 4
    states = [s.inst for s in session.history]
    for step in (3, 2, 1, 0):
        view = ok(session, "undo")["view"]
        assert view["edits"] == step and np.array_equal(session.state.inst, states[step])
        # the pasted object stays selected while it exists, and is let go when an undo removes it
        assert (view["selected"] is None) == (step < 2), step
    assert editor.handle(session, "undo", {}) == (400, {"error": "nothing to undo"})
    assert ok(session, "redo")["view"]["edits"] == 1
    ok(session, "remove", {"id": 27000})                            # a new branch: no redo
    assert not session.view()["redo"] and len(session.history) == 3


def test_a_saved_edit_is_what_infer_draws_from_the_saved_files(session, feature_run, capsys,
                                                                  tmp_path):
    ok(session, "open", {"index": 1})
    car = largest_car(session)
    ok(session, "restyle", {"id": car, "cluster": 0})
    ok(session, "remove", {"id": car})
    ok(session, "shuffle", {"seed": 3})
    answer = ok(session, "save")
    folder = session.out_dir
    stem = session.dataset.stems[1] + f"_edit{session.saves}"
    assert answer["saved"] == sorted(f"{stem}_{k}" for k in (
        "features.npz", "gtFine_instanceIds.png", "gtFine_labelIds.png", "synthesized.png"))
    saved_inst = np.asarray(Image.open(folder / f"{stem}_gtFine_instanceIds.png"))
    assert np.array_equal(saved_inst, session.state.inst)
    assert np.array_equal(np.asarray(Image.open(folder / f"{stem}_gtFine_labelIds.png")),
                          session.state.label)
    out = tmp_path / "again.png"
    code, _, err = run_command(infer.main, [
        "--name", "feat", "--checkpoints_dir", feature_run["ckpt"], "--device", "cpu",
        "--label", folder / f"{stem}_gtFine_labelIds.png",
        "--inst", folder / f"{stem}_gtFine_instanceIds.png",
        "--features", folder / f"{stem}_features.npz", "--out", out], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(out)),
                          np.asarray(Image.open(folder / f"{stem}_synthesized.png")))


def test_shuffle_draws_what_infer_draws_with_clusters_and_the_same_seed(session, feature_run,
                                                                        capsys, tmp_path):
    ok(session, "open", {"index": 2})
    image = picture(ok(session, "shuffle", {"seed": 5})["view"]["image"])
    out = tmp_path / "clusters.png"
    city = feature_run["city"]
    stem = session.dataset.stems[2]
    code, _, err = run_command(infer.main, [
        "--name", "feat", "--checkpoints_dir", feature_run["ckpt"], "--device", "cpu",
        "--label", city / "test_label" / f"{stem}_gtFine_labelIds.png",
        "--inst", city / "test_inst" / f"{stem}_gtFine_instanceIds.png",
        "--feature_source", "clusters", "--seed", 5, "--out", out], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(out), dtype=np.float64), image)


def test_a_run_without_E_edits_labels_and_says_why_styles_are_off(plain_session, capsys,
                                                                   tmp_path):
    session, ckpt = plain_session
    reason = session.setup()["styles_off"]
    assert "--instance_feat" in reason
    car = largest_car(session)
    assert editor.handle(session, "restyle", {"id": car, "cluster": 0}) == (400, {"error": reason})
    assert editor.handle(session, "shuffle", {"seed": 0})[0] == 400
    ok(session, "relabel", {"id": car, "class": 7})
    ok(session, "add", {"index": 0, "id": car, "x": 5, "y": 5})
    assert session.state.table is None
    saved = ok(session, "save")["saved"]
    assert not any(name.endswith(".npz") for name in saved)
    folder, stem = session.out_dir, saved[0].rsplit("_gtFine", 1)[0]
    out = tmp_path / "again.png"
    code, _, err = run_command(infer.main, [
        "--name", "plain", "--checkpoints_dir", ckpt, "--device", "cpu",
        "--label", folder / f"{stem}_gtFine_labelIds.png",
        "--inst", folder / f"{stem}_gtFine_instanceIds.png", "--out", out], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(out)),
                          np.asarray(Image.open(folder / f"{stem}_synthesized.png")))


@pytest.mark.parametrize("action, body, message", [
    ("relabel", {"id": 26000, "class": 99}, "class: 99 is not one of this model's label ids"),
    ("relabel", {"id": 123456, "class": 7}, "id: no instance 123456"),
    ("select", {"x": 10 ** 6, "y": 0}, "x: 1000000 is outside 0..63"),
    ("add", {"index": 0, "id": 7, "x": 1, "y": 1}, "paste takes objects"),
    ("paint", {"class": 26, "x": 0, "y": 0, "radius": 2}, "paint draws stuff"),
    ("restyle", {"id": 7, "cluster": 99}, "cluster: 99 is outside"),
    ("open", {"index": True}, "index: expected a whole number, got true"),
])
def test_impossible_edits_are_a_400_with_the_reason(session, action, body, message):
    ok(session, "open", {"index": 0})
    status, answer = editor.handle(session, action, body)
    assert status == 400 and message in answer["error"]
    assert session.position == 0  # nothing pushed


def test_an_unexpected_error_is_a_500_in_one_line_and_the_session_goes_on(session, monkeypatch,
                                                                         capsys):
    def broken(editor, body):
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setitem(editor.ACTIONS, "undo", broken)
    status, answer = editor.handle(session, "undo", {})
    assert (status, answer) == (500, {"error": "internal error in undo: RuntimeError: a bug with "
                                               "a second line"})
    assert capsys.readouterr().err == f"editor: {answer['error']}\n"
    assert editor.handle(session, "open", {"index": 0})[0] == 200


# ---------------------------------------------------------------------------------------------
# Security, over HTTP
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def server(session):
    srv = editor.serve(session, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, method, path, body=b"", headers=None):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    content = response.read()
    connection.close()
    kind = response.getheader("Content-Type")
    return response.status, json.loads(content) if kind == "application/json" else content


def test_it_binds_to_localhost_unless_told_otherwise(server):
    assert server.server_address[0] == "127.0.0.1"
    opt = manipulate.build_parser().parse_args(["edit", "--name", "x", "--dataroot", "d"])
    assert opt.host == "127.0.0.1"
    status, page = request(server, "GET", "/")
    assert status == 200 and b"<title>pix2pixHD editor</title>" in page


@pytest.mark.parametrize("method, path, body, status, message", [
    ("POST", "/api/open", {"index": "../../../etc/passwd"}, 400, "index: expected a whole number"),
    ("POST", "/api/open", {"index": 0, "path": "/etc/passwd"}, 400, "unknown field(s) path"),
    ("POST", "/api/save", {"folder": "/tmp"}, 400, "unknown field(s) folder"),
    ("POST", "/api/../../etc/passwd", {}, 404, "no action"),
    ("GET", "/../editor.py", None, 404, "no page"),
    ("GET", "/etc/passwd", None, 404, "no page"),
])
def test_path_like_input_is_refused(server, method, path, body, status, message):
    got, answer = request(server, method, path, json.dumps(body).encode() if body else b"")
    assert got == status and message in answer["error"]


def test_an_oversized_body_is_refused_unread(server):
    with socket.create_connection(server.server_address[:2], timeout=30) as s:
        s.sendall(b"POST /api/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000000\r\n\r\n")  # the answer comes before any body
        answer = b""
        while chunk := s.recv(4096):  # the server answers, then closes the connection
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.0 413") and f"at most {editor.MAX_BODY}" in answer
    assert request(server, "GET", "/api/setup")[0] == 200  # and the server goes on


@pytest.mark.parametrize("body, message", [
    (b"{index: 0", "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b"[1, 2]", "must be a JSON object"),
])
def test_malformed_json_is_a_400_and_the_server_goes_on(server, body, message):
    status, answer = request(server, "POST", "/api/open", body)
    assert status == 400 and message in answer["error"] and "Traceback" not in answer["error"]
    assert request(server, "GET", "/api/setup")[0] == 200


def test_the_command_refuses_a_missing_dataset_in_one_line(feature_run, capsys, tmp_path):
    code, _, err = run_command(manipulate.main, [
        "edit", *feature_run["flags"], "--dataroot", tmp_path / "nothing", "--port", 0], capsys)
    assert code == 2 and err.count("\n") == 1 and "--dataroot" in err


def test_latency_is_measured_on_fresh_states_and_leaves_one(session):
    times = editor.measure_latency(session, repeats=2)
    assert set(times) == {"remove", "paint", "relabel", "undo"}
    assert all(ms > 0 for ms in times.values()) and times["undo"] < times["remove"]
    assert len(session.history) == 1 and session.position == 0


@pytest.mark.parametrize("opt, flag", [
    ({"label_nc": 35, "no_instance": True}, "--no_instance"),
    ({"label_nc": 0, "no_instance": False}, "--label_nc 0"),
    ({"label_nc": 35, "no_instance": False, "label_feat": True}, "--label_feat"),
    ({"label_nc": 35, "no_instance": False, "load_features": True}, "--load_features")])
def test_runs_without_label_ids_instance_maps_or_instance_features_are_refused_with_the_reason(
        opt, flag):
    model = SimpleNamespace(opt=SimpleNamespace(**opt), source="run/latest.pt")
    with pytest.raises(UserError, match=f"edits label maps of ids with instance maps and E's "
                                        f"features per instance; this run was trained with "
                                        f"{flag}$"):
        editor.Editor(model, "unused")
