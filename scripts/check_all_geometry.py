"""Check the derived geometry of every node of every network against the measured one.

For each network of ``napari_activations.list_networks()`` (random weights, nothing is
downloaded) and the two small user models of the tests, every local node's support along the
rows and along the columns (derived from the torch.fx graph) is compared with the support of
``d(activation pixel) / d(input)`` (:func:`napari_activations.geometry.check_geometry`).

    python scripts/check_all_geometry.py [NAME ...]

Prints one line per network (nodes checked, mismatches, seconds) and a total; exits 1 where a
node disagrees. Slow (minutes per big network, one core): the test suite checks every node of
the small networks and a sample of the big ones; this script checks them all.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torchvision.models import get_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import napari_activations as na  # noqa: E402
from napari_activations.geometry import check_geometry, derive_geometry  # noqa: E402
from napari_activations.network import _builder_kwargs  # noqa: E402


def build(name: str) -> torch.nn.Module:
    if name == "module:SmallCNN":
        from _models import SmallCNN

        return SmallCNN().eval()
    if name == "module:SmallUNet":
        from _models import SmallUNet

        return SmallUNet().eval()
    if name == "squeezenet1_1":
        return get_model(name, weights=None).eval()
    return get_model(name, weights=None, **_builder_kwargs(name, True)).eval()


def main(names: list[str]) -> int:
    torch.set_num_threads(1)
    names = names or [*na.list_networks(), "module:SmallCNN", "module:SmallUNet"]
    total_nodes = total_bad = 0
    start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build(name)
        rows = derive_geometry(model, input_size=(128, 128))
        nodes = [r.name for r in rows if r.support is not None]
        bad = check_geometry(model, nodes)
        seconds = time.perf_counter() - t0
        total_nodes += len(nodes)
        total_bad += len(bad)
        print(
            f"{name:20s} {len(nodes):4d} nodes of {len(rows):4d}, {len(bad)} mismatches, "
            f"{seconds:6.1f} s",
            flush=True,
        )
        for m in bad[:5]:
            print(f"    {m}", flush=True)
    print(
        f"total: {total_nodes} nodes, {total_bad} mismatches, {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    return 1 if total_bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
