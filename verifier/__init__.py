"""The verifier's machinery. reward.py is the part a reader of the paper meets (extract the answer, compare,
run the tests) and states the rules; this package holds the hardening behind it. Imports go one way only:
reward imports verifier, never the reverse.

  limits.py    size limits, the time budget, and the two exceptions every stage raises
  cleanup.py   brace matching and the symmetric string clean-up of an answer (rule 2), text answers
  latex.py     tokenizer, the LaTeX -> sympy parser and the size guards it applies while building (rules 3, 4, 7)
  answer.py    the shape of an answer: tuple, interval, set, list, union, equation, matrix (rules 8, 9, 12, 13)
  compare.py   typed comparison: exact, then numeric, then at random points; the time budget (rules 5, 6, 14)
  pool.py      worker processes with a hard, kill-based timeout per item (math_reward_batch)
  sandbox.py   run_python: one program in a contained subprocess, and the probes that decide how
  cpp.py       C++ programs: g++ inside the same sandbox, then the binary under run_python's containment
  harness.py   how a program's output is judged: stdout comparison, the HumanEval-style test harness
  cases/       the verifier's test cases as data (JSONL, read by tests/ and bench/, never by a run):
               math_checker_cases.jsonl (one labelled case per rule, "R<N>"), math_fixtures.jsonl,
               code_fixtures.jsonl

"rule N" everywhere in this package is the numbered list in reward.py's module docstring.
"""
