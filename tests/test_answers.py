"""Answer extraction on realistic (often messy) small-model outputs, normalization, scoring."""

import pytest

from edgert.answers import ANSWER_TYPES, extract_answer, is_correct, normalize_answer
from edgert.errors import UsageError

CAPITALS = ["London", "Paris", "Rome", "Berlin"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("7", "7"),
        (" 9", "9"),
        ("The answer is 7 apples.", "7"),
        ("3 + 4 = 7", "7"),
        ("Tom has 3 apples and buys 4 more, so 3 + 4 = 7 apples.", "7"),
        ("Answer: 12", "12"),
        ("answer: $12.", "12"),
        ("The total is $1,234.", "1234"),
        ("The answer is -3.", "-3"),
        ("10 - 3", "3"),  # a subtraction, not a negative three
        ("It costs 4.0 dollars", "4"),
        ("She has 0.50 left", "0.5"),
        ("The answer is twelve.", "12"),
        ("Tom has seven apples now.", "7"),
        ("\\boxed{42}", "42"),
        ("First 5 + 3 = 8.\n#### 8", "8"),
        ("Let's see. 2 + 2 = 4, then 4 + 5 = 9.\nSo the answer is 9.", "9"),
        # the marker wins over a later, unrelated number
        ("The answer is 6.\n\nThis took 2 steps.", "6"),
        # the last equation wins when there is no answer marker
        ("Maria has 9 * 2 = 18 apples.\nShe gives 2 away: 18 - 2 = 16 apples.", "16"),
        ("Emma has 14 pencils.\nShe gives 2 to a friend, so 14 - 2 = 12 left.\n#### 12\nThe answer is 12.", "12"),
        # a base model running on into the next few-shot question
        (" 7\n\nQuestion: What is 3 + 3?\nAnswer: 6", "7"),
        ("The answer is: Tom has 8 apples.", "8"),
        ("I have 3-4 ideas", "4"),
        ("The temperature fell to \u22125 degrees", "-5"),
    ],
)
def test_number_extraction(text, expected):
    assert extract_answer(text, "number") == expected


@pytest.mark.parametrize("text", ["", "I don't know.", "The answer is unclear", "\n\n", "????"])
def test_number_extraction_returns_none_when_there_is_no_number(text):
    assert extract_answer(text, "number") is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        (" B", "B"),
        ("B) Paris", "B"),
        ("(B)", "B"),
        ("I think (c)", "C"),
        ("Answer: b", "B"),
        ("The answer is C.", "C"),
        ("The correct answer is D) Berlin", "D"),
        ("A) London\n\nThe correct answer is B) Paris.", "B"),
        ("Paris", "B"),
        ("The capital of France is Paris, not London.", "B"),
        ("The answer is a city called Rome", "C"),  # "a" here is an article, not option A
        ("A.", "A"),
        ("Answer:\nD) Berlin", "D"),
    ],
)
def test_choice_extraction(text, expected):
    assert extract_answer(text, "choice", choices=CAPITALS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I am not sure.",
        "A dolphin lives in the sea.",  # article, and no option text
        "A) London\nB) Paris\nC) Rome\nD) Berlin",  # an echo of every option answers nothing
        "The answer is E.",  # not one of four options
    ],
)
def test_choice_extraction_returns_none(text):
    assert extract_answer(text, "choice", choices=CAPITALS) is None


def test_choice_without_choices_uses_a_to_d():
    assert extract_answer("The answer is (d).", "choice") == "D"
    assert extract_answer("The answer is E.", "choice") is None
    assert extract_answer("Paris", "choice") is None


def test_choice_letters_follow_the_number_of_choices():
    six = ["one", "two", "three", "four", "five", "six"]
    assert extract_answer("Answer: F", "choice", choices=six) == "F"
    assert extract_answer("Answer: C", "choice", choices=["yes", "no"]) is None


def test_short_choice_texts_match_case_sensitively():
    symbols = ["Fe", "S", "Au", "Na"]
    assert extract_answer("The symbol is Au.", "choice", choices=symbols) == "C"
    assert extract_answer("it's shiny", "choice", choices=symbols) is None


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is Paris.", "Paris."),
        ("Paris\nIt is in France.", "Paris"),
        ("Answer:\nThe Eiffel Tower. It is tall.", "The Eiffel Tower."),
        ("\n\n  blue whale  \n", "blue whale"),
        ("I think the answer is: a dog. Dogs bark.", "a dog."),
    ],
)
def test_text_extraction(text, expected):
    assert extract_answer(text, "text") == expected


def test_text_extraction_returns_none_on_empty_output():
    assert extract_answer("  \n ... \n", "text") is None


def test_regex_extraction_uses_group_one_when_present():
    assert extract_answer("code: XK-42 done", "regex", pattern=r"XK-(\d+)") == "42"
    assert extract_answer("code: XK-42 done", "regex", pattern=r"XK-\d+") == "XK-42"
    assert extract_answer("nothing here", "regex", pattern=r"XK-\d+") is None


def test_bad_kind_and_missing_or_invalid_pattern_are_usage_errors():
    with pytest.raises(UsageError, match="answer type must be one of"):
        extract_answer("7", "integer")
    with pytest.raises(UsageError, match="needs a pattern"):
        extract_answer("7", "regex")
    with pytest.raises(UsageError, match="valid regular expression"):
        extract_answer("7", "regex", pattern="(")
    with pytest.raises(UsageError):
        normalize_answer("7", "nope")
    with pytest.raises(UsageError):
        is_correct("7", "7", "nope")


@pytest.mark.parametrize("kind", ANSWER_TYPES)
@pytest.mark.parametrize("text", ["\x00\x01", "\ufffd" * 50, "(" * 100, "A" * 5000, "1" * 400])
def test_odd_model_output_never_raises(kind, text):
    result = extract_answer(text, kind, choices=CAPITALS if kind == "choice" else None, pattern=r"(\d+)")
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize(
    "value, expected",
    [("7", "7"), ("4.0", "4"), ("1,234", "1234"), ("$12", "12"), ("-3", "-3"), ("-0", "0"), ("0.50", "0.5"),
     (" 12. ", "12"), ("twelve", "12"), ("1e3", "1000"), ("2.25", "2.25"), ("not a number", "not a number")],
)
def test_normalize_number(value, expected):
    assert normalize_answer(value, "number") == expected


def test_normalize_choice_text_and_regex():
    assert normalize_answer("(b)", "choice") == "B"
    assert normalize_answer(" c. ", "choice") == "C"
    assert normalize_answer("The  Eiffel Tower!", "text") == "eiffel tower"
    assert normalize_answer("An apple, a day.", "text") == "apple day"
    assert normalize_answer("  XK-42 ", "regex") == "XK-42"


def test_is_correct():
    assert is_correct("4.0", "4", "number")
    assert is_correct("1,000", "1000", "number")
    assert not is_correct("5", "4", "number")
    assert is_correct("b", "B", "choice")
    assert is_correct("the Paris.", "paris", "text")
    assert not is_correct(None, "4", "number")
    assert is_correct(extract_answer("So 3 + 4 = 7 apples.", "number"), "7", "number")


def test_the_last_of_several_final_answer_markers_wins():
    assert extract_answer("#### 1\n\nThe answer is 3.", "number") == "3"
    assert extract_answer("The answer is 3.\n#### 4", "number") == "4"
    assert extract_answer("The answer is 3. \\boxed{5} The answer is 6.", "number") == "5"
