"""Generators of the shipped task sets ("arithmetic", "facts").

``python -m edgert.tasks.generate --out-dir DIR --seed 0`` rewrites the shipped files
byte for byte. Each set draws from its own seeded ``random.Random``, so changing one
generator leaves the other file unchanged. The tasks are pitched at 135M–270M models:
easy enough that they sometimes answer right, which calibration needs as a signal.
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..fileio import atomic_write_bytes
from . import Task

# ---------------------------------------------------------------- arithmetic

NAMES = ["Tom", "Anna", "Ben", "Maria", "Sam", "Lily", "Jack", "Emma", "Leo", "Mia", "Noah", "Sara", "Omar", "Zoe", "Ravi", "Nina"]
OBJECTS = ["apples", "books", "pencils", "marbles", "cookies", "stamps", "toy cars", "balloons", "shells", "stickers", "oranges", "cards"]

ADD_TEMPLATES = [
    "{n} has {a} {p} and buys {b} more. How many {p} does {n} have now?",
    "{n} has {a} {p}. A friend gives {n} {b} more {p}. How many {p} does {n} have now?",
    "There are {a} {p} on a table. {n} puts {b} more {p} on the table. How many {p} are on the table now?",
    "{n} found {a} {p} in the morning and {b} {p} in the afternoon. How many {p} did {n} find in total?",
    "{n} has {a} small {p} and {b} big {p}. How many {p} does {n} have in all?",
]
SUB_TEMPLATES = [
    "{n} has {a} {p} and gives {b} to a friend. How many {p} does {n} have left?",
    "{n} had {a} {p} and lost {b} of them. How many {p} does {n} have now?",
    "There are {a} {p} in a box. {n} takes {b} {p} out of the box. How many {p} are left in the box?",
    "{n} has {a} {p}. {m} has {b} {p}. How many more {p} does {n} have than {m}?",
]
TWO_STEP_TEMPLATES = [
    "{n} has {a} {p}, buys {b} more, and then gives {c} to a friend. How many {p} does {n} have now?",
    "There are {a} {p} in a box. {n} adds {b} more and then takes out {c}. How many {p} are in the box now?",
    "{n} has {a} {p}, {m} has {b} {p}, and they find {c} more together. How many {p} do they have in total?",
]
MUL_TEMPLATES = [
    "{n} has {a} bags with {b} {p} in each bag. How many {p} does {n} have in total?",
    "There are {a} boxes and each box holds {b} {p}. How many {p} are there in all?",
    "{n} buys {a} packs of {p}. Each pack has {b} {p}. How many {p} does {n} buy?",
]


def _add(rng: random.Random) -> Tuple[str, int]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return rng.choice(ADD_TEMPLATES).format(n="{n}", m="{m}", p="{p}", a=a, b=b), a + b


def _sub(rng: random.Random) -> Tuple[str, int]:
    a = rng.randint(3, 15)
    b = rng.randint(1, min(a - 1, 9))
    return rng.choice(SUB_TEMPLATES).format(n="{n}", m="{m}", p="{p}", a=a, b=b), a - b


def _two_step(rng: random.Random) -> Tuple[str, int]:
    template = rng.choice(TWO_STEP_TEMPLATES)
    a, b = rng.randint(2, 9), rng.randint(1, 9)
    if template is TWO_STEP_TEMPLATES[2]:
        c = rng.randint(1, 9)
        return template.format(n="{n}", m="{m}", p="{p}", a=a, b=b, c=c), a + b + c
    c = rng.randint(1, a + b - 1)
    return template.format(n="{n}", m="{m}", p="{p}", a=a, b=b, c=c), a + b - c


def _mul(rng: random.Random) -> Tuple[str, int]:
    a, b = rng.randint(2, 5), rng.randint(2, 5)
    return rng.choice(MUL_TEMPLATES).format(n="{n}", m="{m}", p="{p}", a=a, b=b), a * b


#: kind -> (generator, number of shots, number of test tasks)
ARITHMETIC_MIX: Dict[str, Tuple[Callable, int, int]] = {
    "add": (_add, 1, 60),
    "sub": (_sub, 1, 45),
    "two-step": (_two_step, 1, 30),
    "mul": (_mul, 1, 15),
}


def generate_arithmetic(seed: int = 0) -> List[Task]:
    """Arithmetic word problems: one-step +/- with small numbers, some two-step, a few x."""
    rng = random.Random(f"arithmetic:{seed}")
    shots: List[Task] = []
    tests: List[Task] = []
    seen = set()
    for kind, (make, n_shots, n_test) in ARITHMETIC_MIX.items():
        made = 0
        while made < n_shots + n_test:
            template, answer = make(rng)
            names = rng.sample(NAMES, 2)
            prompt = template.format(n=names[0], m=names[1], p=rng.choice(OBJECTS))
            if prompt in seen:
                continue
            seen.add(prompt)
            split = "shot" if made < n_shots else "test"
            (shots if split == "shot" else tests).append(Task("", prompt, str(answer), "number", split=split))
            made += 1
    rng.shuffle(tests)
    return _numbered("arith", shots + tests)


# --------------------------------------------------------------------- facts
# Ordinary general knowledge; every row was checked by hand.

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("the United Kingdom", "London"), ("Egypt", "Cairo"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Mexico", "Mexico City"), ("India", "New Delhi"),
    ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Argentina", "Buenos Aires"), ("South Korea", "Seoul"),
    ("Thailand", "Bangkok"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Cuba", "Havana"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Turkey", "Ankara"), ("Hungary", "Budapest"), ("the United States", "Washington, D.C."),
    ("Belgium", "Brussels"), ("the Czech Republic", "Prague"), ("Chile", "Santiago"), ("Vietnam", "Hanoi"),
    ("Brazil", "Brasilia"), ("Iran", "Tehran"), ("Saudi Arabia", "Riyadh"), ("the Philippines", "Manila"),
    ("Nigeria", "Abuja"), ("Morocco", "Rabat"),
]
PLANETS = ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"]
PLANET_FACTS = [
    ("Which planet is the largest in our solar system?", "Jupiter"),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("Which planet is farthest from the Sun?", "Neptune"),
    ("Which planet do people live on?", "Earth"),
    ("Which planet is best known for its large, bright rings?", "Saturn"),
    ("Which planet is the smallest in our solar system?", "Mercury"),
    ("Which planet has the Great Red Spot?", "Jupiter"),
    ("Which planet is the third planet from the Sun?", "Earth"),
    ("Which planet is the hottest in our solar system?", "Venus"),
]
ANIMAL_CLASSES = ["mammal", "bird", "fish", "reptile"]
ANIMALS = [
    ("dog", "mammal"), ("cat", "mammal"), ("horse", "mammal"), ("cow", "mammal"), ("whale", "mammal"),
    ("dolphin", "mammal"), ("bat", "mammal"), ("elephant", "mammal"), ("lion", "mammal"), ("rabbit", "mammal"),
    ("kangaroo", "mammal"), ("mouse", "mammal"), ("eagle", "bird"), ("penguin", "bird"), ("owl", "bird"),
    ("parrot", "bird"), ("sparrow", "bird"), ("chicken", "bird"), ("duck", "bird"), ("ostrich", "bird"),
    ("pigeon", "bird"), ("salmon", "fish"), ("shark", "fish"), ("tuna", "fish"), ("goldfish", "fish"),
    ("trout", "fish"), ("cod", "fish"), ("snake", "reptile"), ("lizard", "reptile"), ("crocodile", "reptile"),
    ("turtle", "reptile"), ("tortoise", "reptile"), ("iguana", "reptile"), ("alligator", "reptile"),
]
COLORS = ["red", "green", "blue", "yellow", "white", "black", "orange", "brown", "purple", "pink"]
#: (thing, color, colors that would also be defensible and so never appear as distractors)
COLORED_THINGS = [
    ("a ripe banana", "yellow", ("green", "brown")),
    ("fresh grass", "green", ("yellow", "brown")),
    ("the sky on a clear day", "blue", ()),
    ("fresh snow", "white", ()),
    ("coal", "black", ()),
    ("a ripe tomato", "red", ("green", "yellow", "orange")),
    ("a carrot", "orange", ("purple", "yellow")),
    ("milk", "white", ()),
    ("a ripe lemon", "yellow", ("green",)),
    ("milk chocolate", "brown", ()),
    ("a ripe strawberry", "red", ()),
    ("a lime", "green", ("yellow",)),
    ("a crow", "black", ()),
    ("blood", "red", ()),
    ("a flamingo", "pink", ("orange", "red")),
    ("a polar bear's fur", "white", ("yellow",)),
]
# single-letter symbols that are also option letters (B, C) are left out on purpose
ELEMENTS = [
    ("hydrogen", "H"), ("helium", "He"), ("oxygen", "O"), ("nitrogen", "N"), ("sodium", "Na"),
    ("potassium", "K"), ("iron", "Fe"), ("copper", "Cu"), ("silver", "Ag"), ("gold", "Au"), ("zinc", "Zn"),
    ("lead", "Pb"), ("mercury", "Hg"), ("calcium", "Ca"), ("chlorine", "Cl"), ("sulfur", "S"), ("neon", "Ne"),
    ("magnesium", "Mg"), ("aluminum", "Al"), ("silicon", "Si"), ("tin", "Sn"), ("iodine", "I"), ("uranium", "U"),
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]
# every word appears once, so no distractor is another valid opposite
OPPOSITES = [
    ("hot", "cold"), ("fast", "slow"), ("happy", "sad"), ("open", "closed"), ("wet", "dry"), ("early", "late"),
    ("full", "empty"), ("loud", "quiet"), ("rich", "poor"), ("true", "false"), ("buy", "sell"), ("alive", "dead"),
    ("win", "lose"), ("push", "pull"), ("up", "down"), ("day", "night"), ("north", "south"), ("east", "west"),
    ("big", "small"), ("first", "last"),
]

#: a question: (prompt, answer, options to draw distractors from)
Question = Tuple[str, str, Sequence[str]]


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _capital_questions() -> List[Question]:
    capitals = [city for _, city in CAPITALS]
    return [(f"What is the capital of {country}?", city, capitals) for country, city in CAPITALS]


def _planet_questions() -> List[Question]:
    return [(prompt, planet, PLANETS) for prompt, planet in PLANET_FACTS]


def _animal_questions() -> List[Question]:
    return [(f"What kind of animal is {_article(name)}?", cls, ANIMAL_CLASSES) for name, cls in ANIMALS]


def _color_questions() -> List[Question]:
    return [
        (f"What color is {thing}?", color, [c for c in COLORS if c not in also])
        for thing, color, also in COLORED_THINGS
    ]


def _element_questions() -> List[Question]:
    symbols = [symbol for _, symbol in ELEMENTS]
    names = [name for name, _ in ELEMENTS]
    to_symbol = [(f"What is the chemical symbol for {name}?", symbol, symbols) for name, symbol in ELEMENTS]
    to_name = [(f"Which element has the chemical symbol {symbol}?", name, names) for name, symbol in ELEMENTS]
    return to_symbol + to_name


def _order_questions() -> List[Question]:
    questions: List[Question] = []
    for unit, items in (("day", DAYS), ("month", MONTHS)):
        for i, item in enumerate(items):
            after, before = items[(i + 1) % len(items)], items[i - 1]
            others = [x for x in items if x != item]
            questions.append((f"Which {unit} comes right after {item}?", after, others))
            questions.append((f"Which {unit} comes right before {item}?", before, others))
    questions.append(("What is the first month of the year?", "January", MONTHS))
    questions.append(("What is the last month of the year?", "December", MONTHS))
    return questions


def _opposite_questions() -> List[Question]:
    questions: List[Question] = []
    for a, b in OPPOSITES:
        others = [w for pair in OPPOSITES if pair != (a, b) for w in pair]
        questions.append((f"What is the opposite of {a}?", b, others))
        questions.append((f"What is the opposite of {b}?", a, others))
    return questions


#: category -> (question maker, number of shots, number of test tasks)
FACTS_MIX: Dict[str, Tuple[Callable[[], List[Question]], int, int]] = {
    "capital": (_capital_questions, 1, 30),
    "planet": (_planet_questions, 0, 8),
    "animal": (_animal_questions, 1, 28),
    "color": (_color_questions, 0, 14),
    "element": (_element_questions, 1, 26),
    "order": (_order_questions, 0, 20),
    "opposite": (_opposite_questions, 1, 24),
}


def _choice_task(rng: random.Random, question: Question, split: str, position: int) -> Task:
    prompt, answer, pool = question
    distractors = rng.sample([option for option in pool if option != answer], 3)
    options = distractors[:position] + [answer] + distractors[position:]
    return Task("", prompt, string.ascii_uppercase[position], "choice", choices=tuple(options), split=split)


def _balanced_positions(rng: random.Random, n: int) -> List[int]:
    """Answer positions in shuffled order, each letter equally often, so a model that
    always picks one letter scores chance (25%) exactly."""
    positions = [i % 4 for i in range(n)]
    rng.shuffle(positions)
    return positions


def generate_facts(seed: int = 0) -> List[Task]:
    """Four-option general-knowledge questions; distractors come from the same table."""
    rng = random.Random(f"facts:{seed}")
    shot_positions = _balanced_positions(rng, sum(n for _, n, _ in FACTS_MIX.values()))
    test_positions = _balanced_positions(rng, sum(n for _, _, n in FACTS_MIX.values()))
    shots: List[Task] = []
    tests: List[Task] = []
    for make, n_shot, n_test in FACTS_MIX.values():
        questions = rng.sample(make(), n_shot + n_test)
        for question in questions[:n_shot]:
            shots.append(_choice_task(rng, question, "shot", shot_positions[len(shots)]))
        for question in questions[n_shot:]:
            tests.append(_choice_task(rng, question, "test", test_positions[len(tests)]))
    rng.shuffle(tests)
    return _numbered("facts", shots + tests)


# --------------------------------------------------------------------- files

def _numbered(prefix: str, tasks: List[Task]) -> List[Task]:
    counts = {"shot": 0, "test": 0}
    numbered = []
    for task in tasks:
        counts[task.split] += 1
        numbered.append(Task(
            f"{prefix}-{task.split}-{counts[task.split]:03d}", task.prompt, task.answer, task.type,
            task.choices, task.pattern, task.split,
        ))
    return numbered


GENERATORS: Dict[str, Callable[[int], List[Task]]] = {"arithmetic": generate_arithmetic, "facts": generate_facts}


def to_jsonl(tasks: Sequence[Task]) -> bytes:
    """The JSONL bytes of a task list (one compact object per line, UTF-8)."""
    return "".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in tasks).encode("utf-8")


def write_task_sets(out_dir: Path, seed: int = 0) -> List[Path]:
    """Write every generated task set as ``<name>.jsonl`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, generate in GENERATORS.items():
        path = out_dir / f"{name}.jsonl"
        atomic_write_bytes(path, to_jsonl(generate(seed)))
        written.append(path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate edgert's shipped task sets.")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_task_sets(args.out_dir, args.seed)


if __name__ == "__main__":
    main()
