"""The inputs behind the golden values of ``test_compat.py``: one copy, read by the test and by
``scripts/make_golden_scores.py`` (which runs the reference package on them)."""

from __future__ import annotations

GOLDEN_INSTRUCTIONS = ["Answer briefly. ", "Write python code. ", ""]
GOLDEN_INPUTS = ["what is the answer to the question?", "a list of numbers", "hello, how are you!"]
GOLDEN_CANDIDATES = [
    [
        "the answer is yes.",
        "no",
        "because the first reason is good and the second reason is better than the third.",
    ],
    [
        "print(list(range(3)))",
        "sure, here is the code: it is a list of the first numbers of the world.",
        "data",
    ],
    ["get out!", "hi! I am fine, thanks!", "bye!"],
]
GOLDEN_CONVERSATIONS_A = [
    [
        {"role": "USER", "content": "hello"},
        {"role": "ASSISTANT", "content": "hi, how can I help?"},
        {"role": "USER", "content": "write a poem"},
        {"role": "ASSISTANT", "content": "the world is good, the time is now."},
    ]
]
GOLDEN_CONVERSATIONS_B = [
    [
        {"role": "USER", "content": "hello"},
        {"role": "ASSISTANT", "content": "go away"},
        {"role": "USER", "content": "write a poem"},
        {"role": "ASSISTANT", "content": "no."},
    ]
]
BUBBLE_SEED = 0
# The conversation instruction alone is 78 tokens of the tiny tokenizer: compare conversations with wider
# limits, set through loadranker (which the reference honours too).
CONVERSATION_LIMITS = {"source_maxlength": 256, "candidate_maxlength": 128}
