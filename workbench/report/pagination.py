"""Page breaking for reports: blocks placed whole, tables broken between rows.

Qt-free, so the rules are tested without a renderer; `workbench.gui.report_pdf`
measures and paints the blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Block:
    """Something placed whole on one page. keep_with_next: never the last thing on a page."""

    height: float
    paint: Callable[[Any, float, float], None]  # (painter, x, y); the painter is the renderer's (a QPainter)
    gap: float = 6.0  # space after it
    keep_with_next: bool = False
    header: Block | None = None  # a table row's header, repeated when the table continues on a new page
    min_scale: float = 1.0  # a figure may be drawn this much smaller to finish a page instead of leaving it half empty
    scale: float = 1.0  # what pagination chose

    @property
    def placed_height(self) -> float:
        return self.height * self.scale

    @property
    def min_height(self) -> float:
        return self.height * self.min_scale

    def draw(self, painter, x: float, y: float) -> None:
        if self.scale == 1.0:
            self.paint(painter, x, y)
            return
        painter.save()
        painter.translate(x, y)
        painter.scale(self.scale, self.scale)
        self.paint(painter, 0.0, 0.0)
        painter.restore()


@dataclass
class Page:
    items: list = field(default_factory=list)  # (block, y)


def paginate(blocks: list[Block], page_height: float) -> list[Page]:
    pages = [Page()]
    y = 0.0
    for index, block in enumerate(blocks):
        block.scale = 1.0
        need = block.height
        if block.keep_with_next:  # the chain of headings and what follows them goes together
            j = index
            need = 0.0
            while j < len(blocks) and blocks[j].keep_with_next:
                need += blocks[j].height + blocks[j].gap
                j += 1
            if j < len(blocks):
                need += blocks[j].min_height
            need = min(need, page_height)
        elif y > 0 and y + need > page_height and y + block.min_height <= page_height:
            block.scale = (page_height - y) / block.height  # a slightly smaller figure fills the page
            need = block.placed_height
        if y > 0 and y + need > page_height:
            block.scale = 1.0
            pages.append(Page())
            y = 0.0
            if block.header is not None:  # a table continues: its header again
                pages[-1].items.append((block.header, y))
                y += block.header.height
        pages[-1].items.append((block, y))
        y += block.placed_height + block.gap
    return pages
