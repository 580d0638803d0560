"""Game of 24: the solver and the verifier over all 1362 puzzles of the ToT paper's CSV, rejection of
wrong and hostile answers without evaluating them, the prompts' own examples, and whole searches with a
solver-backed fake model in both prompt styles."""

import builtins
import fractions
import re
from pathlib import Path

import pytest

from vishwam_core.errors import VishwamError
from vishwam_core.tot import game24
from vishwam_core.tot.game24 import (
    PROMPTS,
    Game24,
    all_solvable,
    check_path,
    explain,
    expression,
    parse_step,
    read_puzzles,
    solvable,
    solve,
    successors,
    verify,
)
from vishwam_core.tot.lm import FunctionLM
from vishwam_core.tot.search import SearchConfig, bfs, dfs, sample_baseline
from vishwam_core.tot.traces import path_records, search_traces, solver_traces

CSV = Path(__file__).parent / "data" / "game24_puzzles.csv"


@pytest.fixture(scope="module")
def puzzles():
    return read_puzzles(CSV)


def test_every_puzzle_of_the_csv_is_solved_and_its_solution_accepted(puzzles):
    assert len(puzzles) == 1362
    assert puzzles[900].input == "4 5 6 10" and puzzles[900].id == "901"
    for p in puzzles:
        nums = [int(v) for v in p.input.split()]
        steps = solve(nums)
        assert steps is not None, p
        assert check_path(nums, [s.text() for s in steps]) == steps
        assert verify(nums, f"Answer: {expression(nums, steps)} = 24"), p


def test_the_generator_finds_exactly_the_csv_puzzles(puzzles):
    made = all_solvable()
    assert len(made) == 1362
    assert set(made) == {tuple(sorted(int(v) for v in p.input.split())) for p in puzzles}
    assert not solvable([1, 1, 1, 1]) and solve([1, 1, 1, 1]) is None


def test_the_bundled_csv_is_the_tests_copy():
    assert [p.input for p in read_puzzles()] == [p.input for p in read_puzzles(CSV)]


@pytest.mark.parametrize(
    "answer,why",
    [
        ("(10 - 4) * (6 - 5) = 24", "equals 6, not 24"),  # wrong value
        ("4 * 6 = 24", "uses 4 6, not 4 5 6 10"),  # incomplete
        ("(10 - 4) * 4 = 24", "uses 4 4 10"),  # a number reused, one missing
        ("(5 - 10 / 10) * 6 = 24", "uses 5 6 10 10"),  # a number reused
        ("10 * 4 - 6 - 5 + 5 - 10 + 10 = 24", "uses 4 5 5 6 10 10"),  # extra numbers
        ("4 * 6 * (10 - 5) / 5", "uses 4 5 5 6 10"),
        ("(10 - 5) / 0 + 4 * 6", "division by zero"),
        ("", "no expression"),
        ("Answer: I give up", "characters other than"),
        ("4.0 * 6 + 10 - 10", "characters other than"),
        ("-4 + 5 + 6 + 10", "only numbers and"),  # unary minus is not a puzzle number
        ("(4 5) 6 10", "not an arithmetic expression"),
    ],
)
def test_wrong_incomplete_and_number_reusing_answers_are_rejected(answer, why):
    assert not verify([4, 5, 6, 10], answer)
    assert why in explain([4, 5, 6, 10], answer)


def test_right_answers_pass_and_near_misses_do_not():
    assert verify([4, 5, 6, 10], "Answer: (5 * 4 - 10) * 6 / 10 * 4") is False  # uses 4 twice
    assert verify([4, 5, 6, 10], "Answer: 4 * (10 - 6) + 5 + 3") is False
    assert verify([4, 5, 6, 10], "10 * 6 / 5 + 4 * 3") is False
    assert verify([4, 5, 6, 10], "Answer: (10 - 6) * 5 + 4 = 24")
    assert verify([4, 5, 6, 10], "4 × (10 − 6) ÷ 1 * 6") is False
    assert verify([3, 3, 8, 8], "8 / (3 - 8 / 3)")  # needs exact fractions
    assert verify([1, 5, 5, 5], "5 * (5 - 1 / 5) = 24")


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os')",
        "__import__('os').system('touch /tmp/pwned')",
        "9**9**9",
        "(9**9)**(9**9)",
        "2 ** 4 + 8",
        "4 // 1 * 6 + 0 * (5 + 10)",
        "[4, 5, 6, 10]",
        "lambda: 24",
        "(" * 300 + "24" + ")" * 300,
        "(" * 90 + "24" + ")" * 90,
        "1" * 5000,
    ],
)
def test_hostile_input_is_rejected_without_being_evaluated(hostile, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("evaluated")

    real_compile = builtins.compile

    def parse_only(source, filename, mode, flags=0, *a, **k):  # ast.parse compiles to an AST, never code
        assert flags & __import__("ast").PyCF_ONLY_AST, "compiled to code"
        return real_compile(source, filename, mode, flags, *a, **k)

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", parse_only)
    monkeypatch.setattr(fractions.Fraction, "__pow__", refuse)
    monkeypatch.setattr(fractions.Fraction, "__floordiv__", refuse)
    assert not verify([4, 5, 6, 10], hostile)
    assert not verify([9, 9, 9, 9], hostile)


def test_parse_step_checks_the_arithmetic():
    assert parse_step("10 - 4 = 6 (left: 5 6 6)").result == 6
    assert parse_step("8 / 3 = 8/3 (left: 3 8 8/3)") is not None
    assert parse_step("10 - 4 = 7 (left: 5 6 7)") is None
    assert parse_step("ten minus four") is None
    assert check_path([4, 5, 6, 10], ["10 - 4 = 6 (left: 5 6 6)", "6 - 5 = 1 (left: 1 6)"]) is not None
    assert check_path([4, 5, 6, 10], ["10 - 4 = 6 (left: 5 6 7)"]) is None  # wrong numbers left
    assert check_path([4, 5, 6, 10], ["10 - 3 = 7 (left: 4 5 6 7)"]) is None  # 3 is not there


def test_the_prompts_own_examples_are_right():
    """Few-shot examples teach by example: every one must be correct arithmetic and judgement."""
    text = "\n".join(PROMPTS["paper"].values())
    answers = re.findall(r"Input: ([\d ]+)\nAnswer: (.+)\n(?!Judge)", PROMPTS["paper"]["io"])
    assert len(answers) == 4
    for nums, ans in answers:
        assert verify([int(v) for v in nums.split()], ans), (nums, ans)
    blocks = re.findall(
        r"Input: ([\d ]+)\nSteps:\n((?:.+\(left: .+\)\n)+)Answer: (.+)\n", PROMPTS["paper"]["cot"]
    )
    assert len(blocks) == 3
    for nums, steps, ans in blocks:
        n = [int(v) for v in nums.split()]
        assert check_path(n, steps.strip().splitlines()) is not None
        assert verify(n, ans)
    m = re.search(r"Input: ([\d ]+)\nPossible next steps:\n((?:.+\n)+?)Input:", PROMPTS["paper"]["propose"])
    first = [int(v) for v in m.group(1).split()]
    for line in m.group(2).strip().splitlines():
        assert check_path(first, [line]) is not None, line
    judged_values = re.findall(
        r"^([\d ]+)\n(?:.*\n)??(sure|likely|impossible)$", PROMPTS["paper"]["value"], re.M
    )
    assert len(judged_values) == 7
    for nums, label in judged_values:
        if label != "likely":  # 'likely' is a guess; 'sure' and 'impossible' must be true
            assert (label == "sure") == solvable([int(v) for v in nums.split()]), nums
    judged = re.findall(
        r"Input: ([\d ]+)\nAnswer: (.+)\nJudge:\n(sure|impossible)", PROMPTS["paper"]["judge"]
    )
    assert len(judged) == 5
    for nums, ans, label in judged:
        assert verify([int(v) for v in nums.split()], ans) == (label == "sure")
    assert "{input}" in text


def test_a_puzzle_line_that_does_not_parse_is_one_sentence(tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("Rank,Puzzles\n1,4 5 6 10\n2,4 5 x 10\n")
    with pytest.raises(
        VishwamError, match=r"^p.csv:3: a puzzle is four whole numbers like '4 5 6 10', not '4 5 x 10'\.$"
    ):
        read_puzzles(bad)
    plain = tmp_path / "p.txt"
    plain.write_text("4 5 6 10\n\n1 2 3\n")
    with pytest.raises(VishwamError, match=r"p.txt:3: a puzzle is four whole numbers"):
        read_puzzles(plain)
    plain.write_text("4 5 6 10\n1 1 4 6\n")
    assert [p.input for p in read_puzzles(plain)] == ["4 5 6 10", "1 1 4 6"]


# ---- whole searches with a fake model that knows the answers ------------------------------------------
def oracle(style):
    """Answers Game24 prompts of `style` the way a perfect model would, using the solver."""
    task = Game24(style)

    def numbers_in(line):
        return [game24.Fraction(v) for v in line.split(":")[-1].split()]

    def fn(prompt, n, temperature, call):
        lines = prompt.rstrip("\n").splitlines()
        tail = lines[-1]
        if tail in ("Possible next steps:", "Next steps:"):
            head = lines[-2].split(":", 1)[1]
            nums = numbers_in(head)
            steps = list(successors(nums))
            good = [s for s in steps if solvable(s.left)]
            bad = [s for s in steps if not solvable(s.left)]
            return ["\n".join(s.text() for s in (bad[:3] + good[:2] + bad[3:6]))] * n
        if tail in ("Judge:", "Correct?"):
            nums = [int(v) for v in lines[-3 if tail == "Judge:" else -3].split(":", 1)[1].split()]
            return ["sure" if verify(nums, lines[-2]) else "impossible"] * n
        if (
            tail.startswith("Can they make 24?")
            or "Judge whether the numbers" in prompt
            and "Steps:" not in prompt
        ):
            nums = numbers_in(lines[-2] if tail.startswith("Can") else tail)
            return ["sure" if solvable(nums) else "impossible"] * n
        # a CoT continuation after all steps: write the answer from the steps in the prompt
        start = max(i for i, ln in enumerate(lines) if ln == "Steps:")
        x = [int(v) for v in lines[start - 1].split(":", 1)[1].split()]
        steps = check_path(x, lines[start + 1 :])
        if steps and len(steps) == 3:
            return [f"Answer: {expression(x, steps)} = 24"] * n
        sol = solve(x)
        return ["\n".join(s.text() for s in sol) + f"\nAnswer: {expression(x, sol)} = 24"] * n

    return task, fn


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_bfs_and_dfs_solve_with_a_perfect_model(style, puzzles):
    task, fn = oracle(style)
    some = puzzles[900:904]
    lm = FunctionLM(fn)
    trees = bfs(task, lm, some, SearchConfig(breadth=3, n_evaluate=1))
    assert all(t.solved for t in trees), [t.answer for t in trees]
    for t in trees:
        assert t.usage["lm_calls"] > 0 and max(n.depth for n in t.nodes) == 4
        assert sum(n.selected for n in t.nodes if n.depth == 2) == 3
    tree = dfs(task, FunctionLM(fn), some[0], SearchConfig(method="dfs", threshold=10, n_evaluate=1))
    assert tree.solved and [n.depth for n in tree.path(tree.answer_node)] == [0, 1, 2, 3, 4]
    [cot] = sample_baseline(task, FunctionLM(fn), some[:1], SearchConfig(method="cot"))
    assert cot.solved
    # ToT-found traces from the verified paths: the CoT, a sure value per state, the judgement
    records = search_traces(task, some, trees)
    kinds = [r["kind"] for r in records]
    assert kinds.count("cot") >= 4 and "value" in kinds and "judge" in kinds
    assert all(r["response"].endswith("sure") for r in records if r["kind"] != "cot")


def test_tree_stats_grade_a_perfect_models_search_as_perfect(puzzles, tmp_path):
    """examples/tot_tree_stats.py (docs/tot.md's diagnostics) on trees written by a real run."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location(
        "tot_tree_stats", Path(__file__).parents[1] / "examples" / "tot_tree_stats.py"
    )
    stats = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stats)
    task, fn = oracle("compact")
    trees = bfs(task, FunctionLM(fn), puzzles[900:903], SearchConfig(breadth=2, n_evaluate=1))
    for t in trees:
        t.save(tmp_path / f"{t.puzzle_id}.json")
    docs = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*.json"))]
    s = stats.search_stats(docs)
    assert s["puzzles"] == 3 and s["proposals_right"] == 1.0
    assert s["solvable_judged_sure"] == 1.0 and s["unsolvable_judged_impossible"] == 1.0
    assert s["right_state_reaching_24_generated_kept"] == {f"depth {d}": [3, 3] for d in (1, 2, 3)}
    # pass@k of k samples, one right of four: pass@1 = 1/4, pass@4 = 1
    one = {"nodes": [{"parent": None}] + [{"parent": 0, "correct": i == 0} for i in range(4)]}
    assert stats.pass_at([one], [1, 4]) == {"pass@1": 0.25, "pass@4": 1.0}


def test_the_heuristic_evaluator_is_the_solver_and_says_so():
    task = Game24("compact")
    assert task.heuristic("4 5 6 10", "10 - 4 = 6 (left: 5 6 6)\n") == 20.0  # 6 * 5 - 6
    assert task.heuristic("4 5 6 10", "10 * 6 = 60 (left: 4 5 60)\n") == 0.001
    assert "ORACLE" in Game24.heuristic.__doc__


def test_value_prompts_are_shared_by_states_with_the_same_numbers_left():
    task = Game24("compact")
    a = task.value_prompt("4 5 6 10", "4 + 5 = 9 (left: 6 9 10)\n")
    b = task.value_prompt("1 5 6 10", "5 - 1 = 4 (left: 4 6 10)\n4 + 5 = 9 (left: 10 9 6)\n")
    assert a == b == "Numbers: 6 9 10\nCan they make 24?\n"
    assert task.value_prompt("4 5 6 10", "a\nb\nc\nd\n") is None  # all steps spent, no answer


def test_solver_traces_are_right_and_hold_out_nothing_they_should_not(puzzles):
    task = Game24("compact")
    held = puzzles[900:1000]
    train = [[int(v) for v in p.input.split()] for p in puzzles[:20]]
    records = list(solver_traces(train, task, seed=1, whole=False))
    assert records == list(solver_traces(train, task, seed=1, whole=False))
    kinds = {r["kind"] for r in records}
    assert kinds == {"cot", "io", "propose", "value", "judge"}
    held_inputs = {p.input for p in held}
    assert not {r["puzzle"] for r in records} & held_inputs
    for r in records:
        x = [int(v) for v in r["puzzle"].split()]
        if r["kind"] == "cot":
            lines = r["response"].splitlines()
            assert check_path(x, lines[:-1]) is not None and verify(x, lines[-1])
        elif r["kind"] == "io":
            assert verify(x, r["response"])
        elif r["kind"] == "propose":
            nums = r["prompt"].splitlines()[0].split(":", 1)[1].split()
            for line in r["response"].splitlines():
                assert parse_step(line) is not None
            assert len(set(r["response"].splitlines())) == len(r["response"].splitlines())
            assert any(solvable(parse_step(ln).left) for ln in r["response"].splitlines()) == solvable(
                [game24.Fraction(v) for v in nums]
            )
        elif r["kind"] == "value":
            nums = [game24.Fraction(v) for v in r["prompt"].splitlines()[0].split(":", 1)[1].split()]
            assert r["response"].endswith("sure") == solvable(nums)
        else:
            answer = r["prompt"].splitlines()[1]
            assert (r["response"] == "sure") == verify(x, answer)
    values = [r for r in records if r["kind"] == "value"]
    sure = sum(r["response"].endswith("sure") for r in values)
    assert 0.3 < sure / len(values) < 0.7


def test_whole_number_traces_never_leave_the_whole_numbers(puzzles):
    task = Game24("compact")
    train = [[int(v) for v in p.input.split()] for p in puzzles[:30]]
    records = list(solver_traces(train, task, seed=2))
    assert len({r["puzzle"] for r in records}) == sum(solvable(p, whole=True) for p in train)
    for r in records:
        if r["kind"] in ("cot", "propose"):
            for line in r["response"].splitlines():
                step = parse_step(line)
                if step is not None:
                    assert step.result.denominator == 1 and step.result >= 0, line
        if r["kind"] == "value":
            nums = [game24.Fraction(v) for v in r["prompt"].splitlines()[0].split(":", 1)[1].split()]
            assert r["response"].endswith("sure") == solvable(nums, whole=True)
    assert sum(solvable([int(v) for v in p.input.split()], whole=True) for p in puzzles) == 1346


def test_path_records_refuse_a_path_with_wrong_arithmetic():
    task = Game24("compact")
    from vishwam_core.tot.tasks import Puzzle

    p = Puzzle("1", "4 5 6 10")
    good = "10 - 4 = 6 (left: 5 6 6)\n6 - 5 = 1 (left: 1 6)\n6 * 1 = 6 (left: 6)\nAnswer: (10 - 4) * (6 - 5) = 24\n"
    assert path_records(task, p, ["", good]) == []  # the answer is wrong
    lucky = "10 - 4 = 7 (left: 5 6 7)\n6 * 5 = 30 (left: 7 30)\n30 - 7 = 24 (left: 24)\nAnswer: (10 - 6) * 5 + 4 = 24\n"
    assert path_records(task, p, ["", lucky]) == []  # right answer, wrong steps
    right = "10 - 6 = 4 (left: 4 4 5)\n4 * 5 = 20 (left: 4 20)\n20 + 4 = 24 (left: 24)\nAnswer: (10 - 6) * 5 + 4 = 24\n"
    recs = path_records(task, p, ["", right])
    assert [r["kind"] for r in recs] == ["cot", "value", "value", "value", "judge"]
    assert recs[1]["response"] == "4 * 5 + 4 = 24\nsure"


@pytest.mark.parametrize("chat", [False, True])
def test_export_traces_writes_loss_masked_shards_the_data_loader_reads(puzzles, tmp_path, chat):
    import json

    from tests.test_tot_cli import byte_tokenizer
    from vishwam_core.shards import ShardLoader, read_manifest, read_rows
    from vishwam_core.tot.run import run_tot

    tok = byte_tokenizer()
    if chat:  # a ChatML template, as `vishwam convert tokenizer` writes
        tok.config["chat_template"] = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
        tok.config["eos_token"] = "<|im_end|>"
        from tokenizers import AddedToken

        tok.backend.add_special_tokens([AddedToken(t, special=True) for t in ("<|im_start|>", "<|im_end|>")])
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    tok.save(tok_dir)
    task, fn = oracle("compact")
    result = run_tot(
        FunctionLM(fn),
        task,
        puzzles[900:903],
        SearchConfig(breadth=2, n_evaluate=1),
        out=tmp_path / "run",
        export_traces=tmp_path / "shards",
        tokenizer=tok_dir,
        chat=chat,
        traces_seq_len=256,
    )
    assert result.summary["success"] == 1.0 and result.summary["traces"] == len(result.records) > 0
    saved = [json.loads(line) for line in (tmp_path / "run" / "traces.jsonl").read_text().splitlines()]
    assert saved == result.records
    manifest = read_manifest(tmp_path / "shards")
    assert manifest["format"] == ("chat" if chat else "instruct")
    rows = read_rows(tmp_path / "shards", "train", 0, 10_000)
    ids, mask = rows["input_ids"], rows["loss_mask"]
    assert ids.shape[1] == 257 and mask.sum() > 0
    # the masked tokens are exactly responses (and their end tokens), never prompts
    learned = tok.decode([int(t) for t in ids[mask == 1]])
    for r in result.records:
        assert r["response"] in learned
    assert "Numbers:" not in learned and "Steps:" not in learned
    batch = next(iter(ShardLoader(tmp_path / "shards", split="train", batch_size=2, prefetch=0)))
    assert batch["input_ids"].shape == (2, 257)
