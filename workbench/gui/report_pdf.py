"""A Report as a paginated PDF, drawn with Qt (QPdfWriter, QPainter, QSvgRenderer).

It lives with the GUI because it uses Qt, and is imported only when a PDF is asked
for (by `workbench report --pdf` or File → Export report). It runs headless: without
a display it uses Qt's offscreen platform.

The page is laid out by us rather than by printing the HTML, because the rules a
report needs are about blocks, not text flow (workbench.report.pagination): a figure is never cut (it moves to the
next page, shrunk to fit if taller than a page), a table breaks between rows and
repeats its header, a heading never ends a page without what follows it. Pages are
A4 with 15 mm margins and a footer with the title and page number.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path

from ..report.build import Report, ReportEntry
from ..report.format import format_value, provenance_rows
from ..report.pagination import Block, paginate
from ..results.base import Figure, Table

DPI = 96  # layout units are CSS pixels, so SVG sizes mean what they say
MARGIN_MM = 15.0
FOOTER_MM = 8.0
BODY_PT = 9.0
SMALL_PT = 8.0
SPEC_CHUNK_LINES = 40
SHORT_TABLE_ROWS = 8
MIN_FIGURE_SCALE = 0.8  # smaller, and figure labels drop below about 6 pt  # a long spec is several blocks, so it can break between them


def ensure_app():
    """The Qt application fonts and painting need; headless (offscreen) when there is no display.

    A QApplication (not a bare QGuiApplication) is made, so that widgets, should the same
    process show any later (the app, GUI tests), find the application they need.
    """
    from PySide6.QtCore import QCoreApplication
    from PySide6.QtGui import QGuiApplication

    app = QCoreApplication.instance()
    if app is None:
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from PySide6.QtWidgets import QApplication

        app = QApplication(["workbench-report"])
    elif not isinstance(app, QGuiApplication):
        raise RuntimeError("A Qt core application without a GUI exists; a PDF needs a QGuiApplication")
    return app




class Layout:
    """Builds blocks for a content width, measured with the PDF writer's own metrics."""

    def __init__(self, device, width: float):
        from PySide6.QtGui import QFont

        self.device = device
        self.width = width
        self.font = QFont("DejaVu Sans")
        self.font.setPointSizeF(BODY_PT)
        self.small = QFont(self.font)
        self.small.setPointSizeF(SMALL_PT)
        self.bold = QFont(self.font)
        self.bold.setBold(True)
        self.mono = QFont("DejaVu Sans Mono")
        self.mono.setPointSizeF(7.5)
        self.blocks: list[Block] = []

    # -- text -------------------------------------------------------------------------------------------

    def _document(self, html: str, width: float, font=None):
        from PySide6.QtGui import QTextDocument

        doc = QTextDocument()
        doc.documentLayout().setPaintDevice(self.device)
        doc.setDefaultFont(font or self.font)
        doc.setDocumentMargin(0)
        doc.setDefaultStyleSheet("p { margin: 0; } .muted { color: #5b6570; } b { color: #1d232b; }")
        doc.setHtml(html)
        doc.setTextWidth(width)
        return doc

    def text(self, html: str, *, font=None, gap: float = 6.0, keep_with_next: bool = False, indent: float = 0.0, shade: str = "") -> Block:
        doc = self._document(html, self.width - indent - (16 if shade else 0), font)
        pad = 6.0 if shade else 0.0
        height = doc.size().height() + 2 * pad

        def paint(painter, x, y):
            from PySide6.QtGui import QColor

            if shade:
                painter.fillRect(int(x + indent), int(y), int(self.width - indent), int(height), QColor(shade))
                painter.fillRect(int(x + indent), int(y), 3, int(height), QColor("#2f5d8a"))
            painter.save()
            painter.translate(x + indent + (10 if shade else 0), y + pad)
            doc.drawContents(painter)
            painter.restore()

        block = Block(height, paint, gap, keep_with_next)
        self.blocks.append(block)
        return block

    def heading(self, text: str, size: float, rule: bool = False) -> Block:
        from PySide6.QtGui import QFont

        font = QFont(self.font)
        font.setPointSizeF(size)
        font.setBold(True)
        doc = self._document(escape(text), self.width, font)
        top = 8.0 if rule else 2.0
        height = doc.size().height() + top

        def paint(painter, x, y):
            from PySide6.QtGui import QColor, QPen

            if rule:
                painter.setPen(QPen(QColor("#2f5d8a"), 1.5))
                painter.drawLine(int(x), int(y), int(x + self.width), int(y))
            painter.save()
            painter.translate(x, y + top)
            doc.drawContents(painter)
            painter.restore()

        block = Block(height, paint, 4.0, keep_with_next=True)
        self.blocks.append(block)
        return block

    # -- figures -----------------------------------------------------------------------------------------

    def figure(self, figure: Figure, page_height: float) -> None:
        """Title, image and caption as one block: never cut; shrunk to the page when taller than it."""
        from PySide6.QtCore import QByteArray, QRectF
        from PySide6.QtGui import QImage
        from PySide6.QtSvg import QSvgRenderer

        title = self._document(f"<b>{escape(figure.title)}</b>", self.width) if figure.title else None
        caption = self._document(f"<span class='muted'>{escape(figure.caption)}</span>", self.width, self.small) if figure.caption else None
        above = title.size().height() + 3 if title else 0.0
        below = caption.size().height() + 3 if caption else 0.0
        renderer = image = None
        if figure.svg:
            renderer = QSvgRenderer(QByteArray(figure.svg.encode("utf-8")))
            natural = renderer.viewBoxF().size() if renderer.viewBoxF().isValid() else renderer.defaultSize().toSizeF()
            if renderer.defaultSize().isValid() and not renderer.defaultSize().isEmpty():
                natural = renderer.defaultSize().toSizeF()
        elif figure.png:
            image = QImage.fromData(figure.png, "PNG")
            natural = image.size().toSizeF()
        else:
            self.text("<span class='muted'>(empty figure)</span>")
            return
        w, h = max(natural.width(), 1.0), max(natural.height(), 1.0)
        scale = min(1.0, self.width / w, (page_height - above - below - 4) / h)
        draw_w, draw_h = w * scale, h * scale

        def paint(painter, x, y):
            if title:
                painter.save()
                painter.translate(x, y)
                title.drawContents(painter)
                painter.restore()
            target = QRectF(x, y + above, draw_w, draw_h)
            if renderer is not None:
                renderer.render(painter, target)
            else:
                painter.drawImage(target, image)
            if caption:
                painter.save()
                painter.translate(x, y + above + draw_h + 3)
                caption.drawContents(painter)
                painter.restore()

        self.blocks.append(Block(above + draw_h + below, paint, gap=12.0, min_scale=MIN_FIGURE_SCALE))

    # -- tables ------------------------------------------------------------------------------------------

    def table(self, table: Table, *, header: bool = True, label_column: bool = False) -> None:
        """A title-and-header block, then one block per row (a table breaks between rows only)."""
        from PySide6.QtCore import QRectF, Qt
        from PySide6.QtGui import QColor, QFontMetricsF, QPen

        columns = [str(c) for c in table.columns]
        rows = [[format_value(v) for v in row] for row in table.rows]
        numeric = [
            all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool) for row in table.rows if i < len(row)) and bool(table.rows)
            for i in range(len(columns))
        ]
        metrics, bold_metrics = QFontMetricsF(self.small, self.device), QFontMetricsF(self.bold_small(), self.device)
        pad = 4.0
        natural, minimum = [], []
        for i, name in enumerate(columns):
            texts = [r[i] for r in rows if i < len(r)][:200]
            widest = max([metrics.horizontalAdvance(t) for t in texts] + [bold_metrics.horizontalAdvance(name) if header else 0])
            words = [w for t in texts for w in t.split()] + (name.split() if header else [])
            longest_word = max([metrics.horizontalAdvance(w) for w in words] + [bold_metrics.horizontalAdvance(w) for w in (name.split() if header else [])] + [0])
            natural.append(widest + 2 * pad + 2)
            minimum.append(min(widest, longest_word) + 2 * pad + 2)
        wrap = Qt.TextWordWrap
        if sum(natural) <= self.width:
            widths = natural
        elif sum(minimum) <= self.width:  # every word still fits its column: share the rest by need
            spare = (self.width - sum(minimum)) / (sum(natural) - sum(minimum))
            widths = [m + (n - m) * spare for m, n in zip(minimum, natural)]
        else:  # even single words do not fit: break inside words
            widths = [m * self.width / sum(minimum) for m in minimum]
            wrap = Qt.TextWordWrap | Qt.TextWrapAnywhere
        line = metrics.height()

        def cell_height(text: str, width: float, m) -> float:
            rect = m.boundingRect(QRectF(0, 0, width - 2 * pad, 10_000), int(wrap), text)
            return max(line, rect.height()) + 2 * pad

        def row_block(cells: list[str], bold: bool, shade: bool) -> Block:
            m = bold_metrics if bold else metrics
            height = max(cell_height(t, widths[i], m) for i, t in enumerate(cells)) if cells else line

            def paint(painter, x, y):
                painter.save()
                if shade:
                    painter.fillRect(QRectF(x, y, sum(widths), height), QColor("#f4f6f8"))
                painter.setFont(self.bold_small() if bold else self.small)
                painter.setPen(QColor("#1d232b"))
                left = x
                for i, text in enumerate(cells):
                    align = Qt.AlignRight if numeric[i] and not bold else Qt.AlignLeft
                    if label_column and i == 0:
                        painter.setPen(QColor("#5b6570"))
                    painter.drawText(QRectF(left + pad, y + pad, widths[i] - 2 * pad, height - 2 * pad), int(align | Qt.AlignTop | wrap), text)
                    painter.setPen(QColor("#1d232b"))
                    left += widths[i]
                painter.setPen(QPen(QColor("#d5dbe1"), 0.8))
                painter.drawLine(QRectF(x, y + height, sum(widths), 0).topLeft(), QRectF(x, y + height, sum(widths), 0).topRight())
                painter.restore()

            return Block(height, paint, gap=0.0)

        head_parts = []
        if table.title:
            head_parts.append(self._document(f"<b>{escape(table.title)}</b>", self.width, self.small))
        head_row = row_block(columns, True, True) if header else None
        title_height = sum(d.size().height() + 2 for d in head_parts)

        def paint_head(painter, x, y):
            top = y
            for doc in head_parts:
                painter.save()
                painter.translate(x, top)
                doc.drawContents(painter)
                painter.restore()
                top += doc.size().height() + 2
            if head_row is not None:
                head_row.paint(painter, x, top)

        head = Block(title_height + (head_row.height if head_row else 0), paint_head, gap=0.0, keep_with_next=True)
        repeat = head_row
        if head.height > 0:
            self.blocks.append(head)
        row_blocks = []
        for cells in rows:
            block = row_block(cells, False, False)
            block.header = repeat
            row_blocks.append(block)
        if len(row_blocks) <= SHORT_TABLE_ROWS:  # a short table is not worth breaking: it moves whole
            for block in row_blocks[:-1]:
                block.keep_with_next = True
        else:  # no page holds a lone first or last row of a table
            row_blocks[0].keep_with_next = True
            row_blocks[-2].keep_with_next = True
        self.blocks.extend(row_blocks)
        if self.blocks:
            self.blocks[-1].gap = 10.0

    def bold_small(self):
        from PySide6.QtGui import QFont

        font = QFont(self.small)
        font.setBold(True)
        return font




def _facts(rows) -> Table:
    return Table("", ["", ""], [[k, v] for k, v in rows])


def _entry_blocks(layout: Layout, index: int, entry: ReportEntry, report: Report, page_height: float) -> None:
    layout.heading(f"{index}. {entry.title}", 13.0, rule=True)
    version = f" {escape(entry.plugin_version)}" if entry.plugin_version else ""
    layout.text(f"<span class='muted'>plugin <b>{escape(entry.plugin_id)}</b>{version}</span>", font=layout.small, keep_with_next=True)
    if entry.error is not None:
        hint = f"<br>Hint: {escape(entry.error.hint)}" if entry.error.hint else ""
        layout.text(f"<p style='color:#a3261b'><b>This analysis failed; the others are unaffected.</b><br>{escape(entry.error.message)}{hint}</p>", shade="#fbeeee")
        if entry.error.details:
            _preformatted(layout, entry.error.details)
    section = entry.section
    if section is not None:
        how = section.how_to_read or entry.how_to_read
        if how:
            # Kept with the first figure: a section does not start with its explanation alone at a page's foot.
            layout.text(f"<b>How to read it.</b> {escape(how)}", shade="#f4f6f8", gap=10.0, keep_with_next=bool(section.figures or section.tables))
        for figure in section.figures:
            layout.figure(figure, page_height)
        tables = list(section.tables)
        if not tables and entry.result is not None:
            numbers = [[k, v] for k, v in entry.result.to_json_dict().items() if not isinstance(v, (list, dict))]
            if numbers:
                tables.append(Table("Key numbers", ["quantity", "value"], numbers))
        for table in tables:
            layout.table(table)
        for note in section.notes:
            layout.text(escape(note))
    layout.heading("Parameters", 10.0)
    if entry.params:
        layout.table(_facts(sorted(entry.params.items())), header=False, label_column=True)
    else:
        layout.text("<span class='muted'>(none)</span>")
    rows = provenance_rows(entry, report)
    if rows:
        layout.heading("Provenance", 10.0)
        layout.table(_facts(rows), header=False, label_column=True)


def _preformatted(layout: Layout, text: str) -> None:
    lines = text.splitlines() or [""]
    for start in range(0, len(lines), SPEC_CHUNK_LINES):
        chunk = "\n".join(lines[start : start + SPEC_CHUNK_LINES])
        layout.text(f"<pre style='white-space: pre-wrap'>{escape(chunk)}</pre>", font=layout.mono, gap=0.0, shade="#f4f6f8")
    layout.blocks[-1].gap = 10.0


def layout_report(layout: Layout, report: Report, page_height: float, spec_name: str) -> None:
    layout.heading(report.title, 20.0)
    model = report.model_name or report.model_spec or "unknown model"
    layout.text(f"<span class='muted'>{escape(report.created)} · {escape(model)}</span>", gap=10.0)
    facts = [("created", report.created), ("model", report.model_spec), ("model name", report.model_name), ("fingerprint", report.model_fingerprint)]
    facts.append(("analyses", f"{len(report.entries)} ({len(report.failed)} failed)" if report.failed else str(len(report.entries))))
    if report.seconds:
        facts.append(("built in", f"{report.seconds:.1f} s"))
    layout.table(_facts([(k, v) for k, v in facts if v]), header=False, label_column=True)
    layout.heading("Prompts", 10.0)
    if report.prompts:
        layout.table(Table("", ["", ""], [[f"{i}.", p] for i, p in enumerate(report.prompts, start=1)]), header=False)
    else:
        layout.text("<span class='muted'>(no prompt)</span>")
    for index, entry in enumerate(report.entries, start=1):
        _entry_blocks(layout, index, entry, report, page_height)
    layout.heading("Reproduce", 13.0, rule=True)
    if report.spec_text:
        layout.text(f"Save this spec as <b>{escape(spec_name)}</b> and run <b>workbench report {escape(spec_name)} --out report.html</b>:", keep_with_next=True)
        _preformatted(layout, report.spec_text)
    layout.heading("Library versions", 10.0)
    layout.table(_facts(sorted(report.versions.items())), header=False, label_column=True)


def write_pdf(report: Report, path: str | Path, *, spec_name: str = "report.toml") -> int:
    """Write report as an A4 PDF at path; returns its page count. Runs on the thread that owns the Qt app."""
    from PySide6.QtCore import QMarginsF, QRectF, Qt
    from PySide6.QtGui import QColor, QPageLayout, QPageSize, QPainter, QPdfWriter

    ensure_app()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = QPdfWriter(str(path))
    writer.setResolution(DPI)
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.A4), QPageLayout.Portrait, QMarginsF(0, 0, 0, 0), QPageLayout.Millimeter))
    writer.setTitle(report.title)
    writer.setCreator("Interpretability Workbench")
    mm = DPI / 25.4
    page_w, page_h = writer.width(), writer.height()
    margin, footer = MARGIN_MM * mm, FOOTER_MM * mm
    content_w, content_h = page_w - 2 * margin, page_h - 2 * margin - footer
    layout = Layout(writer, content_w)
    layout_report(layout, report, content_h, spec_name)
    pages = paginate(layout.blocks, content_h)
    painter = QPainter()
    if not painter.begin(writer):
        from ..errors import InputError

        raise InputError(f"Could not write the PDF {path}.", "check that the folder is writable and the file not open elsewhere")
    try:
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setRenderHint(QPainter.TextAntialiasing)
        for number, page in enumerate(pages, start=1):
            if number > 1:
                writer.newPage()
            for block, y in page.items:
                block.draw(painter, margin, margin + y)
            painter.setFont(layout.small)
            painter.setPen(QColor("#5b6570"))
            band = QRectF(margin, page_h - margin - footer * 0.4, content_w, footer * 0.6)
            painter.drawText(band, int(Qt.AlignLeft | Qt.AlignVCenter), report.title)
            painter.drawText(band, int(Qt.AlignRight | Qt.AlignVCenter), f"{number} / {len(pages)}")
    finally:
        painter.end()
    return len(pages)
