from hypothesis import given
from hypothesis import strategies as st

from intercom.ascii import is_digits, uint


def test_only_ascii_digits_are_numbers() -> None:
    assert uint("42") == 42
    assert uint(" 7 ") == 7
    assert uint("²") is None  # str.isdigit() says yes, int() says no
    assert uint("٣") is None  # Arabic-Indic three: int() would read 3
    assert uint("-1") is None
    assert uint("+1") is None
    assert uint("") is None
    assert uint("12345678901") is None  # more than ten digits
    assert uint("12345678901", max_digits=11) == 12345678901
    assert not is_digits("1 2")


@given(st.text())
def test_uint_never_raises_and_agrees_with_int(text: str) -> None:
    value = uint(text)
    if value is not None:
        assert value == int(text.strip())
        assert text.strip().isascii()
