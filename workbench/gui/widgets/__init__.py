"""Reusable widgets for the app and for plugin panels.

Plugin panels may use HeatmapView (interactive matrices with token labels) and
ReportView (any ReportSection); the rest are the main window's parts.
"""
