"""config.py — every knob of a run: the paper's value, the toy's value, and where each comes from.

SD-Zero (arXiv 2604.12002) states some settings (App. C: 6K traces, lr 5e-6, top-k 64, T = 0.7,
16K tokens, ...) and leaves others open. ``KNOBS`` lists each one once as (flag, paper value, toy
value, help): the help says whether the paper, the official code or this project chose it, and
docs/differences.md lists every place where the code departs from the paper.

With ``--model`` the paper's column applies; without it (the embedded toy world, toy.py) the toy's
column replaces the values that only make sense for a 4B model (a 0.8M-parameter model trained from
scratch needs a far larger learning rate). Flags given on the command line always win.
train.py and baselines.py read the same parser, so a baseline runs at SD-Zero's settings.
"""
from __future__ import annotations

import argparse
import json
import os

import distill
import reward
import toy
from generate import ENGINES
from machinery import tracking
from revise import SRT_NORMS
from reward import P_CORRECT, P_WRONG

# (flag, paper default, toy default, help incl. source)
KNOBS = [
    # Phase 1 (§2.1, App. C.1)
    ("phase1_questions", 10000, 700, "questions Phase 1 collects on, N1 (paper App. C.1: 10K questions x "
     "(1 y_init + 3 revisions) = 40K generations); <1 = fraction"),
    ("phase2_questions", 9000, 0, "questions in N2 for Phase 2 (paper App. C.1, Table 13: 9K), none with a kept "
     "trace: first those Phase 1 never collected on, then N1's without a kept trace (data.phase2_questions, "
     "docs/real-run.md); 0 = every question outside N1"),
    ("max_traces", 6000, 0, "keep at most this many verified revisions for SRT, a seeded random subset "
     "(paper App. C.1: 6K); 0 = all"),
    ("n_init", 1, 1, "initial responses per Phase-1 question (paper App. C.1; code script: 3)"),
    ("n_rev", 3, 3, "revisions per initial response (paper App. C.1; code: 3)"),
    ("srt_epochs", 3, 1, "SRT epochs (paper silent; official code: 3 per stage)"),
    ("srt_steps", 0, 260, "SRT optimizer steps; 0 = --srt-epochs decide (toy: a fixed number)"),
    ("srt_lr", 5e-6, 1e-3, "SRT learning rate, AdamW cosine (paper: 5e-6)"),
    ("srt_batch_size", 8, 32, "SRT examples per optimizer step (paper silent)"),
    ("srt_warmup", 0.05, 0.07, "SRT warm-up fraction (official code: 0.05)"),
    ("srt_weight_decay", 1e-4, 0.01, "SRT AdamW weight decay (official code: 1e-4)"),
    ("srt_norm", "seq_sum", "token_mean", "how eq. 3's terms add up: seq_sum = sequence NLL sums averaged over "
     "examples (eq. 1-3 as written); token_mean = each term a mean over its tokens (official code's SFT; the toy's, "
     "whose table was tuned with it)"),
    # Phase 2 (§2.2, App. C.2)
    ("steps", 0, 200, "Phase-2 optimizer steps; 0 = --phase2-epochs passes over N2 (official code: "
     "max_num_steps=1000, max_num_epochs=5)"),
    ("phase2_epochs", 1.0, 1.0, "with --steps 0: passes over N2, rounded up to whole steps (paper "
     "App. C.2 counts 9K Phase-2 generations: one pass, 1 rollout per question)"),
    ("batch_questions", 128, 32, "Phase-2 and SDFT questions per step (official code: 128); "
     "GRPO: --grpo-batch-questions"),
    ("rollouts_per_question", 1, 1, "Phase-2 rollouts per question (paper Table 6: 1)"),
    ("lr", 5e-6, 3e-4, "Phase-2 and SDFT learning rate (paper: 5e-6); GRPO uses --grpo-lr"),
    ("warmup_steps", 20, 10, "Phase-2 linear warm-up from 0.1x then constant (official code: 20)"),
    ("weight_decay", 0.01, 0.0, "Phase-2 AdamW weight decay (official code: 0.01)"),
    ("temperature", 0.7, 0.7, "training-time sampling temperature (paper: 0.7; code: 1.0)"),
    ("top_p", 1.0, 1.0, "training-time top-p (official code: 1.0)"),
    ("max_new_tokens", 16384, 96, "max generated tokens per response (paper: 16K)"),
    ("max_teacher_tokens", 32768, 4096, "cap on |X|+2|Y|+|S| for the teacher; Y truncated beyond (code: 32768)"),
    ("kl", "reverse", "reverse", "divergence: reverse = KL(student||teacher), eq. 4; forward; mixed (official code)"),
    ("mix", 0.5, 0.5, "forward weight of --kl mixed (official code: 0.5)"),
    ("support", "topk", "topk", "KL support: topk (teacher top-k, renormalised; paper/code), full, sampled"),
    ("topk", 64, 64, "teacher top-k (paper Table 6: 64)"),
    ("kl_temperature", 1.0, 1.0, "temperature of both sides' log-probs in the Phase-2 KL (topk and full supports). "
     "1 = the two models as they are, π_θ and π_SRT of eq. 4 (paper silent; the official code samples at T = 1, "
     "where the question does not arise); --support sampled always uses --temperature, as its estimator must"),
    ("norm", "seq_sum", "token_mean", "how eq. 4's per-token KLs add up: seq_sum = Σ_t per response, mean over "
     "responses (eq. 4 as written); token_mean = mean over every response token of the batch (official code; the "
     "toy's, whose table was tuned with it)"),
    ("teacher_sync", 0, 0, "teacher := student every N Phase-2 steps; 0 = frozen SRT teacher (paper §2.2, Fig. 5)"),
    ("sync_on_plateau", 0, 0, "teacher := student once the reward plateaus: the mean of the last P steps has not "
     "risen by 0.01 for P steps (train.plateau_reached); P here, 0 = off (Fig. 5 syncs once, at saturation)"),
    ("max_syncs", 1, 1, "at most this many plateau syncs (Fig. 5: one)"),
    ("grad_clip", 1.0, 1.0, "gradient-norm clip (official code: 1.0)"),
    # Memory and evaluation
    ("micro_batch", 1, 64, "sequences per forward/backward in Phase 2 and SRT (memory knob; docs/scaling.md)"),
    ("gen_batch", 4, 128, "sequences per generate() call (KV-cache memory knob; docs/scaling.md)"),
    ("eval_questions", 500, 300, "held-out questions for the final table (paper: 500 held-out)"),
    ("eval_k", 1, 1, "samples per held-out question (paper: avg@8)"),
    # The baselines of Table 1 (baselines.py)
    ("grpo_lr", 1e-6, 5e-5, "GRPO learning rate (paper silent; 1e-6 is DAPO's; toy: sweep in docs/findings.md)"),
    ("grpo_n", 4, 4, "GRPO rollouts per question (paper Table 3's budget: 4; Table 5: 8)"),
    ("grpo_batch_questions", 32, 8, "GRPO questions per policy update (a mini-batch), x --grpo-n rollouts each "
     "(paper silent; DAPO's recipe: 32 prompts per mini-batch)"),
    ("grpo_updates", 16, 1, "GRPO policy updates per rollout batch: one rollout batch of --grpo-updates x "
     "--grpo-batch-questions questions, one optimizer step per mini-batch, so DAPO's clip acts from the second "
     "on (DAPO's recipe: 512 prompts per rollout batch / 32 per mini-batch = 16; toy: 1, as docs/findings.md "
     "measured it)"),
    ("sdft_context", "user", "assistant", "SDFT teacher: demonstration in the user turn (SDFT paper) or as an "
     "earlier correct answer + 'rephrase' in the assistant turn (the toy cannot read instructions)"),
    ("demo", "r1", "r1", "SDFT's teacher context and SFT's targets: r1 = a DeepSeek-R1 trace of the question "
     "that the dataset marks correct (paper Table 1; the toy: toy.solve's worked solution), solution = the "
     "--solution-field text, answer = the final answer only (paper Table 8)"),
    ("save_every", 25, 1, "checkpoint every N steps (atomic; toy: every step)"),
]

# --preset: a named set of knob values that replaces both columns for the knobs it names (flags still
# win). "smoke" is the budget of tests/test_fingerprint.py's short toy run, with short generations, so
# that any --model runs every phase's mechanics in minutes on a CPU; it measures nothing.
PRESETS = {
    "smoke": {"phase1_questions": 32, "max_traces": 0, "srt_steps": 8, "srt_batch_size": 8, "steps": 4,
              "batch_questions": 8, "eval_questions": 16, "eval_k": 1, "max_new_tokens": 64,
              "max_teacher_tokens": 1024, "gen_batch": 32, "micro_batch": 8, "save_every": 4},
}

CHOICES = {"srt_norm": SRT_NORMS, "kl": distill.KINDS, "support": distill.SUPPORTS, "norm": ("token_mean", "seq_sum"),
           "sdft_context": ("user", "assistant"), "demo": ("r1", "solution", "answer")}


def count_or_fraction(text: str):
    return float(text) if "." in text else int(text)


def build_parser(description: str = "SD-Zero: Phase 1 (SRT), then Phase 2 (self-distillation).",
                 ) -> argparse.ArgumentParser:
    """The command line of train.py (and of baselines.py, which adds its method on top)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None,
                   help="HF id or local folder (paper: Qwen/Qwen3-4B-Instruct-2507). Omit for the toy world.")
    p.add_argument("--data", default=None, help="training questions: JSONL file or HF dataset id")
    p.add_argument("--test-data", default=None, help="held-out questions for the final table")
    p.add_argument("--task", default="math",
                   help="math or code (paper §5), or a task of your own: a name registered in reward.TASKS, "
                        "or any name with --reward")
    p.add_argument("--reward", default=None, metavar="MODULE:FUNCTION",
                   help="grade with FUNCTION(response, row) -> 0/1 from MODULE (e.g. my_task.py in the current "
                        "folder) instead of the task's own reward; a new --task name is registered with it")
    p.add_argument("--question-field", default="question", help="e.g. 'problem' for OpenR1-Math-220k")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--tests-field", default="tests")
    p.add_argument("--solution-field", default="solution",
                   help="SDFT demonstration field on real data (OpenR1-Math: 'solution'); the toy writes its own")
    p.add_argument("--split", default="train", help="split for an HF dataset id")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--phase", choices=["all", "srt", "distill"], default="all",
                   help="srt = Phase 1 only; distill = Phase 2 only, from --model (no SRT: Table 12 control "
                        "when --model is a base model)")
    p.add_argument("--srt-loss", choices=["joint", "sequential", "gen", "rev"], default="joint",
                   help="joint L_rev + L_gen (paper eq. 3); sequential = the official code's two stages "
                        "(stage 1: L_gen on wrong-init tuples, stage 2: L_rev); gen / rev = one term alone "
                        "(Table 11's ablations)")
    p.add_argument("--revise-correct", type=int, choices=[0, 1], default=1,
                   help="also revise correct y_init with the 'rephrase' phrase (paper: 1; official code: 0)")
    p.add_argument("--revisions", default=None,
                   help="SRT on this Phase-1 revisions JSONL (revisions.jsonl of an earlier run) instead "
                        "of collecting; counts as 0 generations")
    p.add_argument("--p-correct", default=P_CORRECT, help="P_r for r=1 (paper and code)")
    p.add_argument("--p-wrong", default=P_WRONG,
                   help="P_r for r=0 (paper; official Qwen code: 'Wait, this response is wrong. Let me correct it.')")
    for name, paper, toy_value, help_ in KNOBS:
        kind = count_or_fraction if name == "phase1_questions" else type(paper)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, choices=CHOICES.get(name),
                       help=f"{help_} [default: {paper}; toy: {toy_value}]")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="smoke = a few Phase-1 questions, a few SRT and Phase-2 steps, 64-token answers, a "
                        "16-question table: any --model's mechanics in minutes on a CPU (flags still win)")
    p.add_argument("--run-name", default=None, help="runs/<name>/ (default: toy or model basename)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoint.pt")
    p.add_argument("--seed", type=int, default=42, help="official code: 42")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: min(2, cores))")
    p.add_argument("--no-grad-ckpt", action="store_true", help="disable gradient checkpointing (on for CUDA)")
    p.add_argument("--gpu-path", action="store_true", help="on CPU: a CUDA run's path (bf16, grad ckpt; tests)")
    p.add_argument("--rollout-engine", choices=ENGINES, default="plain",
                   help="Phase-1 collection and the held-out table: plain = static batches of --gen-batch "
                        "through HF generate; continuous = transformers' continuous batching "
                        "(model.generate_batch), same ids, EOS and truncation. Phase 2 always plain. The "
                        "default stays plain until `python -m bench gpu` shows continuous is faster")
    p.add_argument("--no-eval", action="store_true", help="skip the final held-out table")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (questions per phase, generations per method) from the knobs and exit, "
                        "before any model or data is loaded")
    p.add_argument("--max-bad-steps", type=int, default=3,
                   help="stop after this many consecutive NaN/inf steps (each is skipped)")
    p.add_argument("--toy-root", default="runs/toy", help="where the toy world is cached")
    p.add_argument("--toy-steps", type=int, default=None,
                   help="pre-training steps of the toy base (default: toy.py's; fewer = a quick, weak base)")
    p.add_argument("--toy-world", choices=list(toy.WORLDS), default="standard",
                   help="banded = two more shapes the base rarely solves; the table reports each band")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report-to", choices=tracking.BACKENDS, default="none",
                   help="live curves: every metrics.jsonl record also to trackio (`pip install trackio`; "
                        "then `trackio show`), wandb (`pip install wandb`) or tensorboard (`pip install "
                        "tensorboard`; then `tensorboard --logdir runs`); none of them is required "
                        "(machinery/tracking.py)")
    return p


def resolve(args) -> argparse.Namespace:
    """Fill every knob left unset with the paper's value, or the toy's when --model is omitted."""
    args.toy = args.model is None
    preset = PRESETS.get(getattr(args, "preset", None), {})
    for name, paper, toy_value, _ in KNOBS:
        if getattr(args, name) is None:
            setattr(args, name, preset.get(name, toy_value if args.toy else paper))
    check_task(args)
    if args.support == "sampled" and args.kl != "reverse":
        raise SystemExit("error: --support sampled estimates the reverse KL only; use --kl reverse")
    tracking.require(args.report_to)      # a missing package: one line now, not after the model loads
    args.method = getattr(args, "method", "sdzero")
    args.variant = variant(args)
    args.run_name = args.run_name or ("toy" if args.toy else os.path.basename(args.model.rstrip("/")))
    return args


# The settings that make a run a variant of SD-Zero (the ablations a reader compares): a run names
# the ones it changed in its table, eval.json, metrics and report (``variant``).
VARIANT_KEYS = ("method", "task", "reward", "p_correct", "p_wrong", "kl", "mix", "support", "topk", "norm",
                "kl_temperature", "teacher_sync", "sync_on_plateau", "srt_loss", "revise_correct")


def variant(args) -> str:
    """The non-default settings of a run as flags, e.g. "--kl forward --teacher-sync 50"; "" = none.

    Defaults are the column the run started from (paper or toy) and the parser's; --mix shows only
    with --kl mixed, where it means something."""
    defaults = {name: toy_value if args.toy else paper for name, paper, toy_value, _ in KNOBS}
    defaults |= {a.dest: a.default for a in build_parser()._actions if a.dest not in defaults}
    defaults["method"] = "sdzero"
    changed = []
    for key in VARIANT_KEYS:
        value = getattr(args, key, defaults.get(key))
        if value == defaults.get(key) or (key == "mix" and args.kl != "mixed"):
            continue
        shown = repr(value) if isinstance(value, str) and " " in value else str(value)   # quote P_r's
        changed.append(shown if key == "method" else f"--{key.replace('_', '-')} {shown}")
    return " ".join(changed)


def divergence_name(args) -> str:
    """What the ``kl`` column of metrics.jsonl holds: "reverse" (eq. 4), "forward", or "mixed 0.5"."""
    return f"mixed {args.mix}" if args.kl == "mixed" else args.kl


def check_task(args) -> None:
    """--reward first (it may register the task), then --task must name a registered task."""
    try:
        if args.reward:
            reward.load_reward(args.reward, args.task)
        reward.get_task(args.task)
    except ValueError as e:
        hint = "" if args.reward else "; a new task needs --reward module:function"
        raise SystemExit(f"error: --task: {e}{hint}" if "unknown task" in str(e) else f"error: {e}") from None


# What a resumed run may not change: the checkpoint was trained with these, and its Phase-1 data,
# teacher and table would silently mix two experiments.
RESUME_KEYS = ("model", "task", "reward", "p_correct", "p_wrong", "kl", "mix", "support", "method")


def check_resume(args, run_dir: str) -> None:
    """--resume with a changed P_r, divergence, task or model stops here, in one line."""
    path = os.path.join(run_dir, "config.json")
    if not args.resume or not os.path.isfile(path):
        return
    saved = json.load(open(path))
    changed = [f"--{k.replace('_', '-')} {saved.get(k)!r} -> {getattr(args, k, None)!r}" for k in RESUME_KEYS
               if k in saved and saved.get(k) != getattr(args, k, None)]
    if changed:
        raise SystemExit(f"error: --resume would continue {run_dir} with other settings ({'; '.join(changed)}); "
                         "resume with the run's own settings, or start a new --run-name")


def parse(argv=None) -> argparse.Namespace:
    """train.py's arguments, resolved."""
    return resolve(build_parser().parse_args(argv))
