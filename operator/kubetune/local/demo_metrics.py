"""Scoring the demo's sentiment answers: the class an answer names, accuracy, macro-F1, per-class recall and a
confusion table, and the majority-class baseline, so that the adapter is compared with what guessing gets.

Accuracy alone hid a weak adapter (it beat the base model's 0% but barely the majority class, and missed most
negatives); macro-F1 and per-class recall show every class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

CLASSES = ("positive", "negative", "neutral")
# Korean and English words naming each class; an answer's class is the one named first.
KEYWORDS = {"positive": ("긍정", "positive"), "negative": ("부정", "negative"), "neutral": ("중립", "neutral")}
NO_CLASS = "other"
CORNER = "true \\ answered"


def class_of(text: str) -> str:
    """The class the answer names first (Korean or English word, anywhere in it), or 'other' when it names none:
    the base model gets credit for a right word in any position, as the adapter does."""
    lowered = text.lower()
    found = [
        (position, label)
        for label, words in KEYWORDS.items()
        for word in words
        if (position := lowered.find(word)) >= 0
    ]
    return min(found)[1] if found else NO_CLASS


@dataclass(frozen=True)
class Scores:
    """How one model's answers compare with the true classes of the same rows."""

    accuracy: float
    macro_f1: float
    recall: dict[str, float]
    confusion: dict[str, Counter]
    """true class -> counts of the answered classes (NO_CLASS for answers naming none)."""


def score(truth: Sequence[str], answered: Sequence[str], classes: Sequence[str] = CLASSES) -> Scores:
    """Accuracy, macro-F1 over `classes` (a class never answered has precision 0) and recall per class."""
    if len(truth) != len(answered) or not truth:
        raise ValueError(f"need as many answers as rows, and at least one (got {len(answered)} for {len(truth)})")
    confusion = {label: Counter() for label in classes}
    for true, given in zip(truth, answered, strict=True):
        confusion[true][given] += 1
    recall, f1 = {}, []
    for label in classes:
        support = sum(confusion[label].values())
        hits = confusion[label][label]
        predicted = sum(confusion[other][label] for other in classes)
        recall[label] = hits / support if support else 0.0
        precision = hits / predicted if predicted else 0.0
        f1.append(2 * precision * recall[label] / (precision + recall[label]) if hits else 0.0)
    correct = sum(true == given for true, given in zip(truth, answered, strict=True))
    return Scores(correct / len(truth), sum(f1) / len(classes), recall, confusion)


def majority_class(labels: Sequence[str]) -> str:
    """The most frequent class of the training rows (ties: the first in CLASSES), what always-guessing picks."""
    counts = Counter(labels)
    return max(CLASSES, key=lambda label: (counts[label], -CLASSES.index(label)))


def render_table(rows: Sequence[tuple[str, Scores]], classes: Sequence[str] = CLASSES) -> str:
    """One line per model: accuracy, macro-F1 and recall per class, in percent."""
    width = max(len(name) for name, _ in rows)
    header = f"  {'':{width}}  accuracy  macro-F1  " + "  ".join(f"{'recall ' + c:>15}" for c in classes)
    lines = [header]
    for name, scores in rows:
        recalls = "  ".join(f"{scores.recall[c]:15.1%}" for c in classes)
        lines.append(f"  {name:{width}}  {scores.accuracy:8.1%}  {scores.macro_f1:8.1%}  {recalls}")
    return "\n".join(lines)


def render_confusion(scores: Scores, classes: Sequence[str] = CLASSES) -> str:
    """Rows: the true class; columns: the class answered (other: no class named)."""
    columns = [*classes, NO_CLASS]
    lines = [f"  {CORNER:16}" + "".join(f"{c:>10}" for c in columns)]
    for label in classes:
        lines.append(f"  {label:16}" + "".join(f"{scores.confusion[label][c]:10d}" for c in columns))
    return "\n".join(lines)
