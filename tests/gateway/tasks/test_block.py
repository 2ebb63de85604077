"""The exchange as one block of quoted fields: the app's request from before the alias."""

from __future__ import annotations

import pytest

from gateway.tasks.block import BlockError, ContextBlock

BLOCK = ContextBlock("[CONTEXT]", {"user": "user_last_message", "assistant": "pika_response"})
SEED = (
    "[CONTEXT]\n"
    'user_last_message: "Dạ, con voi ăn cỏ ạ."\n'
    'pika_response: "Đúng rồi, con giỏi lắm! Voi là loài động vật ăn thực vật."'
)


def test_the_seeds_block_reads_as_the_exchange() -> None:
    assert BLOCK.read(SEED) == {
        "user": "Dạ, con voi ăn cỏ ạ.",
        "assistant": "Đúng rồi, con giỏi lắm! Voi là loài động vật ăn thực vật.",
    }


@pytest.mark.parametrize(
    ("text", "user", "assistant"),
    [
        # Quotes inside a value end nowhere: the last quote before the next field closes it.
        ('[CONTEXT]\nuser_last_message: "con đọc "Dế Mèn" rồi"\npika_response: "Hay!"',
         'con đọc "Dế Mèn" rồi', "Hay!"),
        # A line break in a child's message stays in it.
        ('[CONTEXT]\nuser_last_message: "một\nhai"\npika_response: "Ba!"', "một\nhai", "Ba!"),
        # Either order, blanks around the colon, trailing spaces and lines, an empty value.
        ('  [CONTEXT]\r\npika_response :  "Chào con!"  \r\nuser_last_message:""\n\n',
         "", "Chào con!"),
        # Text after the header on its line, and lines that are no field, are not the exchange.
        ('[CONTEXT] v2\nnote: "x"\nuser_last_message: "12"\npika_response: "Đúng"',
         "12", "Đúng"),
        # Escapes are kept as written, not read as JSON.
        ('[CONTEXT]\nuser_last_message: "a\\nb \\u1ea1"\npika_response: "c"', "a\\nb \\u1ea1", "c"),
    ],
)  # fmt: skip
def test_values_are_read_as_written(text: str, user: str, assistant: str) -> None:
    assert BLOCK.read(text) == {"user": user, "assistant": assistant}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('user_last_message: "a"\npika_response: "b"', "does not start with the header [CONTEXT]"),
        ('[CONTEXT]\nuser_last_message: "a"', "lacks the field pika_response"),
        ("[CONTEXT]\n", "lacks the fields user_last_message, pika_response"),
        ('[CONTEXT]\nuser_last_message: a\npika_response: "b"',
         "lacks the field user_last_message"),
        ('[CONTEXT]\nuser_last_message: "a\npika_response: "b"',
         "user_last_message has no closing"),
        ('[CONTEXT]\nuser_last_message: "a"\npika_response: "b', "pika_response has no closing"),
        ('[CONTEXT]\nuser_last_message: "a"\nuser_last_message: "b"\npika_response: "c"',
         "user_last_message appears twice"),
    ],
)  # fmt: skip
def test_a_malformed_block_names_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(BlockError) as error:
        BLOCK.read(text)
    assert problem in str(error.value)


def test_holds_only_text_that_starts_with_the_header() -> None:
    assert BLOCK.holds(SEED)
    assert BLOCK.holds("\n [CONTEXT]")
    assert not BLOCK.holds("con nói [CONTEXT] nè")
