"""A trained generator G as an ONNX graph with dynamic height and width, checked against PyTorch
with onnxruntime.

The graph is G alone: its input ``x`` is G's input (B, C, H, W), the one-hot label map, the
instance boundary map and, with instance features, E's features (``data.generator_input``, as
``infer.synthesize`` builds it), and its output ``image`` is (B, 3, H, W) in [-1, 1]. H and W are
dynamic: any multiple of G's total downsampling. The official ``--export_onnx`` traced its whole
model object with the label and instance maps as arguments; the one-hot encoding and the boundary
map ran in Python on the example tensors, so they were frozen into the graph as constants, which
left a graph without inputs (NVIDIA/pix2pixHD issue #262). Exporting only the network, whose
input is a tensor, avoids that; the encoding stays with the caller (a few lines of numpy).

``onnx``, ``onnxruntime`` and ``onnxscript`` (which ``torch.onnx.export`` uses) are needed only
here, and imported only when a graph is exported.
"""

import time

import torch

# |ONNX Runtime - PyTorch| allowed on G's output in [-1, 1], in fp32: far below one 8-bit level
# (2/255 = 0.0078); the two differ only in the order of floating-point sums.
TOLERANCE = 1e-4

PIP = "pip install onnx onnxruntime onnxscript"


class ExportFailed(Exception):
    """The exported graph does not compute what G computes, or a package is missing."""


def export(G, x, path):
    """Write G as ONNX to ``path``, traced on the example input ``x`` (1, C, H, W), with H and W
    dynamic. Returns the seconds the export took."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export needs it, and names it less clearly)
    except ImportError:
        raise ExportFailed(f"ONNX export needs the onnx packages: {PIP}") from None
    H, W = torch.export.Dim("H"), torch.export.Dim("W")
    start = time.perf_counter()
    torch.onnx.export(G.eval(), (x,), str(path), input_names=["x"], output_names=["image"],
                      dynamic_shapes={"x": {2: H, 3: W}}, dynamo=True, verbose=False)
    return time.perf_counter() - start


def check(path, G, inputs, repeats=3):
    """Run the graph at ``path`` with onnxruntime on each input (1, C, H, W) of ``inputs`` (two
    sizes prove the dynamic axes) and compare with G (on the CPU) in PyTorch. Returns one dict per input:
    size, the largest absolute difference, and the median seconds of each over ``repeats`` runs.
    Raises ExportFailed beyond ``TOLERANCE``."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportFailed(f"checking the ONNX graph needs onnxruntime: {PIP}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results = []
    for x in inputs:
        x = x.detach().float().cpu()
        with torch.inference_mode():
            expected, torch_s = timed(lambda: G(x), repeats)
        actual, ort_s = timed(lambda: session.run(["image"], {"x": x.numpy()})[0], repeats)
        diff = float((torch.from_numpy(actual) - expected).abs().max())
        size = f"{x.shape[3]}x{x.shape[2]}"
        if not diff <= TOLERANCE:
            raise ExportFailed(f"{path}: ONNX Runtime differs from PyTorch by {diff:.3g} at "
                               f"{size} (tolerance {TOLERANCE}); the graph is not G")
        results.append({"size": size, "max_abs_diff": diff, "onnxruntime_s": ort_s,
                        "pytorch_s": torch_s})
    return results


def timed(compute, repeats):
    """(the result, the median seconds of ``repeats`` runs after one warm-up run)."""
    result = compute()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        compute()
        seconds.append(time.perf_counter() - start)
    return result, sorted(seconds)[len(seconds) // 2]


def second_size(x, multiple):
    """A crop of the real input ``x`` (1, C, H, W) to about half its height and width (multiples
    of ``multiple``, at least one): a second size for the dynamic axes, with real content."""
    H, W = x.shape[-2:]
    h, w = (max(multiple, (side // 2) // multiple * multiple) for side in (H, W))
    return x[..., :h, :w].contiguous()
