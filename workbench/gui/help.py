"""Help that teaches: a tour of the five core panels on SmolLM2, and the bundled docs offline.

The tour is a small non-modal window beside the app: each step says what to click and
how to read the figure (the panels' own how-to-read texts), and "Show me" does it: the
Eiffel prompt, the panel with example parameters, Run. The documentation is the README
and the plugin guide, rendered from the repository's Markdown without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QTabWidget, QTextBrowser, QVBoxLayout

from ..models.specs import DEFAULT_MODEL
from ..paths import REPO_ROOT

TOUR_PROMPT = "The Eiffel Tower is located in the city of"


@dataclass(frozen=True)
class TourStep:
    plugin_id: str
    title: str
    what_to_do: str
    params: dict = field(default_factory=dict)


TOUR = [
    TourStep(
        "attention",
        "1. Attention maps: where each token looks",
        "Run, then click heads in the grid on the left. Look for a bright first column (the attention sink) and a line just "
        "below the diagonal (a previous-token head); the text view shows what the chosen token reads.",
    ),
    TourStep(
        "causal-trace",
        "2. Causal tracing: where the model recalls a fact",
        "Run with the subject 'The Eiffel Tower'. The subject's embeddings are noised, then one clean hidden state at a "
        "time is restored; bright cells are states that bring ' Paris' back. Switch between the residual stream, MLP and "
        "attention rows: the MLPs at the subject's last token in early-middle layers usually light up.",
        {"subject": "The Eiffel Tower"},
    ),
    TourStep(
        "rome",
        "3. ROME: edit that fact",
        "Run to make the model say ' Rome' for the Eiffel Tower: the panel shows P(new) and P(true) before and after, on "
        "the prompt, paraphrases and neighbours. Undo restores every weight bit for bit. (The key statistics take about "
        "40 s the first time.)",
        {"subject": "The Eiffel Tower", "target_new": " Rome"},
    ),
    TourStep(
        "induction",
        "4. Induction heads: copying what came after the last time",
        "Run on repeated random tokens: heads that attend to the token after the previous occurrence score high. Click a "
        "head to see its scores and what ablating it costs.",
    ),
    TourStep(
        "qk-ov",
        "5. QK/OV circuits: what a head reads and writes, from the weights alone",
        "Run: the head with the highest copying score is drawn. The QK map says which tokens a query prefers; the OV map "
        "what attending does to the logits (a red diagonal is copying). The other tabs score every head and their "
        "composition.",
    ),
]


class TourDialog(QDialog):
    """Five steps; Back / Next, and Show me (prompt, panel, parameters, Run)."""

    def __init__(self, window):
        super().__init__(window)
        self.window_ = window
        self.setWindowTitle("Tour of the workbench")
        self.setModal(False)
        self.resize(560, 360)
        self.index = 0
        self.heading = QLabel()
        self.heading.setStyleSheet("font-weight: bold; font-size: 14px")
        self.heading.setWordWrap(True)
        self.body = QTextBrowser()
        self.body.setOpenExternalLinks(False)
        self.back = QPushButton("Back")
        self.show_me = QPushButton("Show me")
        self.next = QPushButton("Next")
        self.back.clicked.connect(lambda: self.go(self.index - 1))
        self.next.clicked.connect(lambda: self.go(self.index + 1))
        self.show_me.clicked.connect(self.perform)
        buttons = QHBoxLayout()
        buttons.addWidget(self.back)
        buttons.addStretch(1)
        buttons.addWidget(self.show_me)
        buttons.addWidget(self.next)
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(self.body, 1)
        layout.addLayout(buttons)
        self.go(0)

    def go(self, index: int) -> None:
        self.index = max(0, min(len(TOUR) - 1, index))
        step = TOUR[self.index]
        plugin = self.window_.registry.record(step.plugin_id)
        how_to_read = plugin.plugin.report_help if plugin is not None and plugin.plugin is not None else ""
        self.heading.setText(step.title)
        missing = "" if plugin is not None and plugin.ok else f"<p><b>The {step.plugin_id} plugin is not available here.</b></p>"
        self.body.setHtml(
            f"{missing}<p><b>What to do.</b> {step.what_to_do}</p>"
            + (f"<p><b>How to read it.</b> {how_to_read}</p>" if how_to_read else "")
            + f"<p style='color:#666'>Step {self.index + 1} of {len(TOUR)} · the prompt: “{TOUR_PROMPT}” on {DEFAULT_MODEL}.</p>"
        )
        self.back.setEnabled(self.index > 0)
        self.next.setEnabled(self.index < len(TOUR) - 1)

    def perform(self):
        """Set the prompt, open the step's panel with its parameters and run it (after loading
        the embedded model when none is loaded). Returns the panel."""
        step = TOUR[self.index]
        window = self.window_
        window.set_prompt(TOUR_PROMPT)
        panel = window.open_panel(step.plugin_id)
        if panel is None:
            return None
        panel.set_parameters(step.params)
        if window.model is None:
            window.load_model(DEFAULT_MODEL)
        window.run_when_loaded(panel)
        return panel


DOCUMENTS = [("Using the workbench", "README.md"), ("Writing plugins", "docs/plugins.md")]


class DocumentationDialog(QDialog):
    """The README and the plugin guide, rendered offline from the repository's Markdown."""

    def __init__(self, window, root: Path = REPO_ROOT):
        super().__init__(window)
        self.setWindowTitle("Documentation")
        self.setModal(False)
        self.resize(900, 700)
        self.tabs = QTabWidget()
        for title, relative in DOCUMENTS:
            browser = QTextBrowser()
            browser.setOpenExternalLinks(True)
            path = root / relative
            browser.setSearchPaths([str(path.parent), str(root)])  # the figures beside the text
            if path.is_file():
                browser.setMarkdown(path.read_text(encoding="utf-8"))
            else:
                browser.setPlainText(f"{relative} is not installed with this copy of the workbench (it ships with the source repository).")
            self.tabs.addTab(browser, title)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
