"""Workbook tooling: run notebooks, build the student edition, grade submissions (not imported by notebooks)."""
