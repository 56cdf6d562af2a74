"""data.py — questions in, validated; one loader for train.py, evaluate.py and baselines.py.

SD-Zero needs only (question, final answer) pairs for math and (question, tests) for code — no gold
reasoning traces (paper §1). The schema, one JSON object per line:

    math: {"id": ..., "question": "...", "answer": "..."}                      (OpenR1-Math style)
    code: {"id": ..., "question": "...", "tests": {"stdio": [{"input", "output"}, ...]}}
          {"id": ..., "question": "...", "tests": {"entry_point": "f", "test": "def check(candidate): ..."}}

An optional "band" field labels a difficulty band (the toy's banded world writes "common" / "rare");
the held-out table then reports each band's accuracy beside the overall one.

Which fields a row needs beyond the question is the task's business: reward.TASKS[task].check_row
validates it (math: an answer; code: tests; a task of your own: what its reward reads).

Other exports are mapped with field flags (``--question-field problem`` for OpenR1-Math-220k).
A malformed line is an error that names the file and line — never a silent skip, because a skipped
row changes which questions land in which phase.

The paper's data: ``paper_math`` (OpenR1-Math-220k, its 15K training and 500 held-out questions) and
``BENCHMARKS`` / ``load_benchmark``, the evaluation sets of Table 1 (AIME24, AIME25, HMMT25, AMOBench,
MATH-500, LiveCodeBench, Codeforces), each from its Hugging Face dataset in that dataset's own schema.

It also owns the orders and counts the knobs imply: the phase split, SRT's batch plan, Phase 2's
question order, its step count (``phase2_steps``) and SD-Zero's generation budget (``planned_budget``).
"""
from __future__ import annotations

import base64
import io
import json
import math
import os
import pickle
import random
import sys
import zlib

import reward


class DataError(ValueError):
    """A one-line, user-facing data problem (file:line: what is wrong)."""


def _check(row: dict, task: str, where: str) -> dict:
    """One row, validated: a question, plus what the task's reward needs (reward.TASKS[task].check_row)."""
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        raise DataError(f"{where}: missing or empty question field")
    try:
        return reward.get_task(task).check_row(row)
    except ValueError as e:
        raise DataError(f"{where}: {e}" if task in reward.TASKS else str(e)) from None


def _map(raw: dict, fields: dict) -> dict:
    """Rename export-specific fields to the schema (fields maps schema name -> source name)."""
    row = {}
    for name, src in fields.items():
        if src in raw:
            row[name] = raw[src]
    row.setdefault("id", raw.get("id"))
    return row


def load_jsonl(path: str, task: str = "math", fields: dict | None = None,
               limit: int | None = None) -> list[dict]:
    # "band" (optional) labels a difficulty band; the held-out table then reports each band's accuracy.
    fields = {"question": "question", "answer": "answer", "tests": "tests", "id": "id", "band": "band",
              **(fields or {})}
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(raw, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
            row = _check(_map(raw, fields), task, where)
            if row.get("id") is None:
                row["id"] = f"{os.path.basename(path)}:{lineno}"
            rows.append(row)
            if limit and len(rows) >= limit:
                break
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def load_hf(name: str, task: str = "math", fields: dict | None = None, split: str = "train",
            config: str | None = None, limit: int | None = None) -> list[dict]:
    """A Hugging Face dataset id, through ``datasets`` when it is installed (optional dependency)."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name!r} is not a local file, and loading hub datasets needs "
                        "`pip install datasets`") from None
    fields = {"question": "question", "answer": "answer", "tests": "tests", "id": "id",
              **(fields or {})}
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many types; one readable line is what matters
        raise DataError(f"could not load dataset {name!r} (split {split!r}): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    rows = []
    for i, raw in enumerate(ds):
        rows.append(_check(_map(dict(raw), fields), task, f"{name}[{split}][{i}]"))
        if rows[-1].get("id") is None:
            rows[-1]["id"] = f"{name}:{i}"
        if limit and len(rows) >= limit:
            break
    return rows


def load(source: str, task: str = "math", fields: dict | None = None, split: str = "train",
         config: str | None = None, limit: int | None = None) -> list[dict]:
    """Local JSONL if ``source`` is a file (or looks like a path), a BENCHMARKS name, else an HF dataset id."""
    if os.path.exists(source) or source.endswith((".jsonl", ".json")) or source.startswith((".", "/")):
        return load_jsonl(source, task, fields, limit)
    if source in BENCHMARKS:
        return load_benchmark(source, limit)
    return load_hf(source, task, fields, split, config, limit)


def split_phases(rows: list[dict], n_phase1: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Disjoint question sets N1 (Phase 1) and N2 (Phase 2), paper §2. Deterministic in ``seed``.

    ``n_phase1`` may be a count or, when < 1, a fraction. The paper's best split gives the larger
    share to Phase 2 (Table 13: 6K/9K beat 9K/6K).
    """
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    k = int(round(n_phase1 * len(rows))) if 0 < n_phase1 < 1 else int(n_phase1)
    k = max(0, min(k, len(rows)))
    return [rows[i] for i in order[:k]], [rows[i] for i in order[k:]]


def write_jsonl_atomic(path: str, rows: list[dict]) -> None:
    """One JSON object per line, written beside and renamed: a kill never leaves half a file."""
    with open(path + ".tmp", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(path + ".tmp", path)


def read_jsonl(path: str) -> list[dict]:
    """A run's own JSONL files (revisions.jsonl, revision_pool.jsonl): no schema, no field mapping."""
    return [json.loads(line) for line in open(path) if line.strip()]


# --------------------------------------------------------------------------------------------
# Data order in the two loops: fixed by the seed, so a step number is a resumable position
# --------------------------------------------------------------------------------------------
def srt_plan(stages, seed: int, batch_size: int, steps: int = 0, epochs: int = 1) -> list:
    """SRT's (loss mode, batch) for every optimizer step, drawn up front from ``seed``.

    ``stages``: [(mode, examples)]; each runs ``steps`` steps, or ``epochs`` passes when steps = 0,
    every pass a fresh shuffle. The step number alone then tells a resumed run where it was.
    """
    rng = random.Random(seed)
    plan = []
    for mode, pool in stages:
        n = steps or max(1, math.ceil(len(pool) / batch_size)) * epochs
        order = []
        while len(order) < n * batch_size:
            idx = list(range(len(pool)))
            rng.shuffle(idx)
            order += idx
        plan += [(mode, [pool[i] for i in order[k * batch_size:(k + 1) * batch_size]]) for k in range(n)]
    return plan


def phase2_order(n: int, seed: int, upto: int) -> list[int]:
    """Question order for Phase 2: reshuffled every pass over N2, determined by the seed alone, so
    the step number is the whole "data position" a resume needs."""
    order, epoch = [], 0
    while len(order) < upto:
        idx = list(range(n))
        random.Random(seed * 1000 + epoch).shuffle(idx)
        order += idx
        epoch += 1
    return order


# --------------------------------------------------------------------------------------------
# The paper's data (used when train.py gets --model but no --data)
# --------------------------------------------------------------------------------------------
PAPER_MATH = "open-r1/OpenR1-Math-220k"     # paper §5: 15K verified problems, fields problem/answer
PAPER_CODE = "open-r1/codeforces-cots"      # paper §5: 7.5K C++ + 7.5K Python from its solutions subset
PAPER_TRAIN, PAPER_HELDOUT = 15_000, 500    # 15K training questions per domain; 500 held out (in-distribution)
NO_PROOFS = {"", "proof", "notfound", "none"}


def _fix_hint(name: str) -> str:
    return (f"either make it loadable (`pip install datasets`, and network access to the Hugging Face "
            f"Hub or a local copy: `huggingface-cli download --repo-type dataset {name}`), or pass "
            "--data file.jsonl with question/answer fields (and --test-data for the held-out table)")


def paper_math(seed: int, n_train: int = PAPER_TRAIN, n_test: int = PAPER_HELDOUT,
               limit: int | None = None, demos: bool = True) -> tuple[list[dict], list[dict]]:
    """The paper's math setting: OpenR1-Math-220k problems with a verified solution, 15K for
    training and 500 held out, drawn by ``seed`` (the same seed gives the same questions).

    "Verified" follows the dataset's own columns: a final answer that is not a proof, and at least
    one of the dataset's generations accepted by math-verify (``correctness_math_verify``). The paper
    says only "15K problems with verified solutions"; which 15K is not published, so ours are a
    seeded uniform sample of those that qualify. Every failure is one line that says what to do.

    Each training row also carries ``r1``: the first of the dataset's DeepSeek-R1 ``generations``
    that its own ``correctness_math_verify`` marks correct (``r1_trace``), the demonstration that
    SDFT's teacher reads and SFT trains on (paper §5, Table 1). Only the 15K training rows fetch it
    (``demos=False``: none do): the generations are most of the dataset's size.
    """
    try:
        import datasets
    except ImportError:
        raise DataError(f"the paper's math data ({PAPER_MATH}) is read with the `datasets` package, "
                        f"which is not installed: {_fix_hint(PAPER_MATH)}") from None
    try:
        ds = datasets.load_dataset(PAPER_MATH, "default", split="train")
    except Exception as e:  # offline, no such cache, hub errors: many types, one readable line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = _fix_hint(PAPER_MATH)
        raise DataError(f"could not load {PAPER_MATH} (no network access?): {first.rstrip('.')}. "
                        f"{hint[0].upper()}{hint[1:]}") from None
    wanted = ("uuid", "problem", "answer", "solution", "correctness_math_verify")
    have = getattr(ds, "column_names", None) or (*wanted, "generations")
    traces = ds.select_columns([c for c in ("generations", "correctness_math_verify") if c in have]) \
        if hasattr(ds, "select_columns") else ds     # read again below, for the training rows only
    if hasattr(ds, "select_columns"):
        ds = ds.select_columns([c for c in wanted if c in have])   # the generations are large: not in this pass
    rows = []
    for i, r in enumerate(ds):
        answer = str(r.get("answer") or "").strip()
        if answer.lower() in NO_PROOFS or not str(r.get("problem") or "").strip():
            continue
        if not any(bool(v) for v in (r.get("correctness_math_verify") or [])):
            continue
        rows.append({"id": r.get("uuid") or f"{PAPER_MATH}:{i}", "question": r["problem"],
                     "answer": answer, "solution": r.get("solution") or "", "row": i})
    if len(rows) < n_train + n_test:
        raise DataError(f"{PAPER_MATH}: only {len(rows)} verified problems, fewer than the "
                        f"{n_train} + {n_test} the paper's split needs")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    test = [rows[i] for i in order[:n_test]]
    train = [rows[i] for i in order[n_test:n_test + n_train]][:limit or None]
    for r in test:
        del r["row"]
    for r in train:
        i = r.pop("row")
        if demos:
            r["r1"] = r1_trace(traces[i])
    return train, test


def r1_trace(row: dict) -> str:
    """The first DeepSeek-R1 generation of an OpenR1-Math row that the row's own math-verify column
    marks correct ("" if none). The text is kept whole, as the dataset stores it (its <think> part
    included): the paper does not say whether its SDFT and SFT used the reasoning or only the answer."""
    for text, ok in zip(row.get("generations") or [], row.get("correctness_math_verify") or []):
        if ok and str(text).strip():
            return str(text)
    return ""


def paper_code_hint() -> str:
    """--task code without --data: what the paper used and how to bring it in."""
    return (f"--task code needs --data: the paper trained on {PAPER_CODE} (7.5K problems from its C++ "
            "'solutions' subset + 7.5K from 'solutions_py') and held out 500 Codeforces problems. "
            "Export those rows to JSONL and map the fields: the statement is 'prompt' "
            "(--question-field prompt) and the tests are 'examples', a list of {input, output} "
            "(--tests-field examples; a list is read as stdio tests), e.g. "
            "--data cf.jsonl --test-data cf_heldout.jsonl --question-field prompt --tests-field examples")


# --------------------------------------------------------------------------------------------
# Counts from the knobs: Phase-2 steps and the generation budget (train.py, baselines)
# --------------------------------------------------------------------------------------------
def phase2_size(args, n1: int, n_rest: int) -> int:
    """|N2| from the knobs alone: --phase2-questions (0 = every question outside N1), capped at what
    is certain to exist whatever Phase 1 keeps, so the plan and the run agree (phase2_questions).

    Certain: the n_rest questions outside N1, plus the N1 questions that cannot hold a kept trace. At
    most --max-traces traces are kept, so at most that many N1 questions hold one (0 = all kept: none
    certain). Paper: 5,000 outside N1 + (10,000 - 6,000) = 9,000, exactly Table 13's 9K.
    """
    if not args.phase2_questions:
        return n_rest
    return min(args.phase2_questions, n_rest + n1 - min(n1, args.max_traces or n1))


def phase2_questions(args, n1: list[dict], rest: list[dict], kept_ids) -> list[dict]:
    """N2 once Phase 1 has run: the paper's reading of "10K collected, 6K kept, another 9K distilled".

    App. C.1 collects on 10K questions, keeps 6K traces, and distils on "another" 9K, all out of 15K
    questions per domain, so 10K + 9K cannot both be disjoint sets of the 15K. We read "another" as:
    no Phase-2 question has a trace SRT trained on (§2's disjoint N1 and N2 are the questions each
    phase TRAINS on), and N2 = Table 13's 9K. So N2 takes, in the seeded order of split_phases, first
    the questions Phase 1 never saw (``rest``), then N1's questions none of whose revisions were kept
    (``kept_ids``: the ids in revisions.jsonl). Its size is phase2_size's, fixed before Phase 1.
    Other readings, not taken: (a) 19K questions, 10K + 9K disjoint (the paper says 15K); (b) collect
    on 6K so that 6K + 9K = 15K (the preset before this one; Phase 1 then spends 24K, not Table 3's
    40K); (c) N2 = any 9K of the 15K, overlapping SRT's (breaks §2's disjointness).
    """
    if not args.phase2_questions:
        return rest                       # 0: the rest, in order (the toy world's default)
    kept = {str(i) for i in kept_ids if i is not None}     # (a --revisions file may carry no ids)
    pool = rest + [r for r in n1 if str(r["id"]) not in kept]
    return pool[:phase2_size(args, len(n1), len(rest))]


def phase2_steps(args, n2: int) -> int:
    """Phase-2 optimizer steps: --steps, or --phase2-epochs passes over N2 rounded up to whole steps.

    Paper scale: 9,000 questions x 1 pass / 128 per step = 70.3 -> 71 steps = 9,088 generations
    (App. C.2 counts 9K; the last step's 88 questions start the next reshuffled pass).
    """
    return args.steps or max(1, math.ceil(args.phase2_epochs * n2 / args.batch_questions))


def planned_budget(args, n_train: int) -> int:
    """Generations SD-Zero would use with these settings (paper App. C.2: a response = one).

    Phase 1: |N1| x n_init initial answers, each revised n_rev times; Phase 2: steps x questions x
    rollouts. With --revise-correct 0 only the wrong initial answers are revised, a number no one
    knows before sampling, so the baselines then need --budget (read it off the SD-Zero run).
    """
    if not args.revise_correct:
        raise SystemExit("error: with --revise-correct 0 SD-Zero's Phase-1 generations depend on how many "
                         "initial answers are wrong; pass the baseline --budget N (the last 'generations' "
                         "in the SD-Zero run's metrics.jsonl)")
    counts = sdzero_counts(args, n_train)
    return counts["phase1"] + counts["phase2"]


def sdzero_counts(args, n_train: int) -> dict:
    """SD-Zero's questions and generations per phase, from the knobs (planned_budget, plan_lines).
    With --revise-correct 0, "phase1" is the most Phase 1 can spend (every answer wrong)."""
    n1, rest = (len(p) for p in split_phases(list(range(n_train)), args.phase1_questions, args.seed))
    n2 = phase2_size(args, n1, rest)
    steps = phase2_steps(args, n2)
    return {"n1": n1, "n2": n2, "steps": steps, "phase1": n1 * args.n_init * (1 + args.n_rev),
            "phase2": steps * args.batch_questions * args.rollouts_per_question}


# The baselines' budget (--budget of baselines.py) and how each method spends it, in whole steps.
SAMPLES_PER_QUESTION = 4     # paper Table 3: RFT, GRPO and SDFT each get 15K questions x 4 = 60K generations


def baseline_budget(args, n_train: int, mode) -> int:
    """--budget: paper = every training question x 4 (Table 3: 60K); equal = SD-Zero's planned_budget
    (the toy table's rule: every row at the same count); a number = that many generations."""
    if mode == "paper":
        return n_train * SAMPLES_PER_QUESTION
    if mode == "equal":
        return planned_budget(args, n_train)
    return int(mode)


def baseline_plan(args, method: str, n_train: int, budget: int) -> dict:
    """How ``method`` spends ``budget`` generations on ``n_train`` questions: whole steps, never past
    the budget. baselines.run_method runs exactly this; ``text`` is the arithmetic the plan prints.

    RFT: n samples for every question, n = budget // questions. SFT: trains on the dataset's
    demonstrations, generates nothing. GRPO: rollout batches of --grpo-updates mini-batches of
    --grpo-batch-questions questions x --grpo-n rollouts. SDFT: Phase 2's batches (--batch-questions x
    --rollouts-per-question), as many as fit.
    """
    if method == "sft":
        return {"generations": 0, "text": f"SFT: {n_train:,} demonstrations (--demo {args.demo}), 0 generations"}
    if method == "rft":
        n = max(1, budget // n_train)
        return {"samples": n, "generations": n * n_train,
                "text": f"RFT: {n_train:,} questions x {n} samples = {n * n_train:,} generations"}
    if method == "grpo":
        batch = args.grpo_batch_questions * args.grpo_updates            # questions per rollout batch
        per_step, unit = batch * args.grpo_n, "rollout batches"
        what = f"{batch:,} questions x {args.grpo_n} rollouts, {args.grpo_updates} updates each"
    else:
        batch = args.batch_questions
        per_step, unit = batch * args.rollouts_per_question, "steps"
        what = f"{batch:,} questions x {args.rollouts_per_question} rollouts"
    steps = max(1, budget // per_step)
    return {"steps": steps, "batch_questions": batch, "per_step": per_step, "generations": steps * per_step,
            "text": f"{method.upper()}: {steps:,} {unit} x ({what}) = {steps * per_step:,} generations, "
                    f"{steps * batch / n_train:.2f} passes over {n_train:,} questions"}


def plan_lines(args, n_train: int, methods=("sdzero",), budget_mode: str = "paper") -> list[str]:
    """The plan --dry-run prints: every count from the knobs (and ``n_train``), nothing loaded."""
    lines = [f"plan for {n_train:,} training questions (counts from the knobs; no model or data loaded):"]
    for method in methods:
        if method != "sdzero":
            budget = baseline_budget(args, n_train, budget_mode)
            rule = {"paper": f"paper: {n_train:,} questions x {SAMPLES_PER_QUESTION}, Table 3",
                    "equal": "equal: SD-Zero's planned total"}.get(str(budget_mode), "given")
            lines.append(f"  {baseline_plan(args, method, n_train, budget)['text']}"
                         + (f" (budget {budget:,}, {rule})" if method != "sft" else ""))
            continue
        c = sdzero_counts(args, n_train)
        n1, n2, steps, p1, p2 = c["n1"], c["n2"], c["steps"], c["phase1"], c["phase2"]
        lines += [f"  Phase 1: collect on N1 = {n1:,} questions x ({args.n_init} y_init + {args.n_init * args.n_rev} "
                  f"revisions) = {'at most ' * (not args.revise_correct)}{p1:,} generations; keep at most "
                  f"{f'{args.max_traces:,}' if args.max_traces else 'all'} verified traces for SRT",
                  f"  Phase 2: N2 = {n2:,} questions, none with a kept trace: {steps:,} steps x "
                  f"{args.batch_questions} questions x {args.rollouts_per_question} rollouts = {p2:,} generations",
                  f"  SD-Zero: {p1:,} + {p2:,} = {p1 + p2:,} generations (paper Table 3: 40K + 9K = 49K)"]
    return lines


# --------------------------------------------------------------------------------------------
# The paper's benchmarks (Table 1), each read in its own columns and mapped onto the schema above
# --------------------------------------------------------------------------------------------
# Each entry: where the dataset lives ("hf", "configs", "split", "data_files"), its task, and which of the
# dataset's OWN columns fill our fields ({schema field: dataset column}). The comment above each says who uses
# that id: the official code (a NeMo-RL fork) names only AIME2024, its validation set; the others follow
# NeMo-RL's eval sets or the benchmark's own card. Local copies in those columns take the same mapping.
BENCHMARKS = {
    # official code: validation.dataset_name AIME2024 (distillation_math.yaml); NeMo-RL loads it from this id
    "aime24": {"task": "math", "hf": "HuggingFaceH4/aime_2024", "split": "train",
               "fields": {"id": "id", "question": "problem", "answer": "answer"}},
    # NeMo-RL's aime2025 eval set: both configs (AIME I and II, 15 each), concatenated; it has no id column
    "aime25": {"task": "math", "hf": "opencompass/AIME2025", "configs": ("AIME2025-I", "AIME2025-II"),
               "split": "test", "fields": {"question": "question", "answer": "answer"}},
    # NeMo-RL's hmmt eval set (variant 2025_feb); the card: problem_idx, problem, answer, problem_type
    "hmmt25": {"task": "math", "hf": "MathArena/hmmt_feb_2025", "split": "train",
               "fields": {"id": "problem_idx", "question": "problem", "answer": "answer"}},
    # the benchmark's own card (arXiv 2510.26768 links it): question_id, prompt, solution, answer, answer_type
    "amobench": {"task": "math", "hf": "meituan-longcat/AMO-Bench", "split": "test",
                 "fields": {"id": "question_id", "question": "prompt", "answer": "answer"}},
    # the paper's 500 held-out OpenR1-Math questions: paper_math()'s split, by train.py's --seed
    "openr1": {"task": "math", "hf": PAPER_MATH, "split": "train",
               "fields": {"id": "uuid", "question": "problem", "answer": "answer"}},
    # NeMo-RL's math500 set; the card: problem, solution, answer, subject, level, unique_id
    "math500": {"task": "math", "hf": "HuggingFaceH4/MATH-500", "split": "test",
                "fields": {"id": "unique_id", "question": "problem", "answer": "answer"}},
    # the paper's code data (the official README); 'solutions_py' asks for Python, the language our runner
    # runs. Rows are R1 generations, several per problem: each problem is kept once, then a seeded 500.
    "codeforces": {"task": "code", "hf": PAPER_CODE, "configs": ("solutions_py",), "split": "train",
                   "fields": {"id": "id", "question": "prompt", "tests": "examples"}},
    # NeMo-RL's livecodebench set reads its JSONL files; test6.jsonl = release_v6's additions (paper: no version)
    "livecodebench": {"task": "code", "hf": "livecodebench/code_generation_lite", "data_files": "test6.jsonl",
                      "split": "train", "fields": {"id": "question_id", "question": "question_content"}},
}
PAPER_TABLE1 = ("aime24", "aime25", "hmmt25", "amobench", "openr1", "math500")   # Table 1's math columns, in order


def benchmark_names(names) -> list[str]:
    """--benchmark values in order, 'paper' expanded to Table 1's math columns; each name once."""
    out = [n for name in names for n in (PAPER_TABLE1 if name == "paper" else (name,))]
    if unknown := sorted(set(out) - set(BENCHMARKS)):
        raise DataError(f"unknown benchmark {unknown[0]!r}; registered: {', '.join(BENCHMARKS)} (or 'paper')")
    return list(dict.fromkeys(out))


def load_benchmark(name: str, limit: int | None = None, source: str | None = None, seed: int = 42) -> list[dict]:
    """One of Table 1's benchmarks as validated rows: from the hub through ``datasets``, or from ``source``.

    ``source`` (default: $SDZERO_BENCHMARKS) is a JSONL file, or a folder of <name>.jsonl, in the dataset's OWN
    columns: a local copy or a test fixture takes exactly the mapping hub rows take. Problems we cannot
    grade are left out and counted on stderr, never silently."""
    spec, source = BENCHMARKS[benchmark_names([name])[0]], source or os.environ.get("SDZERO_BENCHMARKS")
    source = os.path.join(source, f"{name}.jsonl") if source and os.path.isdir(source) else source
    if name == "openr1" and not source:                      # the 500 questions train.py held out
        return paper_math(seed, demos=False)[1][:limit or None]
    rows, skipped = {}, 0
    for where, raw in (_own_rows(source) if source else _hub_rows(name, spec)):
        row = _benchmark_row(name, spec, raw, where)
        skipped += row is None
        if row is not None:
            row["id"] = row["id"] if row.get("id") is not None else f"{name}:{len(rows)}"
            rows.setdefault(str(row["id"]), row)             # one row per problem (codeforces-cots repeats them)
    if skipped:
        print(f"note: {name}: left out {skipped} problems our runner can't test (docs/benchmarks.md)", file=sys.stderr)
    if not rows:
        raise DataError(f"{name}: no gradable rows in {source or spec['hf']}")
    rows = list(rows.values())
    if name in ("codeforces", "openr1") and len(rows) > PAPER_HELDOUT:      # the paper holds out 500
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), PAPER_HELDOUT))]
    return rows[:limit or None]


def _own_rows(path: str):
    """(file:line, row) for each line of a JSONL file in the dataset's own columns."""
    if not os.path.isfile(path):
        raise DataError(f"benchmark file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                rows += [(f"{path}:{i}", json.loads(line))] if line.strip() else []
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return rows


def _hub_rows(name: str, spec: dict):
    """(dataset[config][i], row) from the Hugging Face Hub, or its local cache, through ``datasets``."""
    hf = spec["hf"]
    hint = (f"either make it loadable (`pip install datasets`, and network access to the Hugging Face Hub or a "
            f"local copy: `huggingface-cli download --repo-type dataset {hf}`), or put its rows, in its own "
            f"columns, in DIR/{name}.jsonl and set SDZERO_BENCHMARKS=DIR")
    try:
        import datasets
    except ImportError:
        raise DataError(f"benchmark {name} ({hf}) needs the `datasets` package, not installed: {hint}") from None
    out = []
    for config in spec.get("configs", (None,)):
        try:
            ds = (datasets.load_dataset("json", data_files=f"hf://datasets/{hf}/{spec['data_files']}",
                                        split=spec["split"]) if "data_files" in spec    # plain JSONL in the repo
                  else datasets.load_dataset(hf, config, split=spec["split"]))
        except Exception as e:  # noqa: BLE001 -- offline, no cache, hub errors: many types, one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"could not load benchmark {name} ({hf}; no network access?): "
                            f"{first.rstrip('.')}. {hint[0].upper()}{hint[1:]}") from None
        out += [(f"{hf}[{config or spec['split']}][{i}]", dict(r)) for i, r in enumerate(ds)]
    return out


def _benchmark_row(name: str, spec: dict, raw, where: str) -> dict | None:
    """One dataset row in our schema, checked; None for a problem our runner cannot grade."""
    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    row = _map(raw, spec["fields"])
    a = str(row.get("answer")).strip().strip("$").strip()     # AMO-Bench writes some answers as \boxed{...}
    if spec["task"] == "math" and a.startswith("\\boxed{") and a.endswith("}") and "\\boxed" not in a[7:]:
        row["answer"] = a[7:-1]               # one box around it all (if its braces don't pair, reward rejects it)
    if name == "livecodebench":
        row["tests"] = _lcb_tests(raw, where)
    return None if spec["task"] == "code" and not row.get("tests") else _check(row, spec["task"], where)


def _lcb_tests(raw: dict, where: str) -> dict | None:
    """LiveCodeBench's public + private cases as stdio tests; None for LeetCode-style ("functional") ones,
    which call a method of class Solution on JSON arguments: our runner has no harness for that."""
    cases = _lcb_cases(raw.get("public_test_cases"), where) + _lcb_cases(raw.get("private_test_cases"), where)
    ok = cases and all(isinstance(c, dict) and c.get("testtype") == "stdin" for c in cases)
    return {"stdio": [{"input": c["input"], "output": c["output"]} for c in cases]} if ok else None


class _PlainValues(pickle.Unpickler):
    """Plain values only: a pickle runs code only through the names it imports, and this refuses them all."""
    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only plain values are expected")


def _lcb_cases(text, where: str) -> list:
    """One LiveCodeBench test column: a JSON string, or (most private tests, to save space) that JSON
    pickled, zlib-compressed and base64-encoded."""
    try:
        return json.loads(text or "[]")
    except json.JSONDecodeError:
        pass
    try:
        value = _PlainValues(io.BytesIO(zlib.decompress(base64.b64decode(text)))).load()
        return value if isinstance(value, list) else json.loads(value)
    except (ValueError, EOFError, zlib.error, pickle.UnpicklingError) as e:     # binascii, json: ValueError
        raise DataError(f"{where}: a test column is neither JSON nor base64/zlib/pickle ({e})") from None
