"""The attribution widget's "Class" row: the class to explain, typed or picked from the top 5."""

from __future__ import annotations

from qtpy.QtCore import QObject
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QPushButton

__all__ = ["ClassChoice"]


class ClassChoice(QObject):
    """An editable class list (a category name or index) and the "Top 5" button."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.target_combo = QComboBox()
        self.target_combo.setEditable(True)
        self.target_combo.setToolTip(
            "The class to explain: press 'Top 5' for the image's five "
            "most likely classes, or type a category name or index."
        )
        self.top5_button = QPushButton("Top 5")

    def add_rows(self, form: QFormLayout) -> None:
        """Put the row in ``form`` (the widget's own, so that the columns line up)."""
        row = QHBoxLayout()
        row.addWidget(self.target_combo, 1)
        row.addWidget(self.top5_button)
        form.addRow("Class", row)

    def set_target(self, target: str | int) -> None:
        self.target_combo.setCurrentText(str(target))

    def target(self) -> str | int:
        """The class typed or chosen: an index where it is a whole number, else a name."""
        text = self.target_combo.currentText().strip()
        data = self.target_combo.currentData()
        if (
            data is not None
            and self.target_combo.itemText(self.target_combo.currentIndex()) == text
        ):
            return data
        return int(text) if text.lstrip("-").isdigit() else text

    def offer(self, classes: list[tuple[str, float]]) -> None:
        """Offer ``(name, probability)`` classes, the first chosen."""
        self.target_combo.clear()
        for name, p in classes:
            self.target_combo.addItem(f"{name} ({p:.0%})", name)
        self.target_combo.setCurrentIndex(0)
