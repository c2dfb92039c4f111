"""Interpretability Workbench: look inside language models.

The core (models, hooks, store, analyses) is Qt-free; the GUI lives in
workbench.gui and only renders results and starts jobs.
"""

__version__ = "0.1.0"
