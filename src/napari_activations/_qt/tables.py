"""Read-only tables of channels or network layers, whose rows a click selects."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

__all__ = ["fill_table", "first_column_int", "make_table"]


def make_table(tooltip: str) -> QTableWidget:
    """An empty table: whole rows selected, one at a time, no row numbers."""
    table = QTableWidget()
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    table.setToolTip(tooltip)
    table.setMinimumHeight(140)
    return table


def fill_table(table: QTableWidget, rows: np.ndarray | list[tuple], headers: list[str]) -> None:
    """Show ``rows`` (a structured array, or tuples) in ``table``; the first column is the
    channel or network layer that a click selects."""
    table.clear()
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, (float, np.floating)):
                text = "–" if np.isnan(value) else f"{value:.4g}"
            else:
                text = str(value)
            item = QTableWidgetItem(text)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            table.setItem(r, c, item)
    table.resizeColumnsToContents()


def first_column_int(table: QTableWidget, row: int) -> int | None:
    """The whole number in ``row``'s first cell (a channel), or None for no such row."""
    item = table.item(row, 0)
    return None if item is None else int(item.text())
