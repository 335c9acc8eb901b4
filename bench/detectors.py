"""Time the built-in detectors on 10,000 synthetic stored-style items.

    python bench/detectors.py [--items 10000] [--seed 0]

Items look like what a small instruction model leaves in the store for a dictionary /
numbers / arithmetic suite: definitions of 10-150 words (some rambling, some looping to
the token limit), numbers written in words, arithmetic with and without working, a few
misspellings, paraphrase groups of three, and four re-sampled draws on one item in ten.
Every built-in detector except self_consistency (which exists to compare draws, and
is timed by its own callers) runs through `harness.score.scoring.run_detector`, as a run
does, with issue validation included. The misspelling figure includes loading the word
list (once per process).
"""

from __future__ import annotations

import argparse
import random
import time

from harness.components.plugin_manager import load_plugins
from harness.score.scoring import ResolvedDetector, run_detector
from harness.suite.config import DetectorConfig
from harness.types import Generation, Item, Sample

DETECTORS = ("repetition", "length", "grounding", "misspelling", "inconsistency")

WORDS = {
    "ephemeral": "lasting a very short time",
    "benevolent": "marked by or disposed to doing good",
    "frugal": "careful about spending money or using resources",
    "gregarious": "tending to associate with others of one's kind; sociable",
    "lucid": "clear to the understanding",
    "meticulous": "marked by extreme care in the treatment of details",
    "resilient": "tending to recover from or adjust easily to misfortune or change",
    "candid": "marked by honest, sincere expression",
    "arid": "excessively dry; having insufficient rainfall to support agriculture",
    "obsolete": "no longer in use or no longer useful",
    "tenacious": "persistent in seeking something valued or desired",
    "affluent": "having an abundant supply of money or possessions of value",
    "serendipity": "the faculty of finding valuable or agreeable things not sought for",
    "glacier": "a large body of ice moving slowly down a slope or valley",
    "insomnia": "prolonged and usually abnormal inability to obtain adequate sleep",
    "quixotic": "foolishly impractical especially in the pursuit of ideals",
}
EXTRA = [
    "For example, you might use it when you talk about your friends or your family.",
    "It is often used in books, newspapers and everyday conversation.",
    "The word comes from an old Latin word that meant something similar.",
    "Many people confuse it with other words that sound almost the same.",
    "A teacher might explain it to students by giving them a simple example from daily life.",
    "In science, the word is used in a slightly more technical way than in ordinary speech.",
    "It can describe a person, a place, an object or even an idea.",
    "Some writers use it to make their stories more vivid and interesting to read.",
]
TYPOS = {"receive": "recieve", "definitely": "definately", "separate": "seperate", "their": "thier"}
UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def in_words(n: int) -> str:
    if n < 20:
        return UNITS[n]
    if n < 100:
        return TENS[n // 10 - 2] + ("-" + UNITS[n % 10] if n % 10 else "")
    if n < 1000:
        rest = n % 100
        return UNITS[n // 100] + " hundred" + (" " + in_words(rest) if rest else "")
    rest = n % 1000
    return in_words(n // 1000) + " thousand" + (" " + in_words(rest) if rest else "")


def make_items(count: int, seed: int) -> list[Item]:
    rng = random.Random(seed)
    items: list[Item] = []
    while len(items) < count:
        kind = rng.random()
        group = f"g{len(items)}" if rng.random() < 0.3 else None
        # what the question is about, shared by the paraphrases of a group
        word, ref = rng.choice(list(WORDS.items()))
        a, b, n = rng.randint(2, 999), rng.randint(2, 999), rng.randint(1, 9999)
        for member in range(3 if group else 1):
            sid = f"s{len(items)}"
            finish = "eos"
            if kind < 0.45:
                instruction = (
                    f'Define the word "{word}".' if member == 0 else f'What does "{word}" mean?'
                )
                output = f'The word "{word}" means {ref}.'
                output += " " + " ".join(rng.sample(EXTRA, rng.choice([0, 0, 1, 1, 2, 3, 5])))
                if rng.random() < 0.1:  # a greedy loop to the token limit
                    output = " ".join([output.split(".")[0] + "."] * rng.randint(4, 10))
                    finish = "length"
                if rng.random() < 0.1:
                    output = output.replace("used", "usd").replace("their", "thier")
                reference = ref
            elif kind < 0.75:
                answer = a + b if rng.random() < 0.85 else a + b + rng.randint(1, 9)
                instruction = f"What is {a} plus {b}?" if member == 0 else f"Add {a} and {b}."
                output = rng.choice(
                    [
                        f"{a} plus {b} equals {answer}.",
                        f"The answer is {answer}.",
                        f"To add {a} and {b}, add the ones, then the tens, then the hundreds, "
                        f"carrying where needed. So {a} + {b} = {answer}.",
                    ]
                )
                reference = str(a + b)
            else:
                instruction = (
                    f"Write {n} in words." if member == 0 else f"How do you write {n} in words?"
                )
                words = in_words(n)
                output = rng.choice([words.capitalize() + ".", f"{n} in words is {words}."])
                reference = in_words(n)
            tokens = int(len(output.split()) * 1.3)
            draws: tuple[Generation, ...] = ()
            if rng.random() < 0.1:
                draws = tuple(
                    Generation(
                        sid,
                        rng.choice([output, reference, output.upper()]),
                        draw=d,
                        completion_tokens=tokens,
                    )
                    for d in range(1, 5)
                )
            sample = Sample(id=sid, instruction=instruction, references=(reference,), group=group)
            gen = Generation(sid, output, completion_tokens=tokens, finish_reason=finish)  # type: ignore[arg-type]
            items.append(Item(sample, gen, draws))
    return items[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()

    items = make_items(opts.items, opts.seed)
    words = sum(len(i.output.split()) for i in items) / len(items)
    print(f"{len(items)} items, {words:.0f} words per output on average")
    registry = load_plugins(autoload=False).registry
    total = total_cpu = 0.0
    print(f"{'detector':<15} {'wall':>7}   {'cpu':>7}   {'issues':>6}  {'flagged':>7}")
    for name in DETECTORS:
        reg = registry.get("detector", name)
        detector = reg.component
        resolved = ResolvedDetector(
            DetectorConfig(name=name), detector, detector.Args(), reg.plugin.name
        )
        start, start_cpu = time.perf_counter(), time.process_time()
        issues, errors = run_detector(resolved, items)
        # CPU time as well as wall time: on a shared machine the wall clock includes waiting
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        total += elapsed
        total_cpu += cpu
        if errors:
            raise SystemExit(f"{name}: {errors[0].message}")
        flagged = len({i.sample_id for i in issues if i.severity >= 0.5})
        print(f"{name:<15} {elapsed:7.2f} s {cpu:7.2f} s {len(issues):6d}  {flagged:7d}")
    print(f"{'total':<15} {total:7.2f} s {total_cpu:7.2f} s")


if __name__ == "__main__":
    main()
