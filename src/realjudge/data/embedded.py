"""The embedded default dataset: a procedurally generated judging task with exact gold scores.

Nothing is downloaded: every item is generated here, deterministically from ``seed``, and the
gold score is known exactly from how each response was built.

Two task families share one skill -- matching a short list of things named in the prompt
against the response and counting the matches -- but differ in surface form and rubric:

* ``checklist`` (splits ``train`` and ``test``): the instruction asks for a short message that
  names four required items (``"... Mention these four items: tent, rope, map and kettle."``).
  The response names some of them plus similar items that were *not* asked for (distractors
  from the same category), in shuffled order, with fillers. Gold = 1 + the number of required
  items the response names (5 = all four, 1 = none or off-task).
* ``facts`` (split ``ood``): the instruction is a short message (a meeting notice, a delivery
  notice, ...) with four key facts; the response is a summary that keeps some facts, replaces
  others with a wrong value of the same kind or omits them. A reference summary (score 5) is
  given. Gold = 1 + the number of facts kept accurately.

Every question appears with five responses, one per score, so each split is balanced. Train
and test draw from disjoint item categories, so no test question (and no test item word)
appears in train. ``reference_feedback`` is a short chain of thought that checks each required
item / fact in turn and states how many are present; it never states the score itself.

:func:`check_items` and :func:`read_checks` read a judge's own item-by-item checks back out of
a feedback written in that format, to compare them with the record's ``meta``;
:func:`read_count` reads the count it states.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from .records import JudgeRecord, Rubric

__all__ = [
    "CHECKLIST_RUBRIC",
    "DEFAULT_SIZES",
    "FACTS_RUBRIC",
    "SPLIT_CATEGORIES",
    "check_items",
    "check_truths",
    "generate_embedded",
    "mentions",
    "read_checks",
    "read_count",
]

DEFAULT_SIZES = {"train": 2000, "validation": 200, "test": 200, "ood": 200}
#: Questions of the train generator kept for the validation split, right after the default
#: train split's: a larger train split skips them, so validation never overlaps train (at
#: most 5 x this many validation records).
VALIDATION_QUESTIONS = 200

N_REQUIRED = 4

CHECKLIST_RUBRIC = Rubric(
    criterion="How many of the four required items does the response name?",
    descriptions={
        1: "none named, or off-task",
        2: "one named",
        3: "two named",
        4: "three named",
        5: "all four named",
    },
)

FACTS_RUBRIC = Rubric(
    criterion="How many of the four key facts of the message does the summary keep accurate?",
    descriptions={
        1: "none kept; each is wrong or missing",
        2: "one kept",
        3: "two kept",
        4: "three kept",
        5: "all four kept",
    },
)

# ---------------------------------------------------------------------------------------------
# checklist family (train / test)
# ---------------------------------------------------------------------------------------------

# category -> (task sentences, item words). Item words are unique across categories and
# none contains another as a whole word, so "is item X named" is a whole-word test.
_CATEGORY_TEXT: dict[str, tuple[tuple[str, ...], str]] = {
    "picnic": (
        (
            "Invite a friend to a picnic.",
            "Write a picnic packing note.",
        ),
        "apples blanket lemonade sandwiches grapes cheese crackers cookies juice plates cups "
        "strawberries bread",
    ),
    "camping": (
        (
            "Write a camping packing reminder.",
            "Message your group about camping gear.",
        ),
        "tent lantern rope stove matches compass flashlight kettle map whistle axe",
    ),
    "school": (
        (
            "Tell a parent what to buy for school.",
            "Remind a student what to bring to class.",
        ),
        "pencils ruler notebook glue scissors markers crayons folder calculator backpack pens "
        "paper",
    ),
    "beach": (
        (
            "Plan a beach day with a friend.",
            "List what to take to the beach.",
        ),
        "sunscreen towel umbrella goggles hat bucket shovel sunglasses ball chair shorts cooler",
    ),
    "baking": (
        (
            "Write a shopping note for baking a cake.",
            "Ask a roommate to buy baking supplies.",
        ),
        "flour sugar butter eggs yeast vanilla cinnamon salt milk honey raisins walnuts oats",
    ),
    "garden": (
        (
            "Plan what to plant in the garden.",
            "Tell a neighbour which seeds to buy.",
        ),
        "tomatoes carrots lettuce beans onions peppers potatoes spinach garlic cucumbers pumpkins",
    ),
    "office": (
        (
            "Ask IT for a new hire's equipment.",
            "List what a new hire needs at their desk.",
        ),
        "laptop charger monitor keyboard mouse headphones cables lamp printer phone webcam",
    ),
    "kitchen": (
        (
            "List the tools needed to cook dinner.",
            "Ask a housemate to set out kitchen tools.",
        ),
        "knife spoon whisk pan pot bowl tray blender fork mixer timer",
    ),
    "clothes": (
        (
            "Write a packing note for a winter trip.",
            "Remind a friend what to wear skiing.",
        ),
        "socks jacket shirt jeans boots coat belt shoes pants mittens sweater",
    ),
    "party": (
        (
            "Plan a birthday party.",
            "Tell a friend what to get for a party.",
        ),
        "balloons candles cake music snacks games presents soda pizza ribbons confetti",
    ),
    "travel": (
        (
            "Remind a friend what to take to the airport.",
            "Tell a travel partner what to take on the flight.",
        ),
        "passport tickets wallet keys camera glasses pillow magazine earplugs visa tablet",
    ),
    "flowers": (
        (
            "Order a bouquet from a florist.",
            "Choose flowers for a wedding table.",
        ),
        "roses lilies orchids tulips daisies peonies lavender irises carnations poppies violets",
    ),
    # --- held out for the in-domain test split ---
    "smoothie": (
        (
            "Write a shopping note for smoothies.",
            "Ask a friend to bring fruit for smoothies.",
        ),
        "bananas mango kiwi pineapple berries yogurt oranges peaches cherries lime mint ice",
    ),
    "tools": (
        (
            "Ask a neighbour to lend tools for the shed.",
            "List the tools needed to build a bookshelf.",
        ),
        "drill hammer nails screws saw wrench ladder paint tape gloves level",
    ),
    "band": (
        (
            "Ask a teacher for band instruments.",
            "List the instruments needed for a concert.",
        ),
        "guitar drums violin piano flute trumpet cello harp clarinet trombone banjo",
    ),
}
_CATEGORIES = {k: (tasks, tuple(words.split())) for k, (tasks, words) in _CATEGORY_TEXT.items()}

SPLIT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "train": (
        "picnic",
        "camping",
        "school",
        "beach",
        "baking",
        "garden",
        "office",
        "kitchen",
        "clothes",
        "party",
        "travel",
        "flowers",
    ),
    "test": ("smoothie", "tools", "band"),
}

_LIST_INTROS = (
    "Mention {items}.",
    "Name these items: {items}.",
    "Include {items}.",
    "Required items: {items}.",
    "It must mention {items}.",
)

_NAMES = ("Sam", "Alex", "Maria", "Tom", "Lena", "Jo", "Priya", "Ben", "Nora", "Omar")

_OPENERS = (
    "Hi {name}!",
    "Hey {name},",
    "Sure, here it is:",
    "Hello!",
    "",
    "Quick note:",
    "Dear {name},",
    "",
)

_ONE = (
    "Please bring the {a}.",
    "Don't forget the {a}.",
    "I will pack the {a}.",
    "We also need the {a}.",
    "Could you get the {a}?",
    "The {a} is on my list.",
)
_MANY = (
    "We need {a}.",
    "Please bring {a}.",
    "I have {a} ready.",
    "Remember {a}.",
    "Could you pick up {a}?",
    "My list has {a}.",
)

_FILLERS = (
    "See you soon!",
    "It will be fun.",
    "Let me know if that works.",
    "Thanks a lot!",
    "Call me if anything changes.",
    "I can't wait.",
    "Have a nice day.",
    "Tell me if I forgot something.",
    "That should be enough.",
    "Talk later.",
)

_OFF_TASK = (
    "I am not sure what you mean. Did you watch the game last night? It was great.",
    "Sorry, I would rather not plan this. Anyway, the weather is lovely today.",
    "Here is a fun fact: octopuses have three hearts. Have a nice day.",
    "I think we should talk about this another time. I am very busy this week.",
    "My cousin is visiting, so we will watch a movie tonight. See you soon!",
)


def _join(words: Sequence[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def mentions(text: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``text`` as whole words (case-insensitive)."""
    return re.search(r"(?<![\w-])" + re.escape(phrase) + r"(?![\w-])", text, re.I) is not None


def _check_feedback(required: Sequence[str], present: set[str], off_task: bool) -> str:
    checks = "; ".join(f"{w}: {'named' if w in present else 'missing'}" for w in required)
    n = sum(w in present for w in required)
    lead = "The response is off-task. " if off_task else ""
    return (
        f"{lead}Required items: {_join(list(required))}. Checking each: {checks}. "
        f"So {n} of the 4 required items {'is' if n == 1 else 'are'} named."
    )


def _checklist_response(
    rng: random.Random, category: str, required: Sequence[str], n_present: int
) -> tuple[str, dict]:
    items = _CATEGORIES[category][1]
    present = rng.sample(list(required), n_present)
    pool = [w for w in items if w not in required]
    off_task = n_present == 0 and rng.random() < 0.2
    if off_task:
        text = rng.choice(_OFF_TASK)
        return text, {"present": [], "distractors": [], "off_task": True}
    # Always four or five item mentions, whatever the score: length says little about gold.
    n_distractors = N_REQUIRED - n_present + (1 if rng.random() < 0.4 else 0)
    distractors = rng.sample(pool, n_distractors)
    mentioned = present + distractors
    rng.shuffle(mentioned)
    sentences: list[str] = []
    i = 0
    while i < len(mentioned):
        size = rng.choice((1, 2, 2, 3))
        chunk = mentioned[i : i + size]
        i += size
        if len(chunk) == 1:
            sentences.append(rng.choice(_ONE).format(a=chunk[0]))
        else:
            sentences.append(rng.choice(_MANY).format(a=_join(chunk)))
    for _ in range(rng.choice((0, 1, 1, 2))):
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(_FILLERS))
    opener = rng.choice(_OPENERS).format(name=rng.choice(_NAMES))
    text = " ".join(s for s in [opener, *sentences] if s)
    ordered_present = [w for w in required if w in present]
    return text, {"present": ordered_present, "distractors": distractors, "off_task": False}


def _checklist_question(rng: random.Random, category: str) -> tuple[str, list[str]]:
    tasks, items = _CATEGORIES[category]
    required = rng.sample(list(items), N_REQUIRED)
    instruction = rng.choice(tasks) + " " + rng.choice(_LIST_INTROS).format(items=_join(required))
    return instruction, required


# ---------------------------------------------------------------------------------------------
# facts family (ood)
# ---------------------------------------------------------------------------------------------

_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_TIMES = ("9:30 am", "10:15 am", "11:45 am", "1:30 pm", "2:15 pm", "4:45 pm", "6:20 pm")

# kind -> (source template, {slot: values}, {slot: summary clauses}). The first clause of each
# slot states the value, the second says it too in other words, the third drops it vaguely.
_MESSAGES: dict[str, tuple[str, dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]] = {
    "meeting": (
        "Hi all, the team meeting moves to {day} at {time} in room {room}. "
        "Please bring the {item}.",
        {
            "day": _DAYS,
            "time": _TIMES,
            "room": ("114", "207", "318", "402", "125", "233"),
            "item": ("slides", "budget sheet", "draft report", "contracts", "sales figures"),
        },
        {
            "day": ("The meeting is now on {v}.", "It moves to {v}.", "It moves to a new day."),
            "time": (
                "It starts at {v}.",
                "The start time is {v}.",
                "The exact start time will be announced later.",
            ),
            "room": ("It is in room {v}.", "Go to room {v}.", "The room number is not clear yet."),
            "item": ("Bring the {v}.", "Everyone should bring the {v}.", "Bring what you need."),
        },
    ),
    "delivery": (
        "Hello, your order of {qty} {product} ships today and arrives on {day}. "
        "The driver will leave it at the {place}.",
        {
            "qty": ("two", "three", "four", "five", "six"),
            "product": ("chairs", "lamps", "rugs", "shelves", "mirrors", "stools"),
            "day": _DAYS,
            "place": ("front door", "garage", "back porch", "mail room", "side gate"),
        },
        {
            "qty": ("The order has {v} pieces.", "There are {v} pieces.", "It is a big order."),
            "product": ("They are {v}.", "The order is for {v}.", "It is some furniture."),
            "day": ("It arrives on {v}.", "Delivery is on {v}.", "It arrives this week."),
            "place": (
                "It will be left at the {v}.",
                "Look for it at the {v}.",
                "It will be left somewhere outside.",
            ),
        },
    ),
    "clinic": (
        "Dr. {name} can see you on {day} at {time}. The clinic is on {street} Street. "
        "Please bring your {doc}.",
        {
            "day": _DAYS,
            "time": _TIMES,
            "street": ("Oak", "Elm", "Pine", "Maple", "Cedar", "Birch"),
            "doc": ("insurance card", "passport", "old x-rays", "medication list", "test results"),
        },
        {
            "day": ("The visit is on {v}.", "The appointment is on {v}.", "A visit is booked."),
            "time": (
                "It is at {v}.",
                "Arrive for {v}.",
                "The exact start time will be announced later.",
            ),
            "street": (
                "The clinic is on {v} Street.",
                "Go to {v} Street.",
                "The address is not clear.",
            ),
            "doc": ("Bring your {v}.", "You need your {v}.", "Bring your papers with you."),
        },
    ),
    "bus": (
        "The bus to {city} leaves at {time} from platform {platform}. "
        "A ticket costs {price} dollars.",
        {
            "city": ("Lyon", "Porto", "Graz", "Turin", "Ghent", "Bern", "Split"),
            "time": _TIMES,
            "platform": ("3", "5", "7", "8", "12", "14"),
            "price": ("22", "27", "34", "38", "41", "56"),
        },
        {
            "city": ("The bus goes to {v}.", "It is the bus to {v}.", "There is a bus trip soon."),
            "time": (
                "It leaves at {v}.",
                "Departure is at {v}.",
                "The exact start time will be announced later.",
            ),
            "platform": (
                "Use platform {v}.",
                "It leaves from platform {v}.",
                "Check the platform on the board.",
            ),
            "price": (
                "A ticket is {v} dollars.",
                "Tickets cost {v} dollars.",
                "The ticket price is not stated.",
            ),
        },
    ),
    "party": (
        "{name}'s birthday party is on {day} at the {venue}. It starts at {time}, "
        "and the theme is {theme}.",
        {
            "day": _DAYS,
            "venue": ("park", "bowling alley", "beach house", "community hall", "rooftop"),
            "time": _TIMES,
            "theme": ("pirates", "outer space", "the eighties", "jungle", "superheroes"),
        },
        {
            "day": ("The party is on {v}.", "It is on {v}.", "There is a party soon."),
            "venue": ("It is at the {v}.", "The place is the {v}.", "The place is a surprise."),
            "time": (
                "It starts at {v}.",
                "Come at {v}.",
                "The exact start time will be announced later.",
            ),
            "theme": ("The theme is {v}.", "Dress for {v}.", "There is a theme."),
        },
    ),
}

_SUMMARY_INSTRUCTIONS = (
    "Summarize this message in a few short sentences.",
    "Write a brief summary of the message below.",
    "Sum up the key points of this message.",
)
_SUMMARY_OPENERS = ("", "Summary:", "In short:", "Key points:", "Here is the gist.")
_SUMMARY_FILLERS = ("That is all.", "Nothing else changes.", "Details may follow.")


def _facts_question(rng: random.Random, kind: str) -> tuple[str, dict[str, str]]:
    template, pools, _ = _MESSAGES[kind]
    facts = {slot: rng.choice(values) for slot, values in pools.items()}
    message = template.format(name=rng.choice(_NAMES), **facts)
    return f"{rng.choice(_SUMMARY_INSTRUCTIONS)}\nMessage: {message}", facts


def _facts_response(
    rng: random.Random, kind: str, facts: dict[str, str], n_kept: int
) -> tuple[str, dict]:
    _, pools, clauses = _MESSAGES[kind]
    slots = list(pools)
    kept = set(rng.sample(slots, n_kept))
    status: dict[str, str] = {}
    values: dict[str, str] = {}
    parts: list[str] = []
    for slot in slots:
        if slot in kept:
            status[slot] = "kept"
            values[slot] = facts[slot]
        elif rng.random() < 0.7:
            status[slot] = "changed"
            values[slot] = rng.choice([v for v in pools[slot] if v != facts[slot]])
        else:  # dropped: a vague clause of about the same length keeps length uninformative
            status[slot] = "missing"
            parts.append(clauses[slot][2])
            continue
        parts.append(rng.choice(clauses[slot][:2]).format(v=values[slot]))
    if rng.random() < 0.5:  # keep the opening clause, shuffle the rest
        rest = parts[1:]
        rng.shuffle(rest)
        parts = [parts[0], *rest]
    if rng.random() < 0.3:
        parts.append(rng.choice(_SUMMARY_FILLERS))
    text = " ".join(s for s in [rng.choice(_SUMMARY_OPENERS), *parts] if s)
    return text, {"status": status, "values": values}


_FACT_LABELS = {
    "room": "room {v}",
    "platform": "platform {v}",
    "price": "{v} dollars",
    "street": "{v} Street",
    "qty": "{v} pieces",
}


def _fact(slot: str, value: str) -> str:
    return _FACT_LABELS.get(slot, "{v}").format(v=value)


def _facts_feedback(facts: dict[str, str], status: dict[str, str], values: dict[str, str]) -> str:
    checks = []
    for slot, v in facts.items():
        if status[slot] == "kept":
            checks.append(f"{_fact(slot, v)}: kept")
        elif status[slot] == "changed":
            checks.append(f"{_fact(slot, v)}: changed to {_fact(slot, values[slot])}")
        else:
            checks.append(f"{_fact(slot, v)}: missing")
    n = sum(s == "kept" for s in status.values())
    key = [_fact(slot, v) for slot, v in facts.items()]
    return (
        f"Key facts in the message: {_join(key)}. "
        f"Checking each: {'; '.join(checks)}. So {n} of the 4 key facts {'is' if n == 1 else 'are'} kept."
    )


# ---------------------------------------------------------------------------------------------
# reading a judge's item-by-item checks back out of its feedback
# ---------------------------------------------------------------------------------------------

#: Verdict words of the feedback format: an item is ``named`` / ``missing`` (checklist), a
#: fact ``kept`` / ``changed to ...`` / ``missing`` (facts).
_SATISFIED = ("named", "kept")
_NOT_SATISFIED = ("missing", "changed")
_VERDICT = "|".join(_SATISFIED + _NOT_SATISFIED)


def check_items(meta: Any) -> dict[str, bool] | None:
    """What a feedback should check for a record, from its ``meta``: each item (checklist)
    or fact (facts, labelled as the reference feedback writes it: ``room 207``, ``Friday``)
    -> whether the response satisfies it. ``None`` when ``meta`` is not an embedded record's
    or lacks a field."""
    if not isinstance(meta, dict):
        return None
    family = meta.get("family")
    if family == "checklist":
        required, present = meta.get("required"), meta.get("present")
        if not isinstance(required, list) or not isinstance(present, list) or not required:
            return None
        return {str(w): w in present for w in required}
    if family == "facts":
        facts, status = meta.get("facts"), meta.get("status")
        if not isinstance(facts, dict) or not isinstance(status, dict) or not facts:
            return None
        return {_fact(str(k), str(v)): status.get(k) == "kept" for k, v in facts.items()}
    return None


def check_truths(records: Sequence[JudgeRecord]) -> dict[str, dict[str, bool]]:
    """:func:`check_items` of every record whose ``meta`` has them, by record id."""
    return {r.id: t for r in records if (t := check_items(r.meta)) is not None}


def read_checks(feedback: str, items: Sequence[str]) -> dict[str, bool]:
    """The judge's verdict on each of ``items`` as its ``feedback`` states it, in the format of
    the reference feedback (``tent: named``, ``rope: missing``, ``room 207: changed to room
    318``): item -> ``True`` when it says named / kept. Items with no such check are left out;
    when an item is checked twice the first check counts. Matching is case-insensitive and
    on whole words, so ``1:30 pm`` is not read inside ``11:30 pm``."""
    out: dict[str, bool] = {}
    text = str(feedback or "")
    for item in items:
        pattern = r"(?<![\w-])" + re.escape(item) + r"\s*:\s*(" + _VERDICT + r")(?![\w-])"
        m = re.search(pattern, text, re.I)
        if m:
            out[item] = m.group(1).lower() in _SATISFIED
    return out


_COUNT = re.compile(r"\bSo (\d+) of the (\d+)\b")


def read_count(feedback: str) -> int | None:
    """The count a feedback states in the reference format's last sentence (``So 3 of the 4
    required items are named.``, ``So 1 of the 4 key facts is kept.``): the first ``N`` of
    the last ``So N of the M``, or ``None`` when it states none. What it counted is not
    checked, so a judge that writes the checklist pattern out of domain is read too."""
    found = _COUNT.findall(str(feedback or ""))
    return int(found[-1][0]) if found else None


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def _balanced_take(records: list[JudgeRecord], n: int, rng: random.Random) -> list[JudgeRecord]:
    """Shuffle, then keep ``n`` records with score counts differing by at most one."""
    rng.shuffle(records)
    by_score: dict[int, list[JudgeRecord]] = {k: [] for k in range(1, 6)}
    for r in records:
        by_score[int(r.gold or 0)].append(r)
    interleaved = [
        by_score[k][i]
        for i in range(max(len(v) for v in by_score.values()))
        for k in range(1, 6)
        if i < len(by_score[k])
    ]
    out = interleaved[:n]
    rng.shuffle(out)
    return out


def generate_embedded(
    split: str = "train", n: int | None = None, seed: int = 0
) -> list[JudgeRecord]:
    """Generate ``n`` records of the embedded judging task for ``split``.

    ``split`` is ``"train"`` or ``"test"`` (the checklist family; disjoint item categories),
    ``"validation"`` (held out from the train generator: the questions right after the
    default train split's, with train's categories -- for tuning, never the test split; a train
    split larger than the default skips them, :data:`VALIDATION_QUESTIONS`) or
    ``"ood"`` (the facts family). ``n`` defaults to :data:`DEFAULT_SIZES`. The output depends
    only on ``(split, n, seed)``; score counts 1..5 differ by at most one (equal when ``n`` is
    a multiple of 5). Records of one question share ``group_id``.
    """
    if split not in DEFAULT_SIZES:
        raise ValueError(f"split must be one of {sorted(DEFAULT_SIZES)}, got {split!r}")
    n = DEFAULT_SIZES[split] if n is None else int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    train_questions = -(-DEFAULT_SIZES["train"] // 5)
    source, skip, reserve = split, 0, 0
    if split == "validation":
        # held out from the train generator: the questions that come after the default train
        # split's (the generator draws question by question; train's own records are unchanged)
        source, skip = "train", train_questions
        if -(-n // 5) > VALIDATION_QUESTIONS:
            raise ValueError(
                f"the validation split has at most {5 * VALIDATION_QUESTIONS} records, got {n}"
            )
    rng = random.Random(f"realjudge-embedded/{source}/{seed}")
    n_questions = skip + -(-n // 5)
    if split == "train" and n_questions > train_questions:
        # past the default size, train skips the questions kept for validation
        reserve = VALIDATION_QUESTIONS
        n_questions += reserve
    records: list[JudgeRecord] = []
    seen: set[str] = set()
    q = 0
    while q < n_questions:
        if split == "ood":
            kind = rng.choice(list(_MESSAGES))
            instruction, facts = _facts_question(rng, kind)
        else:
            kind = rng.choice(SPLIT_CATEGORIES[source])
            instruction, required = _checklist_question(rng, kind)
        if instruction in seen:
            continue
        seen.add(instruction)
        group_id = f"emb-{source}-{seed}-q{q:05d}"
        for score in range(1, 6):
            rid = f"{group_id}-s{score}"
            if split == "ood":
                response, info = _facts_response(rng, kind, facts, score - 1)
                feedback = _facts_feedback(facts, info["status"], info["values"])
                meta = {"family": "facts", "kind": kind, "facts": dict(facts), **info}
                records.append(
                    JudgeRecord(
                        id=rid,
                        instruction=instruction,
                        response=response,
                        gold=float(score),
                        rubric=FACTS_RUBRIC,
                        reference_answer=None,
                        reference_feedback=feedback,
                        group_id=group_id,
                        scale=(1, 5),
                        meta=meta,
                    )
                )
            else:
                response, info = _checklist_response(rng, kind, required, score - 1)
                feedback = _check_feedback(required, set(info["present"]), info["off_task"])
                meta = {"family": "checklist", "category": kind, "required": list(required), **info}
                records.append(
                    JudgeRecord(
                        id=rid,
                        instruction=instruction,
                        response=response,
                        gold=float(score),
                        rubric=CHECKLIST_RUBRIC,
                        reference_answer=None,
                        reference_feedback=feedback,
                        group_id=group_id,
                        scale=(1, 5),
                        meta=meta,
                    )
                )
        q += 1
    if reserve:
        del records[train_questions * 5 : (train_questions + reserve) * 5]
    if skip:
        records = records[skip * 5 :]
        rng = random.Random(f"realjudge-embedded/{split}/{seed}")
    return _balanced_take(records, n, rng)
