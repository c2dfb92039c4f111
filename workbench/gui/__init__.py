"""The desktop app (PySide6 + pyqtgraph). The only package of the workbench that imports Qt.

Plugin authors use `workbench.gui.panels.AnalysisPanel` (and the reusable widgets in
`workbench.gui.widgets`); everything else here is the application itself.
"""
