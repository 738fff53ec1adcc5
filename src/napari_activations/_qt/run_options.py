"""The main widget's options rows: the input scale, the contrast, and (advanced) where the
network runs, what runs it, and in what precision."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout

__all__ = ["RunOptions"]


class RunOptions(QObject):
    """How a Run computes and shows: :meth:`chosen` gives the compute's keyword arguments;
    ``contrast_combo`` and ``replace_check`` say how the result is shown."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(0.1, 8.0)
        self.scale_spin.setSingleStep(0.25)
        self.scale_spin.setDecimals(2)
        self.scale_spin.setValue(1.0)
        self.scale_spin.setToolTip(
            "The network sees the image resized by this factor; the "
            "activations are placed back on the image's own pixels."
        )
        self.contrast_combo = QComboBox()
        self.contrast_combo.addItem("each channel (mat2gray per channel)", "channel")
        self.contrast_combo.addItem("whole layer (one range)", "global")
        self.stack_contrast_combo = QComboBox()
        self.stack_contrast_combo.addItem("whole stack (sampled planes)", "stack")
        self.stack_contrast_combo.addItem("each plane (follows the slider)", "plane")
        self.stack_contrast_combo.setToolTip(
            "For stacks. Whole stack: one range per channel for every plane, estimated from "
            "a few planes spread over the stack (widened by any plane shown later that goes "
            "beyond it), so brightness compares between planes. Each plane: every plane uses "
            "its own full range."
        )
        self.border_check = QCheckBox("Count the image border")
        self.border_check.setToolTip(
            "Off: the starting channel and the contrast leave out the border within half a "
            "receptive field of the image edge, where the network's zero padding shows (some "
            "channels answer it on any image, even a blank one)."
        )
        self.replace_check = QCheckBox("Replace the image's earlier activation layers")
        self.replace_check.setToolTip(
            "Checked: one activation layer per image, the latest. Unchecked: earlier results "
            "stay beneath the new one, for comparison."
        )
        self.device_combo = QComboBox()
        self.device_combo.addItem("auto: GPU if there is one, else CPU", "auto")
        self.device_combo.addItem("CPU", "cpu")
        self.device_combo.addItem("CUDA GPU", "cuda")
        self.device_combo.addItem("Apple GPU (MPS)", "mps")
        self.device_combo.setToolTip(
            "Where the network runs. A GPU that is not there is reported when you press Run."
        )
        self.backend_combo = QComboBox()
        self.backend_combo.addItem("auto: ONNX Runtime on the CPU, PyTorch on a GPU", "auto")
        self.backend_combo.addItem("PyTorch", "torch")
        self.backend_combo.addItem("ONNX Runtime (CPU only)", "onnxruntime")
        self.backend_combo.setToolTip(
            "What runs the network. Every backend gives the same activations (within 1e-5 of "
            "the layer's maximum); ONNX Runtime, the fastest on the CPU, runs after a "
            "first-time export of under a second per network layer. The backend that ran is "
            "recorded in the layer's metadata."
        )
        self.precision_combo = QComboBox()
        self.precision_combo.addItem("float32", "float32")
        self.precision_combo.addItem("float16 (GPU only)", "float16")
        self.precision_combo.addItem("bfloat16 (GPU only)", "bfloat16")
        self.precision_combo.setToolTip(
            "Arithmetic of the forward pass. Half precision is "
            "faster on GPUs and slightly less exact; activations "
            "are float32 either way."
        )

    def add_rows(self, form: QFormLayout) -> None:
        """Put the choices in ``form`` (the widget's own, so that the columns line up)."""
        form.addRow("Input scale", self.scale_spin)
        form.addRow("Contrast", self.contrast_combo)
        form.addRow("Stack contrast", self.stack_contrast_combo)
        form.addRow("", self.border_check)
        form.addRow("", self.replace_check)
        form.addRow("Device", self.device_combo)
        form.addRow("Backend (advanced)", self.backend_combo)
        form.addRow("Precision (advanced)", self.precision_combo)

    def set_device(self, device: str) -> None:
        """Run on ``device`` ("auto", "cpu", "cuda" or "mps") from the next Run on."""
        index = self.device_combo.findData(device)
        if index < 0:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'mps'; got {device!r}.")
        self.device_combo.setCurrentIndex(index)

    def set_backend(self, backend: str, precision: str = "float32") -> None:
        """Run with ``backend`` ("auto", "torch", "onnxruntime") and ``precision`` from the
        next Run on."""
        for combo, value, name in (
            (self.backend_combo, backend, "backend"),
            (self.precision_combo, precision, "precision"),
        ):
            index = combo.findData(value)
            if index < 0:
                choices = ", ".join(repr(combo.itemData(i)) for i in range(combo.count()))
                raise ValueError(f"{name} must be one of {choices}; got {value!r}.")
            combo.setCurrentIndex(index)

    def chosen(self) -> dict[str, Any]:
        """The choices as :func:`compute_for_image_layer` takes them (keyword arguments)."""
        return {
            "input_scale": self.scale_spin.value(),
            "stack_contrast": self.stack_contrast_combo.currentData(),
            "include_border": self.border_check.isChecked(),
            "device": self.device_combo.currentData(),
            "backend": self.backend_combo.currentData(),
            "precision": self.precision_combo.currentData(),
        }
