"""The test configuration itself: warnings that must not fail the suite on a fresh machine."""

import warnings


def test_arviz_refactor_notice_is_ignored_even_when_it_starts_with_a_newline():
    # ArviZ 0.23 shows this FutureWarning once a day (a stamp in the user's cache decides), and
    # its message starts with a newline, which a plain ".*" filter does not cross. Under
    # filterwarnings = error this test fails unless setup.cfg's filter matches it.
    warnings.warn(
        "\nArviZ is undergoing a major refactor to improve flexibility and extensibility "
        "while maintaining a user-friendly interface.",
        FutureWarning,
        stacklevel=1,
    )
