"""The order in which `make test` hands test files to its pytest-xdist workers.

`make test` runs the unit tests with `--dist loadfile --no-loadscope-reorder`: each file goes whole to one worker,
in collection order, the next file to whichever worker is free. The phase is CPU-bound on two cores, so its wall
time is the total work over two plus what the last file to start leaves one worker doing alone. Handing out the
longest files first (longest-processing-time first) keeps that tail short: a 50 s file collected last kept one
core busy for 50 s after the other had nothing left to do. xdist's own reordering sorts files by their number of
tests, which says little about their time (the JupyterLab test is one test of about 50 s).

SECONDS holds each slow file's time in a `--durations=0` run on the 2-core machine (session 36; the hostile suite,
test_hostile_workers and test_grading: session 40, with every check judged apart). It is a schedule hint, not a check: a file it
does not list runs after the listed ones, and the order of tests inside a file never changes.
"""

SECONDS = {
    "test_distributed.py": 100,
    "test_hostile_submissions.py": 110,
    "test_hostile_workers.py": 82,
    "test_colab.py": 78,
    "test_lab_browser.py": 50,
    "test_notebooks.py": 34,
    "test_grading.py": 40,
    "test_judge.py": 20,
    "test_book.py": 17,
    "test_autograder.py": 12,
    "test_teeth.py": 7,
}


def pytest_collection_modifyitems(config, items):
    # sorted() is stable: the tests of one file keep their order (module fixtures rely on it)
    items[:] = sorted(items, key=lambda item: -SECONDS.get(item.path.name, 0))
