"""A trained generator G as an ONNX graph with dynamic height and width, checked against
PyTorch with onnxruntime.

The graph is G alone: its input ``x`` is G's input (B, C, H, W), the one-hot label map, the
instance boundary map and, with instance features, E's features (``data.generator_input``, as
``infer.synthesize`` builds it), and its output ``image`` is (B, 3, H, W) in [-1, 1]. B, H and W
are dynamic: any batch, any multiple of G's total downsampling. The official ``--export_onnx``
traced its whole model object with the label and instance maps as arguments; its encoding of the
maps (one-hot, boundary map) read them through ``.data``, which the tracer does not follow, so
they entered the graph as constants and left it without inputs (NVIDIA/pix2pixHD issue #262).
Exporting only the network, whose input is a tensor, avoids that; the encoding stays with the
caller (a few lines of numpy).

``onnx``, ``onnxruntime`` and ``onnxscript`` (which ``torch.onnx.export`` uses) are needed only
here, and imported only when a graph is exported.
"""

import time

import torch

# |ONNX Runtime - PyTorch| allowed on G's output in [-1, 1], in fp32: an eighth of one 8-bit
# level (2/255 = 0.0078), so no saved pixel can differ by more than its rounding. The two differ
# only in the order of floating-point sums (measured: 1e-5 to 5e-5, instance norm over small
# maps amplifying them most).
TOLERANCE = 1e-3

PIP = "pip install onnx onnxruntime onnxscript"


class ExportFailed(Exception):
    """The exported graph does not compute what G computes, or a package is missing."""


def export(G, x, path):
    """Write G as ONNX to ``path``, traced on the example input ``x`` (1, C, H, W), with the batch
    size, H and W dynamic. Returns the seconds the export took."""
    try:
        import onnxscript  # noqa: F401  (torch.onnx.export needs it, and names it less clearly)
    except ImportError:
        raise ExportFailed(f"ONNX export needs the onnx packages: {PIP}") from None
    B, H, W = torch.export.Dim("B", min=1), torch.export.Dim("H"), torch.export.Dim("W")
    # Traced on a batch of two: torch.export would take a batch of one for a constant.
    example = torch.cat([x, x])
    start = time.perf_counter()
    torch.onnx.export(G.eval(), (example,), str(path), input_names=["x"], output_names=["image"],
                      dynamic_shapes={"x": {0: B, 2: H, 3: W}}, dynamo=True, verbose=False,
                      external_data=False)  # one file (protobuf's limit, 2 GB, holds 1024p's G)
    return time.perf_counter() - start


def check(path, G, inputs, repeats=5):
    """Run the graph at ``path`` with onnxruntime on each input (1, C, H, W) of ``inputs`` (two
    sizes prove the dynamic axes) and compare with G (on the CPU) in PyTorch. Returns one dict
    per input: size, the largest absolute difference, and the seconds of each (the fastest of
    ``repeats`` runs).
    Raises ExportFailed beyond ``TOLERANCE``."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportFailed(f"checking the ONNX graph needs onnxruntime: {PIP}") from None
    options = onnxruntime.SessionOptions()
    # The same threads as PyTorch, which do not spin between runs (they would take the cores
    # from PyTorch's turn in the comparison).
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    results = []
    for x in inputs:
        x = x.detach().float().cpu()
        with torch.inference_mode():
            runs = {"pytorch": lambda: G(x),
                    "onnxruntime": lambda: torch.from_numpy(
                        session.run(["image"], {"x": x.numpy()})[0])}
            outputs, seconds = timed(runs, repeats)
        diff = float((outputs["onnxruntime"] - outputs["pytorch"]).abs().max())
        size = f"{x.shape[3]}x{x.shape[2]}"
        if not diff <= TOLERANCE:
            raise ExportFailed(f"{path}: ONNX Runtime differs from PyTorch by {diff:.3g} at "
                               f"{size} (tolerance {TOLERANCE}); the graph is not G")
        results.append({"size": size, "max_abs_diff": diff,
                        **{f"{k}_s": v for k, v in seconds.items()}})
    return results


def timed(computations, repeats):
    """({name: result}, {name: the fastest of ``repeats`` runs}) of the named computations, after
    one warm-up run each, taking turns so that a busy machine slows them alike; the fastest run
    is the least disturbed by other processes."""
    outputs = {name: compute() for name, compute in computations.items()}
    seconds = {name: [] for name in computations}
    for _ in range(repeats):
        for name, compute in computations.items():
            start = time.perf_counter()
            compute()
            seconds[name].append(time.perf_counter() - start)
    return outputs, {name: min(s) for name, s in seconds.items()}


def second_size(x, multiple):
    """A crop of the real input ``x`` (1, C, H, W) to about half its height and width (multiples
    of ``multiple``, at least one): a second size for the dynamic axes, with real content."""
    H, W = x.shape[-2:]
    h, w = (max(multiple, (side // 2) // multiple * multiple) for side in (H, W))
    return x[..., :h, :w].contiguous()
