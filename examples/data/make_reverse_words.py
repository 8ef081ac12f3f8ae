"""Writes reverse_words.jsonl, the dataset task's example: reverse a string of 2-6 letters.

    python examples/data/make_reverse_words.py   # deterministic: the shipped file, again

Each row is {"prompt": "reverse abcd =", "answer": "dcba", "difficulty": 4}: letters, spaces and
``=`` only, so the embedded char model can read and write it.
"""

import json
import random
from pathlib import Path

PER_DIFFICULTY = 80


def rows(seed: int = 0):
    rng = random.Random(seed)
    for length in range(2, 7):
        seen = set()
        while len(seen) < PER_DIFFICULTY:
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length))
            if word not in seen:
                seen.add(word)
                yield {"prompt": f"reverse {word} =", "answer": word[::-1], "difficulty": length}


if __name__ == "__main__":
    out = Path(__file__).with_name("reverse_words.jsonl")
    out.write_text("".join(json.dumps(row) + "\n" for row in rows()))
    print(f"wrote {out}")
