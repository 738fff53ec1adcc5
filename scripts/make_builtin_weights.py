"""Write the built-in weights file from a float32 SqueezeNet v1.1 Caffe state_dict.

    python scripts/make_builtin_weights.py path/to/squeezenet1_1_caffe_imagenet.pth

The upstream release was stored at float16, so every tensor but conv1's (where Caffe's input
convention was folded in, in float32) is exactly a float16 value: this stores those as float16
and conv1 as float32, and checks that the file loads back to the same float32 numbers, bit for
bit. Refuses a source where that does not hold.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

OUT = (
    Path(__file__).resolve().parents[1]
    / "src"
    / "napari_activations"
    / "data"
    / "squeezenet1_1_caffe_imagenet.pth"
)


def main(source: str) -> int:
    state = torch.load(source, map_location="cpu", weights_only=True)
    packed = {}
    for name, tensor in state.items():
        if name.startswith("features.0."):
            packed[name] = tensor.float().clone()
            continue
        half = tensor.half()
        if not torch.equal(half.float(), tensor):
            print(f"{name} is not exactly float16: refusing to round it.", file=sys.stderr)
            return 1
        packed[name] = half.clone()
    torch.save(packed, OUT)
    back = torch.load(OUT, weights_only=True)
    assert all(torch.equal(back[k].float(), state[k].float()) for k in state)
    print(f"wrote {OUT.name}: {OUT.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
