"""The built-in prompt sets hold the project's own prompts: no training prompt twice, none in
a held-out evaluation set, and none copied from the public benchmark files in
``../shared/data`` (the SST-2 / BeaverTails mixes, AdvBench, HarmBench, XSTest, MT-Bench,
GSM8K) -- neither verbatim nor nearly (case, punctuation and a few words aside)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import pytest

from bench.harmful_sst2 import data as hd
from bench.replication.run import words
from safety.prompt_sets import BUILTIN_SETS, load_builtin, load_prompt_file
from tests.conftest import REPO

SHARED_DATA = REPO.parent / "shared" / "data"
TRAIN_SETS = ("harmful_train", "benign_train", "probe_harmful_train", "probe_benign_train")
EVAL_SETS = ("harmful_eval", "benign_eval", "borderline_eval")
# Word Jaccard at or above which two prompts count as the same prompt reworded. Lower
# thresholds match unrelated short questions of one shape ("What's the best way to ...?").
NEAR = 0.8


def _key(text: str) -> str:
    """``text`` with case, punctuation and spacing taken off."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _near_pairs(texts: Iterable[str], others: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs ``(text, other)`` whose word sets have Jaccard ≥ :data:`NEAR`.

    Prefix filtering keeps it fast: Jaccard ≥ t needs ``|a ∩ b| ≥ t·|a|``, so ``b`` holds one
    of any ``|a| - ⌈t·|a|⌉ + 1`` words of ``a``; only the ``others`` holding one of ``a``'s
    rarest words that many are compared."""
    others = list(dict.fromkeys(others))
    sets = [words(o) for o in others]
    holding: dict[str, list[int]] = {}
    for i, w in enumerate(sets):
        for word in w:
            holding.setdefault(word, []).append(i)
    pairs = []
    for text in texts:
        w = words(text)
        rarest = sorted(w, key=lambda word: len(holding.get(word, ())))[: len(w) - math.ceil(NEAR * len(w)) + 1]
        candidates = {i for word in rarest for i in holding.get(word, ())}
        pairs += [(text, others[i]) for i in sorted(candidates) if len(w & sets[i]) >= NEAR * len(w | sets[i])]
    return pairs


def _public_prompts() -> list[str]:
    """Every prompt text of the shared benchmark files: each mix line's request and input
    (harmful BeaverTails requests and SST-2 sentences alike), plus the harmful, benign and
    safe-looking request sets."""
    texts = [
        part
        for p in hd.SHARES
        for line in hd.load_mix(SHARED_DATA, p)
        for part in (hd.request_of(line), *hd.plain_prompt(line).split("\n\n"))
    ]
    for name in ("advbench_harmful_behaviors.txt", "harmbench_behaviors_text_val.csv", "mt_bench_questions.jsonl"):
        texts += [p.text for p in load_prompt_file(SHARED_DATA / name)]
    texts += [p.text for p in load_prompt_file(SHARED_DATA / "xstest_prompts.csv", label="benign")]
    texts += [p.text for p in load_prompt_file(SHARED_DATA / "gsm8k_train.jsonl")]
    return texts


@pytest.fixture(scope="module")
def public() -> list[str]:
    return _public_prompts()


def test_the_public_prompts_are_read_in_full(public: list[str]) -> None:
    keys = {_key(t) for t in public}
    assert len(keys) > 7473 + 450 + 520  # GSM8K, XSTest, AdvBench and the mixes' sentences
    # a BeaverTails request and an SST-2 sentence from the mixes, taken out of their template
    assert any("analyze the sentiment of the input" in k for k in keys)
    unsafe = [hd.request_of(line) for line in hd.load_mix(SHARED_DATA, 0.1) if line["flag"] == hd.HARMFUL_FLAG]
    assert len(unsafe) == 100
    assert _key(unsafe[0]) in keys and not unsafe[0].startswith("Below is an instruction")


def test_near_pairs_sees_rewordings_and_not_shared_shapes() -> None:
    assert _near_pairs(
        ["What is the least common multiple of 12, 18 and 30?"],
        ["What's the LCM of 12 and 18?", "What is the least common multiple of 12 and 18?"],
    ) == [("What is the least common multiple of 12, 18 and 30?", "What is the least common multiple of 12 and 18?")]
    assert not _near_pairs(["What's the best way to clean hardwood floors?"], ["What's the best way to gut a fish?"])


def test_no_training_prompt_twice_or_in_an_eval_set() -> None:
    train = [p.text for n in TRAIN_SETS for p in load_builtin(n)]
    keys = [_key(t) for t in train]
    assert len(set(keys)) == len(keys)  # no prompt twice, so no split holds a copy of another's
    held_out = [p.text for n in EVAL_SETS for p in load_builtin(n)]
    assert set(keys).isdisjoint(_key(t) for t in held_out)
    assert _near_pairs(train, held_out) == []


def test_no_builtin_prompt_is_a_public_benchmark_prompt(public: list[str]) -> None:
    """The project writes its own prompts: none of any built-in set is copied from the shared
    benchmark files, and no training prompt is a rewording of one."""
    public_keys = {_key(t) for t in public}
    builtin = [p.text for n in BUILTIN_SETS for p in load_builtin(n)]
    assert [t for t in builtin if _key(t) in public_keys] == []
    train = [p.text for n in TRAIN_SETS for p in load_builtin(n)]
    assert _near_pairs(train, public) == []
