"""`make run`'s table: each notebook's time next to its budget, flagged when over it or above 75% of it."""
import pytest

from tests.nbfactory import toy_notebook
from tools.notebooks import budget_flag, budget_seconds
from tools.run_notebooks import print_table


def test_budget_is_read_from_metadata_and_bad_values_are_named():
    nb = toy_notebook()
    nb.metadata["workbook"] = {"budget_seconds": 120}
    assert budget_seconds(nb) == 120.0
    for bad in (None, 0, -5, "60", True):
        nb.metadata["workbook"] = {"budget_seconds": bad}
        with pytest.raises(ValueError, match="budget_seconds must be a positive number"):
            budget_seconds(nb)


def test_flags():
    assert budget_flag(89.9, 120) == ""
    assert budget_flag(90.1, 120) == "under budget but above 75% of it"
    assert budget_flag(130, 120) == "OVER BUDGET by 10 s"


def test_table_shows_time_next_to_budget_and_flags(capsys):
    print_table([{"notebook": "00_a.ipynb", "seconds": 30.0, "budget": 60.0, "status": "ok"},
                 {"notebook": "01_b.ipynb", "seconds": 200.0, "budget": 180.0, "status": "ok"}])
    out = capsys.readouterr().out.splitlines()
    row_a = next(l for l in out if l.startswith("00_a"))
    row_b = next(l for l in out if l.startswith("01_b"))
    assert row_a.split() == ["00_a.ipynb", "30.0", "60", "50%", "ok"]
    assert row_b.split()[:5] == ["01_b.ipynb", "200.0", "180", "111%", "ok"] and "OVER BUDGET by 20 s" in row_b
    assert next(l for l in out if l.startswith("total")).split() == ["total", "230.0", "240", "96%"]
