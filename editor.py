"""The semantic editor of the paper's Fig. 1 and video, which NVIDIA never released: a local web
page over ``edits.py`` for a trained run. Click an object to select it; relabel, remove, add
(from a gallery of the dataset's objects), paint stuff, restyle with a cluster centre (sec. 3.4)
or shuffle every style; undo, redo, save. After each edit G redraws the photo from the edited
label map, boundary map and features (``infer.synthesize``).

Started by ``python manipulate.py edit --name NAME --dataroot ROOT``. The server is the standard
library's ``ThreadingHTTPServer`` and the page one static file (``editor/index.html``, plain
JavaScript): nothing to build, nothing more to install. The browser speaks JSON to ``/api/ACTION``
and names only dataset indices, instance ids, classes and pixels, never a file: the only files
read are the run and the dataset split given on the command line, and the only files written go
to the ``--out`` folder. It listens on 127.0.0.1 unless told otherwise, refuses request bodies
over ``MAX_BODY`` bytes, and answers malformed requests with a 400 and a one-line message.

Saved edits are in the dataset's id format (``*_gtFine_labelIds.png``, 16-bit
``*_gtFine_instanceIds.png``) at the size G ran at, with the instance features as a table
(``*_features.npz``) for runs with E, so that ``python infer.py --label .. --inst ..
[--features ..]`` draws the same image.
"""

import base64
import io
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

import data
import edits
import infer
import manipulate
import runs
from runs import UserError

MAX_BODY = 64 * 1024          # bytes: the largest request is a few numbers
PAGE = Path(__file__).resolve().parent / "editor" / "index.html"
GALLERY_SIZE = 12             # objects offered for pasting
THUMB_HEIGHT = 48


class RequestError(Exception):
    """A request the editor cannot do: a 400 with this one-line message."""


@dataclass
class State:
    """One step of the edit history: the maps G reads and the instance features."""
    index: int                  # which map of the split it started from
    label: np.ndarray           # (H, W) int64 label ids
    inst: np.ndarray            # (H, W) int64 instance ids
    table: Optional[dict]       # {instance id: (feat_num,) tensor}, None without E
    image: Optional[bytes] = None  # G's output as PNG, once drawn


class Editor:
    """One editing session over a trained ``model`` (``infer.Model``) and the ``phase`` split of
    ``dataroot``: the history with undo and redo, the selection, and the work of each request.
    Requests are served one at a time (``lock``): G and the history are shared."""

    def __init__(self, model, dataroot, phase="test", clusters=None, out_dir="results/edits",
                 seed=0):
        trained_with = [flag for flag, on in (
            ("--label_nc 0", model.opt.label_nc == 0), ("--no_instance", model.opt.no_instance),
            ("--label_feat", getattr(model.opt, "label_feat", False)),
            ("--load_features", getattr(model.opt, "load_features", False))) if on]
        if trained_with:  # label maps of ids, instance maps, and E's features per instance
            raise UserError(f"{model.source}: the editor edits label maps of ids with instance "
                            f"maps and E's features per instance; this run was trained with "
                            f"{trained_with[0]}")
        self.model, self.clusters, self.out_dir = model, clusters, Path(out_dir)
        self.dataset = infer.inference_dataset(model.opt, dataroot, phase)
        if len(self.dataset) == 0:
            raise UserError(f"--dataroot {dataroot}: the {phase} split is empty")
        self.generator = torch.Generator().manual_seed(seed)  # features of new instances
        self.seed, self.lock, self.selected, self.saves = seed, threading.Lock(), None, 0
        self.encoded = {}   # dataset index -> E's feature table on its photo
        self.history, self.position = [], -1
        self.open(0)
        self.gallery = self.object_gallery()

    # -- the history ------------------------------------------------------------------------

    @property
    def state(self):
        return self.history[self.position]

    def push(self, label, inst, table):
        """A new state after the current one; the redo branch is dropped, as in any editor."""
        if table is not None:
            table = edits.complete(table, inst, self.clusters, self.model.opt.feat_num,
                                   self.generator)
        self.history[self.position + 1:] = [State(self.state.index, label, inst, table)]
        self.position += 1

    def open(self, index):
        """Start over from map ``index`` of the split, its features E's on its photo (or, without
        a photo, the seeded cluster draw of ``infer.py --feature_source clusters``)."""
        item = self.dataset[index]
        label, inst = item["label"][0].numpy(), item["inst"][0].numpy()
        table = self.features_of(index, item) if self.model.E is not None else None
        self.history, self.position, self.selected = [State(index, label, inst, table)], 0, None

    def features_of(self, index, item):
        if index not in self.encoded:
            if item["has_image"]:
                F = infer.instance_feature_map(self.model, item["inst"][None], "encoded",
                                               item["image"][None])
                self.encoded[index] = edits.feature_table(F, item["inst"])
            else:
                self.encoded[index] = edits.diverse(item["inst"], self.clusters,
                                                    self.model.opt.feat_num, self.seed)
        return self.encoded[index]

    # -- what G draws -----------------------------------------------------------------------

    def image(self):
        """The current state's synthesized photo as PNG bytes, drawn once per state."""
        state = self.state
        if state.image is None:
            label = torch.from_numpy(state.label)[None, None]
            inst = torch.from_numpy(state.inst)[None, None]
            F = None
            if state.table is not None:
                F = infer.table_feature_map(inst, state.table, self.model.opt.feat_num)
            fake = infer.synthesize(self.model, label, inst, F)
            state.image = png(data.tensor_to_image(fake[0].cpu()))
        return state.image

    def view(self, started=None):
        """The page's whole picture of the session, as JSON-ready values."""
        state = self.state
        image = self.image()
        if self.selected is not None and not (state.inst == self.selected).any():
            self.selected = None  # removed, or gone by an undo
        selected = None
        if self.selected is not None:
            c = data.instance_class(self.selected)
            selected = {"id": self.selected, "class": c, "name": data.class_name(c),
                        "pixels": int((state.inst == self.selected).sum())}
        return {"index": state.index, "stem": self.dataset.stems[state.index],
                "width": int(state.label.shape[1]), "height": int(state.label.shape[0]),
                "label": data_url(png(label_picture(state.label, state.inst, self.selected))),
                "image": data_url(image), "selected": selected,
                "undo": self.position > 0, "redo": self.position < len(self.history) - 1,
                "edits": self.position,
                "ms": None if started is None else round(1000 * (time.perf_counter() - started))}

    def styles_off(self):
        """Why style controls are off, or None when they work."""
        if self.model.E is None:
            return ("this run was trained without --instance_feat: it has no encoder E and no "
                    "instance features, so there are no styles to pick (labels still edit)")
        if not self.clusters:
            return ("no cluster file: run `python manipulate.py encode` for this run to get the "
                    "styles (K-means centres of E's features)")
        return None

    def setup(self):
        """What the page needs once: the split, the classes, the gallery, the style switch."""
        classes = [{"id": i, "name": name, "thing": edits.is_thing(i),
                    "rgb": "#%02x%02x%02x" % rgb}
                   for i, (name, rgb) in enumerate(data.CITYSCAPES_CLASSES)
                   if i < self.model.opt.label_nc]
        return {"maps": len(self.dataset), "classes": classes, "gallery": self.gallery,
                "styles_off": self.styles_off(), "styled": sorted(self.clusters or {}),
                "view": self.view()}

    def object_gallery(self):
        """Up to GALLERY_SIZE objects of the split to paste: the largest of each map, in map
        order, as {index, id, name, thumb} with a crop of its photo (or its label colour)."""
        items = []
        for index in range(len(self.dataset)):
            if len(items) >= GALLERY_SIZE:
                break
            item = self.dataset[index]
            objects = [d for d in manipulate.list_instances(item["inst"]) if d["id"] >= 1000]
            if not objects:
                continue
            d = max(objects, key=lambda d: d["pixels"])
            picture = (data.tensor_to_image(item["image"]) if item["has_image"]
                       else data.label_to_image(item["label"], self.model.opt.label_nc))
            mask = (item["inst"][0] == d["id"]).numpy()
            items.append({"index": index, "id": d["id"], "name": d["name"],
                          "thumb": data_url(png(thumbnail(picture, mask)))})
        return items


# -------------------------------------------------------------------------------------------------
# The requests: one method each, the body checked field by field
# -------------------------------------------------------------------------------------------------

def do_open(editor, body):
    editor.open(whole(body, "index", 0, len(editor.dataset) - 1))


def do_select(editor, body):
    x, y = pixel(editor, body)
    editor.selected = int(editor.state.inst[y, x])


def do_relabel(editor, body):
    state = editor.state
    label, inst, new_id = edits.relabel(state.label, state.inst, instance(editor, body),
                                        label_class(editor, body))
    editor.push(label, inst, state.table)
    editor.selected = new_id


def do_remove(editor, body):
    state = editor.state
    label, inst, _ = edits.remove(state.label, state.inst, instance(editor, body))
    editor.push(label, inst, state.table)


def do_add(editor, body):
    """Paste object ``id`` of map ``index`` at pixel (x, y), with its own feature (E on its
    photo) when the run has E."""
    index = whole(body, "index", 0, len(editor.dataset) - 1)
    source = editor.dataset[index]
    src_id = whole(body, "id", 0)
    if not (source["inst"] == src_id).any():
        raise RequestError(f"id: map {index} has no instance {src_id}")
    x, y = pixel(editor, body)
    state = editor.state
    label, inst, new_id = edits.paste(state.label, state.inst, source["label"], source["inst"],
                                      src_id, (x, y), real(body, "scale", 0.1, 10, 1.0),
                                      flag(body, "flip"))
    table = state.table
    if table is not None:
        table = {**table, new_id: editor.features_of(index, source)[src_id]}
    editor.push(label, inst, table)
    editor.selected = new_id


def do_paint(editor, body):
    """A brush (x, y, radius) or a box (x, y, x1, y1) of a stuff class."""
    state = editor.state
    x, y = pixel(editor, body)
    H, W = state.label.shape
    if "radius" in body:
        region = edits.brush((H, W), x, y, real(body, "radius", 0, max(H, W)))
    else:
        region = edits.box((H, W), x, y, whole(body, "x1", 0, W - 1), whole(body, "y1", 0, H - 1))
    label, inst = edits.paint(state.label, state.inst, region, label_class(editor, body))
    editor.push(label, inst, state.table)


def do_restyle(editor, body):
    centres = class_centres(editor, instance(editor, body))
    k = whole(body, "cluster", 0, len(centres) - 1)
    state = editor.state
    editor.push(state.label, state.inst, edits.restyle(state.table, body["id"], centres[k]))


def do_shuffle(editor, body):
    """Every instance drawn from its class's clusters with ``seed`` (sec. 3.4's diverse
    results): the image ``infer.py --feature_source clusters --seed SEED`` draws."""
    require_styles(editor)
    state = editor.state
    editor.push(state.label, state.inst, edits.diverse(
        state.inst, editor.clusters, editor.model.opt.feat_num, whole(body, "seed", 0)))


def do_undo(editor, body):
    if editor.position == 0:
        raise RequestError("nothing to undo")
    editor.position -= 1


def do_redo(editor, body):
    if editor.position == len(editor.history) - 1:
        raise RequestError("nothing to redo")
    editor.position += 1


def do_styles(editor, body):
    """The selected instance drawn with each centre of its class, as ``manipulate.py gallery
    --zoom`` draws them: {"styles": [data URLs]}."""
    instance_id = instance(editor, body)
    centres = class_centres(editor, instance_id)
    state = editor.state
    label = torch.from_numpy(state.label)[None, None]
    inst = torch.from_numpy(state.inst)[None, None]
    F = infer.table_feature_map(inst, state.table, editor.model.opt.feat_num)
    images = manipulate.gallery(editor.model, label, inst, F, instance_id, centres)
    pictures = manipulate.zoom([data.tensor_to_image(x[0].cpu()) for x in images],
                               state.inst == instance_id, min_height=THUMB_HEIGHT)
    return {"styles": [data_url(png(p)) for p in pictures]}


def do_save(editor, body):
    """The current maps (dataset id format), image and features to ``--out``, atomically."""
    state = editor.state
    editor.saves += 1
    stem = f"{editor.dataset.stems[state.index]}_edit{editor.saves}"
    files = {f"{stem}_gtFine_labelIds.png": png(Image.fromarray(state.label.astype(np.uint8))),
             f"{stem}_gtFine_instanceIds.png": png(Image.fromarray(state.inst.astype(np.uint16))),
             f"{stem}_synthesized.png": editor.image()}
    if state.table is not None:
        buffer = io.BytesIO()
        infer.write_feature_table(buffer, state.table)
        files[f"{stem}_features.npz"] = buffer.getvalue()
    editor.out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_atomically(editor.out_dir / name, content)
    return {"saved": sorted(files), "folder": str(editor.out_dir)}


ACTIONS = {"open": do_open, "select": do_select, "relabel": do_relabel, "remove": do_remove,
           "add": do_add, "paint": do_paint, "restyle": do_restyle, "shuffle": do_shuffle,
           "undo": do_undo, "redo": do_redo, "styles": do_styles, "save": do_save}
FIELDS = {"open": {"index"}, "select": {"x", "y"}, "relabel": {"id", "class"},
          "remove": {"id"}, "add": {"index", "id", "x", "y", "scale", "flip"},
          "paint": {"class", "x", "y", "radius", "x1", "y1"}, "restyle": {"id", "cluster"},
          "shuffle": {"seed"}, "undo": set(), "redo": set(), "styles": {"id"}, "save": set()}


def handle(editor, action, body):
    """One request: (status, JSON-ready answer). Edits answer with the new view."""
    if action not in ACTIONS:
        return 404, {"error": f"no action {action!r}; the actions are {', '.join(ACTIONS)}"}
    if not isinstance(body, dict):
        return 400, {"error": "the request body must be a JSON object"}
    unknown = sorted(set(body) - FIELDS[action])
    if unknown:
        return 400, {"error": f"{action} takes {', '.join(sorted(FIELDS[action])) or 'nothing'};"
                              f" unknown field(s) {', '.join(map(str, unknown))}"}
    started = time.perf_counter()
    with editor.lock:
        try:
            extra = ACTIONS[action](editor, body) or {}
        except (RequestError, edits.EditError, UserError) as err:
            return 400, {"error": str(err)}
        except Exception as err:  # a bug: the page hears of it, the server goes on
            line = f"internal error in {action}: {type(err).__name__}: {runs.error_line(err)}"
            print(f"editor: {line}", file=sys.stderr)
            return 500, {"error": line}
        return 200, {**extra, "view": editor.view(started)}


def whole(body, key, lo, hi=None, default=None):
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key}: expected a whole number, got {json.dumps(value)[:40]}")
    if value < lo or (hi is not None and value > hi):
        raise RequestError(f"{key}: {value} is outside {lo}..{'' if hi is None else hi}")
    return value


def real(body, key, lo, hi, default=None):
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise RequestError(f"{key}: expected a number in {lo}..{hi}, got "
                           f"{json.dumps(value)[:40]}")
    return float(value)


def flag(body, key):
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise RequestError(f"{key}: expected true or false")
    return value


def pixel(editor, body):
    H, W = editor.state.label.shape
    return whole(body, "x", 0, W - 1), whole(body, "y", 0, H - 1)


def instance(editor, body):
    instance_id = whole(body, "id", 0)
    if not (editor.state.inst == instance_id).any():
        raise RequestError(f"id: no instance {instance_id} in the map")
    return instance_id


def label_class(editor, body):
    """A class by label id or Cityscapes name, one the model has a channel for."""
    value = body.get("class")
    names = [name for name, _ in data.CITYSCAPES_CLASSES]
    if isinstance(value, str) and value in names:
        value = names.index(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"class: expected a label id or a class name, got "
                           f"{json.dumps(value)[:40]}")
    if not 0 <= value < editor.model.opt.label_nc:
        raise RequestError(f"class: {value} is not one of this model's label ids "
                           f"0..{editor.model.opt.label_nc - 1}")
    return value


def require_styles(editor):
    reason = editor.styles_off()
    if reason:
        raise RequestError(reason)


def class_centres(editor, instance_id):
    require_styles(editor)
    c = data.instance_class(instance_id)
    if c not in editor.clusters:
        raise RequestError(f"class {c} ({data.class_name(c)}) has no clusters in the cluster "
                           "file: no styles to pick for it")
    return editor.clusters[c]


# -------------------------------------------------------------------------------------------------
# Pictures and files
# -------------------------------------------------------------------------------------------------

def label_picture(label, inst, selected=None):
    """The label map in the Cityscapes colours, instance boundaries darkened (two cars side by
    side stay two) and the selected instance lightened (``manipulate.highlight``)."""
    label, inst = torch.from_numpy(label)[None, None], torch.from_numpy(inst)[None, None]
    picture = (manipulate.highlight(label, inst, selected, 35) if selected is not None
               else data.label_to_image(label[0], 35))
    picture = np.asarray(picture).astype(np.float32)
    edge = data.instance_boundaries(inst)[0, 0].numpy() > 0
    picture[edge] *= 0.55
    return Image.fromarray(picture.astype(np.uint8))


def thumbnail(picture, mask):
    """An object's bounding box cut from ``picture``, the rest of the box dimmed, THUMB_HEIGHT
    pixels high."""
    ys, xs = np.nonzero(mask)
    pixels = np.asarray(picture).astype(np.float32)
    pixels[~mask] = 0.3 * pixels[~mask] + 0.7 * 255
    crop = Image.fromarray(pixels.astype(np.uint8)).crop(
        (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    width = max(1, round(crop.width * THUMB_HEIGHT / crop.height))
    return crop.resize((width, THUMB_HEIGHT), Image.NEAREST)


def png(picture):
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png_bytes):
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def write_atomically(path, content):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(content)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------------
# Latency
# -------------------------------------------------------------------------------------------------

def measure_latency(editor, repeats=5):
    """Edit-to-image time: the median milliseconds of ``repeats`` requests of each kind, from
    the request to its answer with the new image and label picture as PNGs (HTTP aside), on map
    0: remove its largest object; paint a brush of radius 4 at its centre; relabel it; undo (a
    state already drawn: no G). Each edit is undone before the next, so all start alike."""
    do_open(editor, {"index": 0})
    inst = editor.state.inst
    ids, counts = np.unique(inst[inst >= 1000], return_counts=True)
    if not len(ids):
        raise UserError("map 0 has no object to time the edits on")
    target = int(ids[counts.argmax()])
    ys, xs = np.nonzero(inst == target)
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    stuff = next(c for c in range(editor.model.opt.label_nc) if c != data.instance_class(
        target) and not edits.is_thing(c) and (editor.state.label == c).any())
    requests = {"remove": {"id": target}, "paint": {"class": stuff, "x": x, "y": y, "radius": 4},
                "relabel": {"id": target, "class": stuff}}
    times = {kind: [] for kind in [*requests, "undo"]}
    for _ in range(repeats):
        for kind, body in requests.items():
            for action, request in ((kind, body), ("undo", {})):
                started = time.perf_counter()
                status, answer = handle(editor, action, request)
                times[action].append(1000 * (time.perf_counter() - started))
                if status != 200:
                    raise UserError(f"timing {action}: {answer['error']}")
            editor.history = editor.history[:1]  # the next repeat draws its image anew
    return {kind: float(np.median(t)) for kind, t in times.items()}


# -------------------------------------------------------------------------------------------------
# The server
# -------------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """GET / (the page), GET /api/setup, POST /api/ACTION with a JSON object. Every answer is
    JSON (the page excepted); no request reaches a file by its name."""
    editor = None       # set by ``serve`` on a subclass
    quiet = True
    server_version = "pix2pixHD-editor"

    def do_GET(self):
        if self.path in ("/", "/index.html"):
            self.answer(200, PAGE.read_bytes(), "text/html; charset=utf-8")
        elif self.path == "/api/setup":
            with self.editor.lock:
                self.answer_json(200, self.editor.setup())
        else:
            self.answer_json(404, {"error": f"no page {self.path[:80]!r}; open /"})

    def do_POST(self):
        if not self.path.startswith("/api/"):
            return self.answer_json(404, {"error": "POST to /api/ACTION"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.answer_json(411, {"error": "a Content-Length header is required"})
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True  # the body is not read: the connection cannot go on
            return self.answer_json(413, {"error": f"request body of {length} bytes; at most "
                                                   f"{MAX_BODY}"})
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return self.answer_json(400, {"error": f"malformed JSON: {err}"})
        self.answer_json(*handle(self.editor, self.path[len("/api/"):], body))

    def answer_json(self, status, value):
        self.answer(status, json.dumps(value).encode(), "application/json")

    def answer(self, status, content, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format, *args):
        if not self.quiet:
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """An unexpected error in a request: one line on stderr and a 500 to the browser (when
        the answer has not started), never a traceback, and the server goes on."""
        err = sys.exc_info()[1]
        print(f"editor: {type(err).__name__}: {err}", file=sys.stderr)


def serve(editor, host="127.0.0.1", port=8000, quiet=True):
    """A server for ``editor`` bound to (host, port) (port 0: any free one), not yet running:
    call ``serve_forever`` (and ``shutdown``). Its URL is ``url(server)``."""
    handler = type("EditorHandler", (Handler,), {"editor": editor, "quiet": quiet})
    return Server((host, port), handler)


def url(server):
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"
