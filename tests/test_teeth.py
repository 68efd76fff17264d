"""The teeth probe on small notebooks: it must see a toothless check, and say how each variant failed."""
from tests.nbfactory import code, raw, toy_notebook, write
from tools.teeth import PROBE_TAG, probe, with_teeth


def test_probe_cell_goes_right_after_the_exercise_cell(tmp_path):
    # so the notebook's own checks, after it, run once on the solution (no re-run of them to restore the kernel)
    probed = with_teeth(toy_notebook(), tmp_path / "rows.jsonl")
    tags = [c.metadata.get("tags", []) for c in probed.cells]
    assert tags.index([PROBE_TAG]) == tags.index(["exercise-ex99.1"]) + 1 and sum(PROBE_TAG in t for t in tags) == 1


def test_toy_notebook_has_teeth_and_the_failures_are_the_checks_own(tmp_path):
    # errors == []: the notebook's own checks, after the probe, pass; so the probe left the solution in place
    (teeth,), errors = probe(write(toy_notebook(), tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert errors == [] and teeth.problems() == []
    by_name = {v.name: v for v in teeth.variants}
    assert list(by_name) == ["stub", "wrong: adds instead of multiplying"]
    assert by_name["stub"].failed == {"ex99.1": True, "ex99.1.b": True}
    assert {e["type"] for e in by_name["stub"].errors} == {"NotImplementedError"}
    wrong = by_name["wrong: adds instead of multiplying"]
    # caught by the first check's assertion: the probe moves on without running the second check (the stub still
    # runs every check, each must fail with it)
    assert wrong.failed == {"ex99.1": True}
    assert wrong.errors == [{"check": "ex99.1", "type": "AssertionError", "message": "double(3) should be 6, got 5",
                             "assertion": True}]
    assert wrong.caught_by == ["ex99.1"]


def test_a_solution_that_fails_its_check_is_reported_with_the_check_s_message(tmp_path):
    nb = toy_notebook()
    nb.cells[5].source = "assert double(-1.5) == 3.0, f'double(-1.5) should be 3.0, got {double(-1.5)}'"   # a wrong check
    (teeth,), errors = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert errors == ["cell 5 (check ex99.1.b, on the solution): AssertionError: double(-1.5) should be 3.0, got -3.0"]


def test_an_exercise_cell_that_fails_when_run_again_fails_the_probe(tmp_path):
    # the probe runs the exercise cell once more after the variants; a cell that cannot run twice says so
    nb = toy_notebook()
    nb.cells[2].source = "assert 'ran' not in globals(), 'ran twice'\nran = True\n" + nb.cells[2].source
    _, errors = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert errors == ["probe cell: RuntimeError: the exercise cell, run again after the probe's variants, failed: "
                      "AssertionError('ran twice')"], errors


def test_a_wrong_answer_that_passes_every_check_is_a_problem(tmp_path):
    nb = toy_notebook()
    nb.cells.insert(4, raw("# right only for positive inputs\nreturn abs(x) * FACTOR", "wrong-ex99.1"))
    del nb.cells[6]                                  # drop the check on -1.5: nothing catches abs() any more
    (teeth,), _ = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert teeth.problems() == ["ex99.1: the wrong answer 'wrong: right only for positive inputs' passes every check"]


def test_a_check_that_passes_with_the_stub_is_a_problem_and_magics_run(tmp_path):
    nb = toy_notebook()
    nb.cells[4].source = "%%writefile answer.txt\nnot a check at all"
    (teeth,), _ = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert "ex99.1: with the stub these checks still pass: ['ex99.1']" in teeth.problems()
    assert (tmp_path / "answer.txt").read_text().strip() == "not a check at all"


def test_an_ordinary_cell_that_fails_after_the_probe_is_reported(tmp_path):
    nb = toy_notebook()
    nb.cells.append(code("raise RuntimeError('late failure')"))
    _, errors = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert errors == ["cell 7: RuntimeError: late failure"]


def test_a_wrong_answer_that_crashes_in_its_own_cell_is_a_problem(tmp_path):
    nb = toy_notebook()
    nb.cells[2].source += "\ndouble(2)"                  # the exercise cell calls its function
    nb.cells[3].source = "# divides by zero before anything is checked\nreturn x / 0"
    (teeth,), _ = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    (problem,) = teeth.problems()
    assert "fails outside the checks (ZeroDivisionError" in problem


def test_a_wrong_answer_that_only_makes_the_checks_crash_is_not_caught(tmp_path):
    # The checks "fail", but by a TypeError inside them (None * 2, None == 6 is False only after the crash), never
    # by one of their assertions: a wrong answer the checks do not judge is not caught.
    nb = toy_notebook()
    nb.cells[3].source = "# forgets to return\nsecret_value = x * FACTOR"
    nb.cells[4].source = "assert double(3) * 1 == 6, f'double(3) should be 6, got {double(3)}'"
    nb.cells[5].source = "assert double(-1.5) + 0 == -3.0"
    (teeth,), _ = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    wrong = next(v for v in teeth.variants if v.name.startswith("wrong"))
    assert wrong.failed == {"ex99.1": True, "ex99.1.b": True} and wrong.caught_by == []
    (problem,) = teeth.problems()
    assert problem.startswith("ex99.1: the wrong answer 'wrong: forgets to return' makes the checks crash (TypeError: "
                              "unsupported operand") and problem.endswith("instead of failing one of their assertions")
    # the same mistake against a check that asserts: caught
    nb.cells[4].source = "result = double(3)\nassert result == 6, f'double(3) should be 6, got {result}'"
    (teeth,), _ = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    wrong = next(v for v in teeth.variants if v.name.startswith("wrong"))
    assert wrong.caught_by == ["ex99.1"] and teeth.problems() == []


def test_the_probe_puts_back_the_global_random_state(tmp_path):
    # A wrong answer that draws from the global generator must not change what the cells after the probe compute.
    nb = toy_notebook()
    nb.cells[1].source = "import random\nrandom.seed(0)\nFACTOR = 2"
    nb.cells[3].source = "# draws from the global random generator, then adds\nrandom.random()\nreturn x + FACTOR"
    nb.cells.append(code("draw = random.random()\nassert draw == random.Random(0).random(), f'the probe moved the global state: {draw}'"))
    (teeth,), errors = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert errors == [] and teeth.problems() == []


def test_the_probe_puts_back_the_generators_the_notebook_s_names_hold(tmp_path):
    # A check that draws from the notebook's own generators runs once per variant in the probe: later cells must see
    # them where one run of the check left them (session 40: two wrong answers more in 06 moved `gen`, and a claim of
    # a later cell changed its verdict under nbval).
    nb = toy_notebook()
    nb.cells[1].source = ("import random, numpy as np, torch\nFACTOR = 2\ngen = torch.Generator().manual_seed(0)\n"
                          "rng = np.random.default_rng(0)\nstate = np.random.RandomState(0)\npy = random.Random(0)")
    nb.cells[4].source = "assert double(torch.rand(1, generator=gen).item() + rng.random() + state.rand() + py.random() + 3) > 0"
    nb.cells.append(code(
        "got = (torch.rand(1, generator=gen).item(), rng.random(), state.rand(), py.random())\n"
        "g2, r2, s2, p2 = torch.Generator().manual_seed(0), np.random.default_rng(0), np.random.RandomState(0), random.Random(0)\n"
        "once = (torch.rand(1, generator=g2).item(), r2.random(), s2.rand(), p2.random())      # the check's own draws\n"
        "want = (torch.rand(1, generator=g2).item(), r2.random(), s2.rand(), p2.random())\n"
        "assert got == want, f'the probe moved the notebook\\'s generators: {got} != {want}'"))
    (teeth,), errors = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert errors == [] and teeth.problems() == [], errors


def test_an_exercise_checked_at_several_sizes_runs_its_checks_until_each_has_caught_a_wrong_answer(tmp_path):
    # metadata workbook.teeth_every_check: a wrong answer's checks run past its first catch while one of them has not
    # caught any wrong answer yet, and a check that catches none is a problem (05's checks at several world sizes use
    # this: a wrong answer written for the demo's 3 ranks is caught only by the check at another world size, which is
    # what it is for). Once each check has caught one, a wrong answer stops at its first catch.
    nb = toy_notebook()
    nb.metadata["workbook"] = {"teeth_every_check": ["ex99.1"]}
    nb.cells.insert(4, raw("# triples\nreturn 3 * x", "wrong-ex99.1"))          # after the first wrong answer
    (teeth,), _ = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    adds, triples = [v for v in teeth.variants if v.name.startswith("wrong")]
    assert (adds.name, triples.name) == ("wrong: adds instead of multiplying", "wrong: triples")
    assert adds.caught_by == ["ex99.1", "ex99.1.b"] and teeth.problems() == []        # 3 + 2 != 6, -1.5 + 2 != -3
    assert triples.caught_by == ["ex99.1"] and triples.failed == {"ex99.1": True}, triples   # both have caught one
    nb.cells[6].source = "assert double(2) == double(2)"                            # catches nothing
    (teeth,), _ = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert [v.caught_by for v in teeth.variants if v.name.startswith("wrong")] == [["ex99.1"], ["ex99.1"]]
    assert teeth.problems() == ["ex99.1: its check ex99.1.b catches none of the wrong answers (the probe ran it on "
                                "each of them until it caught one: metadata workbook.teeth_every_check); a check at "
                                "another world size must be seen catching one"]
    # a check that no wrong answer reaches (each is caught before it, without the metadata) is not held to it
    del nb.metadata["workbook"]
    (teeth,), _ = probe(write(nb, tmp_path / "99_toy.ipynb"), cell_timeout=60)
    assert teeth.problems() == []


