"""Offline text helpers for the IFEval checks: sentences, words, language.

IFEval uses nltk's punkt (its data cannot be downloaded here) and langdetect (which
misjudges short texts); these are small deterministic stand-ins.

>>> split_sentences("Dr. Smith paid $3.50. Is that right? Yes! e.g. this is one.")
['Dr. Smith paid $3.50.', 'Is that right?', 'Yes!', 'e.g. this is one.']
>>> count_words("It's a well-known fact: 2 cats.")  # It, s, a, well, known, fact, 2, cats
8
>>> detect_language("Je pense que le chat est sur la table et que nous sommes dans la maison.")
'fr'
>>> detect_language("Привет, как дела?")
'ru'
"""

from __future__ import annotations

import re
from collections import Counter

_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "fig", "no", "inc",
    "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
    "dec", "mt", "approx", "dept", "est", "a.m", "p.m", "u.s", "u.k", "cf", "al",
}
_BOUNDARY = re.compile(r"([.!?]+[\"')\]]*)(\s+)")


def split_sentences(text: str) -> list[str]:
    """Split on ., ! or ? followed by space, except after abbreviations and initials."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(text):
        end = m.end(1)
        before = text[start:m.start(1)]
        last = before.split()[-1].lower() if before.split() else ""
        last = last.lstrip("(\"'")
        nxt = text[m.end():m.end() + 1]
        if m.group(1) == "." and (last in _ABBREV or re.fullmatch(r"[a-z]", last)):
            continue
        if nxt and nxt.islower() and m.group(1) == ".":
            continue  # "3 p.m. and" / lowercase continuation
        sentence = text[start:end].strip()
        if sentence:
            out.append(sentence)
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


def words(text: str) -> list[str]:
    """IFEval's word counter: nltk's RegexpTokenizer(r"\\w+")."""
    return re.findall(r"\w+", text)


def count_words(text: str) -> int:
    return len(words(text))


def word_tokens(text: str) -> list[str]:
    """A rough nltk.word_tokenize: words (with inner ' and -) and punctuation marks."""
    return re.findall(r"\w+(?:['’-]\w+)*|[^\w\s]", text)


# Distinct scripts decide most languages; Latin-script ones by stop-word counts.
_SCRIPTS = [
    ("ru", r"[\u0400-\u04FF]"), ("ar", r"[\u0600-\u06FF]"), ("hi", r"[\u0900-\u097F]"),
    ("bn", r"[\u0980-\u09FF]"), ("th", r"[\u0E00-\u0E7F]"), ("he", r"[\u0590-\u05FF]"),
    ("el", r"[\u0370-\u03FF]"), ("ko", r"[\uAC00-\uD7AF\u1100-\u11FF]"), ("ja", r"[\u3040-\u30FF]"),
    ("zh", r"[\u4E00-\u9FFF]"), ("ta", r"[\u0B80-\u0BFF]"), ("te", r"[\u0C00-\u0C7F]"),
    ("kn", r"[\u0C80-\u0CFF]"), ("gu", r"[\u0A80-\u0AFF]"), ("pa", r"[\u0A00-\u0A7F]"),
]
_STOP = {
    "en": "the and is are of to in that it you for was with on as have be this not but they at",
    "es": "el la los las de que y en un una es por con para no se del al lo como pero más",
    "fr": "le la les de des et est un une que en du pour pas dans qui sur au avec ce nous vous",
    "de": "der die das und ist nicht ein eine zu den von mit sich auf für ich es auch dem wir",
    "it": "il lo la gli le di che è e un una per non sono del della con ma come anche questo",
    "pt": "o a os as de que e é um uma do da em para não com por mais se ao foi",
    "nl": "de het een en van is dat niet op te zijn met voor ik je die wat er",
    "sv": "och att det är en som på för med inte av den jag har till om ett",
    "fi": "ja on ei se että oli hän mutta kun niin tämä ovat olen kanssa myös",
    "tr": "ve bir bu da de için ile çok ne ama gibi daha olan var değil",
    "vi": "và của là có không được trong những cho một các với này người",
    "id": "dan yang di ini itu dengan untuk tidak dari ada akan saya pada juga",
    "sw": "na ya wa kwa ni katika za la hii kama lakini yake watu",
    "pl": "i w nie się na że z to jest do jak co tak ale o",
}
_STOPSETS = {lang: set(ws.split()) for lang, ws in _STOP.items()}


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the dominant language, or None when there is too little text."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    counts = Counter()
    for lang, pattern in _SCRIPTS:
        counts[lang] = len(re.findall(pattern, text))
    if "ja" in counts and counts["ja"] and counts["zh"]:
        counts["ja"] += counts.pop("zh")  # kanji inside Japanese text
    lang, n = counts.most_common(1)[0]
    if n > 0.3 * len(letters):
        return lang
    toks = [w.lower() for w in re.findall(r"\w+", text)]
    if not toks:
        return None
    scores = {lang: sum(t in stop for t in toks) for lang, stop in _STOPSETS.items()}
    best = max(scores, key=scores.get)
    if scores[best] == 0:
        return "en" if all(c.isascii() for c in letters) else None
    return best


def is_english(text: str) -> bool:
    return detect_language(text) in ("en", None) and sum(c.isascii() for c in text if c.isalpha()) >= 0.9 * max(
        1, sum(c.isalpha() for c in text))
