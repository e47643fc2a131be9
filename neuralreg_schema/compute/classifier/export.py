"""A trained classifier as a file that loads without neuralreg: `torch.export` (an ExportedProgram,
torch.export.save / torch.export.load), with its provenance in the archive's extra files. Pure
PyTorch; never imports datajoint.

    ExportedClassifier    the wrapper that is exported: RGB (B, 3, H, W) or grayscale (B, 1, H, W) images
                          in [0, 1] in, logits out
    export_classifier     write the file (fp32, eval mode, batch size free)
    load_exported         read it back (what a user does with torch alone: torch.export.load(path).module())

RGB input is converted to luma inside the graph with the BT.601 weights the data sets use
(data.rgb_to_gray: 0.299 R + 0.587 G + 0.114 B) but without the rounding to integers, so gradients
flow to the three channels (an attack on the RGB model perturbs colours; only their luma reaches the
network). Why torch.export and not TorchScript: the network is plain convolutions, BatchNorm in eval
mode and a fixed standardisation, which torch.export captures whole; TorchScript is deprecated.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import torch
from torch import nn

LUMA = (0.299, 0.587, 0.114)          # data.rgb_to_gray's weights (ITU-R BT.601)
INPUTS = {"rgb": 3, "gray": 1}
METADATA_FILE = "neuralreg.json"      # the extra file holding the key, the config and the code version


class ExportedClassifier(nn.Module):
    """`net` (images (B, 1, H, W) in [0, 1] -> logits or (logits, ...)) taking `input` images: 'rgb'
    (B, 3, H, W), converted to luma without rounding, or 'gray' (B, 1, H, W); returns the logits."""

    def __init__(self, net: nn.Module, input: str = "rgb"):
        super().__init__()
        if input not in INPUTS:
            raise ValueError(f"input {input!r}: choose one of {', '.join(INPUTS)}")
        self.net, self.input = net, input
        self.register_buffer("luma", torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input == "rgb":
            x = (x * self.luma).sum(dim=1, keepdim=True)
        out = self.net(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def export_classifier(net: nn.Module, path: Union[str, Path], *, input: str = "rgb", size: tuple = (32, 32),
                      metadata: dict | None = None) -> Path:
    """Write `net` wrapped in ExportedClassifier(input) as a torch.export archive at `path`: fp32 on the
    CPU, eval mode, any batch size; `metadata` (JSON-able) goes into the archive as METADATA_FILE,
    with the input layout added. The file is written beside `path` and renamed over it."""
    import copy
    import os
    import tempfile
    wrapped = ExportedClassifier(copy.deepcopy(net).float().cpu().eval(), input).eval()
    example = torch.rand(2, INPUTS[input], *size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.export.export(wrapped, (example,), dynamic_shapes={"x": {0: batch}})
    meta = {**(metadata or {}), "input": {"layout": "NCHW", "channels": INPUTS[input], "height": size[0],
                                          "width": size[1], "range": [0.0, 1.0], "dtype": "float32",
                                          "luma": list(LUMA) if input == "rgb" else None},
            "output": "logits", "torch_version": torch.__version__}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".pt2")   # torch.export: .pt2
    os.close(fd)
    try:
        torch.export.save(program, tmp, extra_files={METADATA_FILE: json.dumps(meta, sort_keys=True)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                 # mkstemp's 0600 -> the mode a new file gets
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_exported(path: Union[str, Path]) -> tuple[nn.Module, dict]:
    """(the module, its metadata) of a file export_classifier wrote: torch alone, no neuralreg code."""
    extra = {METADATA_FILE: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), json.loads(extra[METADATA_FILE] or "{}")


__all__ = ["INPUTS", "LUMA", "METADATA_FILE", "ExportedClassifier", "export_classifier", "load_exported"]
