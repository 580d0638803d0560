"""Offline task packs (`vishwam convert tasks`) and the scoring functions they name.

Each format is converted from small real or hand-written files, then run through lm-eval itself with a
scripted model, so the YAML, the data layout, the prompts and the metrics are checked together. Prompts
are compared with lm-eval's own built-in task configs."""

import io
import json
import tarfile
from pathlib import Path

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from vishwam_core.errors import VishwamError
from vishwam_core.evaluate.metrics import extract_answer, gsm8k_results, numeric_equal
from vishwam_core.evaluate.tasks import TaskFileError, check_task_dir, convert_tasks, read_yaml

DATA = Path(__file__).parent / "data"
BIGBENCH = DATA / "bigbench"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LM_EVAL_TASKS = Path(__import__("lm_eval").__file__).parent / "tasks"


class Scripted(LM):
    """An lm-eval model whose answers are given as functions of the request."""

    def __init__(self, loglikelihood=None, generate=None):
        super().__init__()
        self._ll = loglikelihood or (lambda ctx, cont: -float(len(cont)))
        self._gen = generate or (lambda ctx, kwargs: "")
        self.requests: list = []

    def loglikelihood(self, requests):
        self.requests += requests
        return [(self._ll(*r.args), False) for r in requests]

    def loglikelihood_rolling(self, requests):
        return [-1.0 for _ in requests]

    def generate_until(self, requests):
        self.requests += requests
        return [self._gen(*r.args) for r in requests]


def run_pack(pack: Path, tasks: list[str], model: LM, **kwargs) -> dict:
    manager = TaskManager(include_path=str(pack), include_defaults=False)
    return simple_evaluate(model=model, tasks=tasks, task_manager=manager, log_samples=True, **kwargs)


# ---- GSM8K answers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips.\n#### 72", "72"),
        ("The bill comes to 1,200 + 34 = 1,234 dollars.\n#### 1,234", "1234"),
        ("#### 1,000,000", "1000000"),
        ("She is 5 below zero.\n#### -5", "-5"),
        ("Each costs 3.50 dollars.\n#### 3.50", "3.5"),
        ("#### $18.00", "18"),
        ("#### 0", "0"),
        ("#### -0.25", "-0.25"),
        ("It gains 3 and loses 10.\n#### 7\nUnrelated 99", "7"),  # the marker wins over later numbers
        ("Step one gives 12. Step two: #### 15 ... #### 16", "16"),  # the last marker
        ("So she has 18 dollars left.", "18"),  # no '####': the last number
        ("He had 20, gave away 8, so 12 remain, which is 12 apples total", "12"),
        ("The answer is 42.", "42"),
        ("The answer is -7.5, since 2.5 - 10 = -7.5", "-7.5"),
        ("The final answer is $1,250.", "1250"),
        ("There were 3 boxes of 1,500 pens: 4,500 pens.", "4500"),
        ("I cannot tell.", None),
        ("#### ", None),
    ],
)
def test_gsm8k_answer_extraction(solution, expected):
    assert extract_answer(solution) == expected


def test_gsm8k_numbers_compare_as_decimals():
    assert numeric_equal("3.5", "3.50") and numeric_equal("1000", "1000.0")
    assert not numeric_equal("-5", "5") and not numeric_equal(None, "5") and not numeric_equal("5", None)
    doc = {"question": "q", "answer": "48 + 24 = 72\n#### 1,072"}
    assert gsm8k_results(doc, ["So the total is 1072."]) == {"exact_match": 1.0}
    assert gsm8k_results(doc, ["The answer is 1,072.00"]) == {"exact_match": 1.0}
    assert gsm8k_results(doc, ["The answer is 1,027"]) == {"exact_match": 0.0}
    assert gsm8k_results(doc, ["I do not know"]) == {"exact_match": 0.0}


# ---- BIG-bench --------------------------------------------------------------------------------
def test_bigbench_multiple_choice_and_generative(tmp_path):
    summary = convert_tasks(BIGBENCH / "date_understanding", tmp_path / "du")
    assert summary["tasks"] == [
        {"task": "date_understanding", "output_type": "multiple_choice", "documents": 369}
    ]
    docs = [json.loads(line) for line in (tmp_path / "du" / "date_understanding.jsonl").open()]
    assert docs[0] == {
        "input": "Q: Yesterday was April 30, 2021. What is the date today in MM/DD/YYYY?\nA:",
        "choices": ["05/01/2021", "02/23/2021", "03/11/2021", "05/09/2021", "06/12/2021", "04/29/2021"],
        "answer": 0,
    }
    summary = convert_tasks(BIGBENCH / "object_counting", tmp_path / "oc")
    assert summary["tasks"][0]["output_type"] == "generate_until" and summary["tasks"][0]["documents"] == 1000
    assert summary["source"]["sha256"] is None and summary["source"]["format"] == "bigbench"

    # Through lm-eval: a model that prefers the right date gets everything right; BIG-bench's
    # exact_str_match takes the first sentence fragment and accepts any target.
    truth = {(d["input"], " " + d["choices"][d["answer"]]) for d in docs}
    result = run_pack(
        tmp_path / "du",
        ["date_understanding"],
        Scripted(lambda c, x: 0.0 if (c, x) in truth else -1.0),
        limit=50,
    )
    assert result["results"]["date_understanding"]["acc,none"] == 1.0
    answers = iter([" 3. I count them", "three", " 9", "eighteen!", "\n7"])
    result = run_pack(
        tmp_path / "oc", ["object_counting"], Scripted(generate=lambda c, k: next(answers)), limit=5
    )
    # targets: [three, 3], [nine, 9], [eighteen, 18], [seven, 7], [seven, 7]
    scores = [s["exact_str_match"] for s in result["samples"]["object_counting"]]
    assert scores == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_bigbench_appends_choices_like_bigbench(tmp_path):
    task = {
        "name": "toy",
        "metrics": ["multiple_choice_grade"],
        "task_prefix": "Answer the question.\n",
        "examples": [
            {"input": "2 + 2 =", "target_scores": {"4": 1, "5": 0, "22": 0}},
            {"input": "2 + 2 =", "target_scores": {"4": 1, "5": 0, "22": 0}},  # a duplicate: dropped
            {"input": "3 + 3 =", "target_scores": {"6": 1, "9": 0}},
        ],
    }
    (tmp_path / "task.json").write_text(json.dumps(task))
    convert_tasks(tmp_path / "task.json", tmp_path / "pack")
    docs = [json.loads(line) for line in (tmp_path / "pack" / "toy.jsonl").open()]
    assert len(docs) == 2
    first = docs[0]["input"]
    assert first.startswith("Q: 2 + 2 =\n  choice: ") and first.endswith("\nA:")
    assert sorted(line.removeprefix("  choice: ") for line in first.splitlines()[1:-1]) == ["22", "4", "5"]
    assert read_yaml(tmp_path / "pack" / "toy.yaml")["description"] == "Answer the question.\n"


def _tarball(path: Path, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bigbench_tasks_read_straight_from_the_sdist_tarball(tmp_path):
    three = {"name": "three_objects", "metrics": ["multiple_choice_grade"], "append_choices_to_input": False,
             "examples": [{"input": "A is left of B.", "target_scores": {"A is leftmost.": 1, "B is leftmost.": 0}}]}  # fmt: skip
    tar = _tarball(
        tmp_path / "bigbench-1.0.0.tar.gz",
        {
            "date_understanding/task.json": (BIGBENCH / "date_understanding" / "task.json").read_text(),
            "logical_deduction/task.json": json.dumps({"name": "logical_deduction", "description": "parent"}),
            "logical_deduction/three_objects/task.json": json.dumps(three),
        },
    )
    summary = convert_tasks(
        tar, tmp_path / "pack", names=["date_understanding", "logical_deduction_three_objects"]
    )
    assert [(t["task"], t["documents"]) for t in summary["tasks"]] == [
        ("date_understanding", 369),
        ("logical_deduction_three_objects", 1),
    ]
    assert len(summary["source"]["sha256"]) == 64
    with pytest.raises(VishwamError, match=r"no task 'date_understandin'.*did you mean date_understanding"):
        convert_tasks(tar, tmp_path / "other", names=["date_understandin"])
    with pytest.raises(VishwamError, match="name the ones to convert with --task"):
        convert_tasks(tar, tmp_path / "other")
    assert not (tmp_path / "other").exists()


# ---- HumanEval and MBPP -----------------------------------------------------------------------
def test_humaneval_pack_runs_completions_in_the_sandbox(tmp_path):
    summary = convert_tasks("humaneval", tmp_path / "he")
    assert summary["tasks"] == [{"task": "humaneval", "output_type": "generate_until", "documents": 164}]
    docs = {d["prompt"]: d for d in map(json.loads, (tmp_path / "he" / "humaneval.jsonl").open())}
    canonical = Scripted(generate=lambda prompt, kwargs: docs[prompt]["canonical_solution"])
    result = run_pack(tmp_path / "he", ["humaneval"], canonical)
    assert result["results"]["humaneval"]["pass@1,sandbox"] == 1.0
    assert result["n-samples"]["humaneval"]["effective"] == 164
    wrong = Scripted(generate=lambda prompt, kwargs: "    return 'not it'\n")
    result = run_pack(tmp_path / "he", ["humaneval"], wrong, limit=20)
    assert result["results"]["humaneval"]["pass@1,sandbox"] == 0.0
    [[outcome]] = result["samples"]["humaneval"][0]["filtered_resps"]  # one sample, its sandbox outcome
    assert outcome["status"] == "failed" and outcome["completion"] == "    return 'not it'\n"


def test_humaneval_with_samples_reports_pass_at_k(tmp_path):
    convert_tasks("humaneval", tmp_path / "he", samples=10)
    config = read_yaml(tmp_path / "he" / "humaneval_10.yaml")
    assert config["repeats"] == 10 and config["generation_kwargs"]["do_sample"] is True
    assert [m["metric"] for m in config["metric_list"]] == ["pass@1", "pass@10"]
    docs = {d["prompt"]: d for d in map(json.loads, (tmp_path / "he" / "humaneval_10.jsonl").open())}
    calls = {}

    def sometimes_right(prompt, kwargs):  # right on 3 of every 10 samples of a problem
        calls[prompt] = calls.get(prompt, 0) + 1
        return docs[prompt]["canonical_solution"] if calls[prompt] % 10 in (1, 2, 3) else "    return None\n"

    result = run_pack(tmp_path / "he", ["humaneval_10"], Scripted(generate=sometimes_right), limit=2)
    assert result["results"]["humaneval_10"]["pass@1,sandbox"] == pytest.approx(0.3)
    assert result["results"]["humaneval_10"]["pass@10,sandbox"] == 1.0


MBPP = [
    {"task_id": 901, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
     "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"], "test_setup_code": "",
     "challenge_test_list": []},
    {"task_id": 902, "text": "Write a function to square a number.", "code": "def sq(x):\n    return x * x",
     "test_list": ["assert sq(3) == 9", "assert sq(0) == 0", "assert sq(-2) == 4"], "test_setup_code": "import math",
     "challenge_test_list": []},
]  # fmt: skip


def test_mbpp_pack(tmp_path):
    src = tmp_path / "mbpp.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in MBPP))
    convert_tasks(src, tmp_path / "pack")
    code = {r["text"]: r["code"] for r in MBPP}

    def solve(prompt, kwargs):
        assert kwargs["until"] == ["[DONE]"]
        return next(c for t, c in code.items() if t in prompt)

    result = run_pack(tmp_path / "pack", ["mbpp"], Scripted(generate=solve))
    assert result["results"]["mbpp"]["pass@1,sandbox"] == 1.0
    result = run_pack(
        tmp_path / "pack", ["mbpp"], Scripted(generate=lambda p, k: "def add(a, b):\n    return a - b")
    )
    assert result["results"]["mbpp"]["pass@1,sandbox"] == 0.0


# ---- GSM8K, MMLU, ARC, OpenBookQA ---------------------------------------------------------------
GSM8K = [
    {"question": "Tom has 3 apples and buys 4 more. How many now?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A book costs $1,200 and a pen $34. Total?", "answer": "1200 + 34 = 1234\n#### 1,234"},
]


def test_gsm8k_packs(tmp_path):
    src = tmp_path / "test.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in GSM8K * 3))
    summary = convert_tasks(src, tmp_path / "pack", train=train)
    assert [t["task"] for t in summary["tasks"]] == ["gsm8k", "gsm8k_cot"]
    answers = {"Tom": "He has 3 + 4 = 7 apples.\n#### 7", "book": "So 1234 dollars."}

    def solve(prompt, kwargs):
        question = prompt.rsplit("Question:", 1)[-1] if "Question:" in prompt else prompt.rsplit("Q:", 1)[-1]
        return next(a for k, a in answers.items() if k in question)

    model = Scripted(generate=solve)
    result = run_pack(tmp_path / "pack", ["gsm8k", "gsm8k_cot"], model)
    assert result["results"]["gsm8k"]["exact_match,none"] == 1.0
    assert result["results"]["gsm8k_cot"]["exact_match,none"] == 1.0
    contexts = [r.args[0] for r in model.requests]
    assert sum(c.count("Question:") for c in contexts if "Question:" in c) == 2 * 6  # 5 shots + the question
    cot = [c for c in contexts if c.startswith("Q: There are 15 trees")]
    assert len(cot) == 2 and all(c.count("The answer is") == 8 for c in cot)  # lm-eval's 8 exemplars


def _write_mmlu(root: Path) -> Path:
    (root / "test").mkdir(parents=True)
    (root / "dev").mkdir()
    (root / "test" / "anatomy_test.csv").write_text(
        'Which organ pumps blood?,Lung,Heart,Liver,Kidney,B\n"The femur is a, b, c?",bone,muscle,nerve,vessel,A\n'
    )
    (root / "dev" / "anatomy_dev.csv").write_text("Where is the tibia?,Leg,Arm,Head,Chest,A\n")
    (root / "test" / "astronomy_test.csv").write_text(
        "What orbits the Earth?,The Sun,Mars,The Moon,Venus,C\n"
    )
    return root


def test_mmlu_pack_matches_lm_evals_prompt(tmp_path):
    summary = convert_tasks(_write_mmlu(tmp_path / "mmlu"), tmp_path / "pack")
    assert [t["task"] for t in summary["tasks"]] == ["mmlu_anatomy", "mmlu_astronomy"] and summary[
        "groups"
    ] == ["mmlu"]
    ours = read_yaml(tmp_path / "pack" / "mmlu_anatomy.yaml")
    theirs = read_yaml(LM_EVAL_TASKS / "mmlu" / "default" / "_default_template_yaml")
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "output_type"):
        assert ours[key] == theirs[key], key
    assert (
        ours["description"]
        == read_yaml(LM_EVAL_TASKS / "mmlu" / "default" / "mmlu_anatomy.yaml")["description"]
    )
    model = Scripted(
        lambda ctx, cont: 0.0 if cont == (" B" if "pumps" in ctx else " A") else -1.0
    )  # astronomy: C
    result = run_pack(tmp_path / "pack", ["mmlu"], model, num_fewshot=1)
    assert result["results"]["mmlu_anatomy"]["acc,none"] == 1.0
    assert result["results"]["mmlu_astronomy"]["acc,none"] == 0.0
    assert result["results"]["mmlu"]["acc,none"] == pytest.approx(2 / 3)
    anatomy = next(r.args[0] for r in model.requests if "pumps" in r.args[0])
    assert anatomy.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert "Where is the tibia?\nA. Leg\nB. Arm\nC. Head\nD. Chest\nAnswer: A\n\n" in anatomy  # the dev shot


def test_arc_and_openbookqa_packs(tmp_path):
    arc = tmp_path / "ARC-Easy-Test.jsonl"
    arc.write_text(
        json.dumps({"id": "q1", "question": {"stem": "What do plants need?", "choices": [
            {"text": "Sunlight", "label": "A"}, {"text": "Sand", "label": "B"}]}, "answerKey": "A"}) + "\n"
    )  # fmt: skip
    obqa = tmp_path / "openbookqa_test.jsonl"
    obqa.write_text(
        json.dumps({"id": "7-1", "question_stem": "The sun is a", "choices": {"text": ["star", "planet"], "label": ["A", "B"]},
                    "answerKey": "A"}) + "\n"
    )  # fmt: skip
    convert_tasks(arc, tmp_path / "arc", name="arc_easy_local")
    convert_tasks(obqa, tmp_path / "obqa")
    for ours, builtin in ((tmp_path / "arc" / "arc_easy_local.yaml", "arc/arc_easy.yaml"),
                          (tmp_path / "obqa" / "openbookqa_test.yaml", "openbookqa/openbookqa.yaml")):  # fmt: skip
        mine, theirs = read_yaml(ours), read_yaml(LM_EVAL_TASKS / builtin)
        assert mine["doc_to_target"] == theirs["doc_to_target"].replace(".lstrip()", "")
        assert mine["doc_to_choice"] == theirs["doc_to_choice"]
        assert [m["metric"] for m in mine["metric_list"]] == ["acc", "acc_norm"]
    model = Scripted(lambda ctx, cont: 0.0 if cont in (" Sunlight", " star") else -5.0)
    result = run_pack(tmp_path / "arc", ["arc_easy_local"], model)
    assert result["results"]["arc_easy_local"]["acc,none"] == 1.0
    assert model.requests[0].args == ("Question: What do plants need?\nAnswer:", " Sunlight")
    result = run_pack(tmp_path / "obqa", ["openbookqa_test"], model)
    assert result["results"]["openbookqa_test"]["acc,none"] == 1.0


def test_humaneval_mbpp_gsm8k_prompts_match_lm_eval(tmp_path):
    convert_tasks("humaneval", tmp_path / "he")
    src = tmp_path / "mbpp.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in MBPP))
    convert_tasks(src, tmp_path / "mbpp")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in GSM8K))
    convert_tasks(gsm, tmp_path / "gsm")
    pairs = [
        (tmp_path / "he" / "humaneval.yaml", "humaneval/humaneval.yaml", ("doc_to_text", "doc_to_target")),
        (
            tmp_path / "mbpp" / "mbpp.yaml",
            "mbpp/mbpp.yaml",
            ("doc_to_text", "doc_to_target", "target_delimiter"),
        ),
        (tmp_path / "gsm" / "gsm8k.yaml", "gsm8k/gsm8k.yaml", ("doc_to_text", "doc_to_target")),
        (
            tmp_path / "gsm" / "gsm8k_cot.yaml",
            "gsm8k/gsm8k-cot.yaml",
            ("doc_to_text", "doc_to_target", "num_fewshot"),
        ),
    ]
    for ours, builtin, keys in pairs:
        mine, theirs = read_yaml(ours), read_yaml(LM_EVAL_TASKS / builtin)
        for key in keys:
            assert mine[key] == theirs[key], (ours.name, key)
        assert mine["generation_kwargs"]["until"] == theirs["generation_kwargs"]["until"], ours.name


def test_domain_pack_example(tmp_path):
    summary = convert_tasks(EXAMPLES / "domain_pack", tmp_path / "pack")
    assert {t["task"]: t["documents"] for t in summary["tasks"]} == {
        "domain_coding": 6,
        "domain_medicine": 6,
        "domain_legal": 6,
        "domain_reasoning": 6,
    }
    answers = {
        json.loads(line)["question"]: json.loads(line)["answer"]
        for line in (EXAMPLES / "domain_pack" / "reasoning.jsonl").open()
    }

    def reply(prompt, kwargs):
        a = answers[prompt.removeprefix("Question: ").removesuffix("\nAnswer:")]
        return " " + (a[0] if isinstance(a, list) else a).upper()  # case is ignored

    truth = set()
    for domain in ("coding", "medicine", "legal"):
        for line in (tmp_path / "pack" / f"domain_{domain}.jsonl").open():
            d = json.loads(line)
            truth.add(" " + d["choices"][d["answer"]])
    model = Scripted(lambda ctx, cont: 0.0 if cont in truth else -3.0, reply)
    result = run_pack(tmp_path / "pack", ["domain"], model)
    for task in ("domain_coding", "domain_medicine", "domain_legal"):
        assert result["results"][task]["acc,none"] == 1.0, task
    assert result["results"]["domain_reasoning"]["exact_match,strip"] == 1.0


# ---- bad input --------------------------------------------------------------------------------
def test_malformed_sources_name_the_line(tmp_path):
    bad_json = tmp_path / "task.json"
    bad_json.write_text('{\n  "name": "x",\n  "examples": [\n    {"input": "a" "target": "b"}\n  ]\n}\n')
    with pytest.raises(TaskFileError, match=r"task.json line 4: not valid JSON"):
        convert_tasks(bad_json, tmp_path / "out")
    bad_jsonl = tmp_path / "gsm.jsonl"
    bad_jsonl.write_text(json.dumps(GSM8K[0]) + "\n" + '{"question": "x", "answer": \n')
    with pytest.raises(TaskFileError, match=r"gsm.jsonl line 2: not valid JSON"):
        convert_tasks(bad_jsonl, tmp_path / "out", fmt="gsm8k")
    missing = tmp_path / "mbpp.jsonl"
    missing.write_text(
        json.dumps(MBPP[0]) + "\n" + json.dumps({"task_id": 3, "text": "t", "code": "c"}) + "\n"
    )
    with pytest.raises(TaskFileError, match=r"mbpp.jsonl line 2: missing field 'test_list'"):
        convert_tasks(missing, tmp_path / "out", fmt="mbpp")
    mmlu = tmp_path / "mmlu"
    mmlu.mkdir()
    (mmlu / "law_test.csv").write_text("q,a,b,c,d,A\nq2,a,b,c,D\n")
    with pytest.raises(TaskFileError, match=r"law_test.csv line 2: expected 6 columns"):
        convert_tasks(mmlu, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_check_task_dir_names_the_broken_file_and_line(tmp_path):
    convert_tasks(BIGBENCH / "date_understanding", tmp_path / "pack")
    assert check_task_dir(tmp_path / "pack") == ["date_understanding"]
    broken = tmp_path / "pack" / "broken.yaml"
    broken.write_text(
        "task: broken\ndataset_path: json\noutput_type: multiple_choice\ndoc_to_text: [unclosed\nmetric_list: x\n"
    )
    with pytest.raises(TaskFileError, match=r"broken.yaml line 5: not valid YAML"):
        check_task_dir(tmp_path / "pack")
    broken.unlink()
    data = tmp_path / "pack" / "date_understanding.jsonl"
    lines = data.read_text().splitlines()
    lines[6] = lines[6][:-3]
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskFileError, match=r"date_understanding.jsonl line 7: not valid JSON"):
        check_task_dir(tmp_path / "pack")
    data.unlink()
    with pytest.raises(
        VishwamError, match=r"reads .*date_understanding.jsonl for its test split, which does not exist"
    ):
        check_task_dir(tmp_path / "pack")


def test_unreadable_sources_are_one_sentence(tmp_path):
    (tmp_path / "notes.jsonl").write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(VishwamError, match="cannot tell the benchmark from its fields"):
        convert_tasks(tmp_path / "notes.jsonl", tmp_path / "out")
    with pytest.raises(VishwamError, match="does not exist"):
        convert_tasks(tmp_path / "nope.jsonl", tmp_path / "out")
    convert_tasks(BIGBENCH / "date_understanding", tmp_path / "out")
    with pytest.raises(VishwamError, match="already exists; pass --force"):
        convert_tasks(BIGBENCH / "date_understanding", tmp_path / "out")
