"""The `general` suite: everyday instructions, held out from all fine-tuning.

A regression suite against catastrophic forgetting: after fine-tuning on dictionary
definitions or number spelling, a model should still answer simple questions, inflect
words and rewrite sentences as well as before. No pool: nothing here is ever trained
on. Written by hand; every reference was checked, and where more than one answer is
right (synonyms, some opposites) the row lists them all (chrF scores the best match;
perplexity uses the first).
"""

from __future__ import annotations

from harness.suites._files import drop_empty, jsonl_bytes

FACT = "Answer the question in one short sentence."
ONE_WORD = "Answer with one word."
WORD_OR_NUMBER = "Answer with a single word or number."
PLURAL = "Write the plural form of the word."
PAST = "Write the past tense of the verb."
OPPOSITE = "Write the opposite of the word."
SYNONYM = "Give a synonym for the word."
SENTIMENT = "Is the sentiment of this review positive or negative? Answer with one word."
FILL = "Fill in the blank with one word."

# (tag, instruction, input, reference or references)
ITEMS: tuple[tuple[str, str, str, str | tuple[str, ...]], ...] = (
    # Short factual questions.
    ("fact", FACT, "What is the capital of France?", "The capital of France is Paris."),
    ("fact", FACT, "What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("fact", FACT, "What is the capital of Italy?", "The capital of Italy is Rome."),
    ("fact", FACT, "How many days are there in a week?", "There are seven days in a week."),
    ("fact", FACT, "How many months are there in a year?", "There are twelve months in a year."),
    (
        "fact",
        FACT,
        "What is the largest planet in our solar system?",
        "Jupiter is the largest planet in our solar system.",
    ),
    ("fact", FACT, "What do bees make?", "Bees make honey."),
    (
        "fact",
        FACT,
        "At what temperature in degrees Celsius does water boil at sea level?",
        "Water boils at 100 degrees Celsius at sea level.",
    ),
    (
        "fact",
        FACT,
        "At what temperature in degrees Celsius does water freeze?",
        "Water freezes at 0 degrees Celsius.",
    ),
    (
        "fact",
        FACT,
        "Which animal is known as the king of the jungle?",
        "The lion is known as the king of the jungle.",
    ),
    ("fact", FACT, "What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("fact", FACT, "How many legs does a spider have?", "A spider has eight legs."),
    (
        "fact",
        FACT,
        "Which gas do plants take in from the air to make food?",
        "Plants take in carbon dioxide from the air.",
    ),
    (
        "fact",
        FACT,
        "Which planet is closest to the Sun?",
        "Mercury is the planet closest to the Sun.",
    ),
    (
        "fact",
        FACT,
        "Who wrote the play Romeo and Juliet?",
        "William Shakespeare wrote Romeo and Juliet.",
    ),
    (
        "fact",
        FACT,
        "What is the largest ocean on Earth?",
        "The Pacific Ocean is the largest ocean on Earth.",
    ),
    ("fact", FACT, "In which direction does the sun rise?", "The sun rises in the east."),
    ("fact", FACT, "How many hours are there in a day?", "There are 24 hours in a day."),
    (
        "fact",
        FACT,
        "What is the tallest animal in the world?",
        "The giraffe is the tallest animal in the world.",
    ),
    (
        "fact",
        FACT,
        "Which organ pumps blood around the body?",
        "The heart pumps blood around the body.",
    ),
    (
        "fact",
        FACT,
        "What is a thermometer used for?",
        "A thermometer is used to measure temperature.",
    ),
    (
        "fact",
        FACT,
        "What is the chemical formula of water?",
        "The chemical formula of water is H2O.",
    ),
    # Plurals.
    ("plural", PLURAL, "mouse", "mice"),
    ("plural", PLURAL, "child", "children"),
    ("plural", PLURAL, "box", "boxes"),
    ("plural", PLURAL, "city", "cities"),
    ("plural", PLURAL, "knife", "knives"),
    ("plural", PLURAL, "tooth", "teeth"),
    ("plural", PLURAL, "woman", "women"),
    ("plural", PLURAL, "sheep", "sheep"),
    ("plural", PLURAL, "leaf", "leaves"),
    ("plural", PLURAL, "bus", "buses"),
    # Past tense.
    ("past-tense", PAST, "go", "went"),
    ("past-tense", PAST, "eat", "ate"),
    ("past-tense", PAST, "run", "ran"),
    ("past-tense", PAST, "buy", "bought"),
    ("past-tense", PAST, "write", "wrote"),
    ("past-tense", PAST, "swim", "swam"),
    ("past-tense", PAST, "think", "thought"),
    ("past-tense", PAST, "play", "played"),
    ("past-tense", PAST, "see", "saw"),
    ("past-tense", PAST, "teach", "taught"),
    # Opposites.
    ("opposite", OPPOSITE, "hot", "cold"),
    ("opposite", OPPOSITE, "up", "down"),
    ("opposite", OPPOSITE, "happy", ("sad", "unhappy")),
    ("opposite", OPPOSITE, "early", "late"),
    ("opposite", OPPOSITE, "full", "empty"),
    ("opposite", OPPOSITE, "fast", "slow"),
    ("opposite", OPPOSITE, "win", "lose"),
    ("opposite", OPPOSITE, "inside", "outside"),
    ("opposite", OPPOSITE, "buy", "sell"),
    ("opposite", OPPOSITE, "remember", "forget"),
    # Synonyms.
    ("synonym", SYNONYM, "big", ("large", "huge")),
    ("synonym", SYNONYM, "quick", ("fast", "rapid", "speedy")),
    ("synonym", SYNONYM, "begin", ("start", "commence")),
    ("synonym", SYNONYM, "small", ("little", "tiny")),
    ("synonym", SYNONYM, "angry", ("mad", "furious", "annoyed")),
    # Rewriting sentences.
    (
        "rewrite",
        "Rewrite the sentence in the past tense.",
        "She walks to school every day.",
        "She walked to school every day.",
    ),
    (
        "rewrite",
        "Rewrite the sentence in the past tense.",
        "They play football in the park.",
        "They played football in the park.",
    ),
    ("rewrite", "Rewrite the sentence in the past tense.", "I eat an apple.", "I ate an apple."),
    (
        "rewrite",
        "Rewrite the sentence in the future tense.",
        "We visit our grandmother.",
        "We will visit our grandmother.",
    ),
    (
        "rewrite",
        "Rewrite the sentence as a question.",
        "You are coming to the party.",
        "Are you coming to the party?",
    ),
    ("rewrite", "Rewrite the sentence as a question.", "She can swim.", "Can she swim?"),
    (
        "rewrite",
        "Correct the spelling mistakes in the sentence.",
        "I recieved a leter from my freind.",
        "I received a letter from my friend.",
    ),
    (
        "rewrite",
        "Correct the grammar of the sentence.",
        "He don't like apples.",
        ("He doesn't like apples.", "He does not like apples."),
    ),
    (
        "rewrite",
        "Correct the grammar of the sentence.",
        "She have two brothers.",
        "She has two brothers.",
    ),
    (
        "rewrite",
        "Rewrite the sentence in the plural.",
        "The cat is sleeping.",
        "The cats are sleeping.",
    ),
    (
        "rewrite",
        "Rewrite the sentence in the negative.",
        "I like coffee.",
        ("I do not like coffee.", "I don't like coffee."),
    ),
    (
        "rewrite",
        "Rewrite the sentence in the active voice.",
        "The ball was kicked by the boy.",
        "The boy kicked the ball.",
    ),
    (
        "rewrite",
        "Rewrite the sentence with correct capital letters.",
        "my name is anna and i live in london.",
        "My name is Anna and I live in London.",
    ),
    # Simple reasoning.
    (
        "reasoning",
        WORD_OR_NUMBER,
        "Tom is taller than Sam. Sam is taller than Ben. Who is the shortest?",
        "Ben",
    ),
    ("reasoning", WORD_OR_NUMBER, "Lucy is older than Mark. Who is younger?", "Mark"),
    ("reasoning", WORD_OR_NUMBER, "If today is Monday, what day will it be tomorrow?", "Tuesday"),
    ("reasoning", WORD_OR_NUMBER, "If today is Friday, what day was it yesterday?", "Thursday"),
    ("reasoning", WORD_OR_NUMBER, "What month comes after March?", "April"),
    ("reasoning", WORD_OR_NUMBER, "What comes next in the sequence 2, 4, 6, 8?", "10"),
    ("reasoning", WORD_OR_NUMBER, "What comes next in the sequence 5, 10, 15, 20?", "25"),
    (
        "reasoning",
        WORD_OR_NUMBER,
        "Anna has 3 apples and eats one. How many apples does she have left?",
        "2",
    ),
    (
        "reasoning",
        WORD_OR_NUMBER,
        "A farmer has 5 cows and buys 2 more. How many cows does he have?",
        "7",
    ),
    ("reasoning", WORD_OR_NUMBER, "Which number is larger, 47 or 74?", "74"),
    ("reasoning", WORD_OR_NUMBER, "How many sides does a triangle have?", "3"),
    ("reasoning", WORD_OR_NUMBER, "How many minutes are there in an hour?", "60"),
    ("reasoning", WORD_OR_NUMBER, "Which letter comes after C in the alphabet?", "D"),
    (
        "reasoning",
        WORD_OR_NUMBER,
        "A train leaves at 3 o'clock and the trip takes two hours. At what hour does it arrive?",
        ("5 o'clock", "5"),
    ),
    # Sorting things into kinds.
    ("classify", ONE_WORD, "Which of these is a fruit: carrot, apple, potato?", "apple"),
    ("classify", ONE_WORD, "Which of these is an animal: table, dog, chair?", "dog"),
    (
        "classify",
        ONE_WORD,
        "Which word is the odd one out: apple, banana, carrot, cherry?",
        "carrot",
    ),
    ("classify", ONE_WORD, "Which of these is a color: green, seven, window?", "green"),
    ("classify", ONE_WORD, "Is a whale a fish or a mammal?", "mammal"),
    ("classify", ONE_WORD, "Is ice a solid, a liquid or a gas?", "solid"),
    ("classify", ONE_WORD, "Which of these is a vegetable: broccoli, chicken, bread?", "broccoli"),
    ("sentiment", SENTIMENT, "The food was delicious and the staff were friendly.", "Positive"),
    ("sentiment", SENTIMENT, "The film was boring and far too long.", "Negative"),
    ("sentiment", SENTIMENT, "I love this phone, the battery lasts all day.", "Positive"),
    ("sentiment", SENTIMENT, "The hotel room was dirty and noisy.", "Negative"),
    # Translation of common words.
    ("translation", "Translate the word into French.", "hello", "bonjour"),
    ("translation", "Translate the phrase into French.", "thank you", "merci"),
    ("translation", "Translate the word into Spanish.", "water", "agua"),
    ("translation", "Translate the phrase into Spanish.", "good night", "buenas noches"),
    ("translation", "Translate the word into German.", "dog", "Hund"),
    # Ordering and filling in.
    (
        "ordering",
        "Put the words in alphabetical order.",
        "pear, apple, orange",
        "apple, orange, pear",
    ),
    ("ordering", "Sort the numbers from smallest to largest.", "9, 2, 5, 1", "1, 2, 5, 9"),
    ("fill-in", FILL, "A week has seven ____.", "days"),
    ("fill-in", FILL, "Fish live in ____.", "water"),
    ("fill-in", FILL, "We use an umbrella when it ____.", "rains"),
)


def build() -> dict[str, bytes]:
    """Relative path (under suites/) -> file content (uncompressed; see build.encode)."""
    counters: dict[str, int] = {}
    rows = []
    for tag, instruction, text, reference in ITEMS:
        counters[tag] = counters.get(tag, 0) + 1
        several = isinstance(reference, tuple)
        rows.append(
            drop_empty(
                {
                    "id": f"{tag}-{counters[tag]:02d}",
                    # The suite's default instruction is FACT; rows only name their own.
                    "instruction": "" if instruction == FACT else instruction,
                    "input": text,
                    "reference": None if several else reference,
                    "references": list(reference) if several else None,
                    "tags": [tag],
                }
            )
        )
    return {"general/eval.jsonl": jsonl_bytes(rows)}
