"""Properties of SMTP command-argument parsing: the `<local@domain>` fast path and `_getaddr` agree with aiosmtpd's."""

from __future__ import annotations

from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.smtp_ingress.session import IngressSMTP, plain_path

ATEXT = "abcXYZ0189!#$%&'*+/=?^_`{|}~-"
atom = st.text(ATEXT, min_size=1, max_size=8)
dot_atom = st.lists(atom, min_size=1, max_size=4).map(".".join)
label = st.text("abcxyz019-", min_size=1, max_size=8)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
# ESMTP parameters and the odd things clients put after the path: spaces, tabs, comments, junk.
rest = st.text(' \tSIZE=0123456789BODY8BITMIME()<>@"\\,:;.=?', max_size=20)
# Characters that make a path something other than a plain dot-atom: quoting, comments, routes, non-ASCII, `=?`.
awkward = st.text(ATEXT + ' .@<>()[]":;,\\\t=?üé\u00a0\u2028', max_size=40)


@st.composite
def plain_paths(draw: st.DrawFn) -> str:
    return f"<{draw(dot_atom)}@{draw(domain)}>{draw(rest)}"


def _getaddr(implementation: object, arg: str, local_part_limit: int) -> tuple[object, object]:
    """Call a `_getaddr` (ours or aiosmtpd's) on a stand-in session: it reads `local_part_limit` only."""
    session = SimpleNamespace(local_part_limit=local_part_limit)
    try:
        return implementation(session, arg)  # type: ignore[operator, no-any-return]
    except Exception as exc:  # the two must fail alike, if at all
        return type(exc), None


@settings(max_examples=300, deadline=None)
@given(arg=st.one_of(plain_paths(), awkward, st.builds("<{}>".format, awkward), st.text(max_size=30)))
@example("<a=?b@c>")
@example("<a@b> (comment)")
@example("<a@b>\t SIZE=10")
@example("<a.@b>")
@example("<@route:a@b>")
def test_plain_path_says_what_the_email_parser_says_or_nothing(arg: str) -> None:
    plain = plain_path(arg)
    if plain is not None:
        # The fast path answers only where it gives exactly the parser's answer.
        assert plain == _getaddr(SMTP._getaddr, arg, 0)


@settings(max_examples=300, deadline=None)
@given(
    arg=st.one_of(plain_paths(), awkward, st.builds("<{}>".format, awkward), st.text(max_size=30)),
    local_part_limit=st.sampled_from([0, 3, 64]),
)
@example("", 0)
@example("   ", 0)
@example(' "', 0)
@example("<", 0)
@example("\\@", 0)
def test_getaddr_is_aiosmtpds_but_never_raises(arg: str, local_part_limit: int) -> None:
    ours = _getaddr(IngressSMTP._getaddr, arg, local_part_limit)
    theirs = _getaddr(SMTP._getaddr, arg, local_part_limit)
    if isinstance(theirs[0], type):
        assert ours == (None, None)  # where the email parser raises, a syntax error (501)
    else:
        assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(arg=plain_paths())
def test_every_plain_path_takes_the_fast_path(arg: str) -> None:
    plain = plain_path(arg)
    if "=?" in arg.partition(">")[0] or arg.partition(">")[2].lstrip(" \t").startswith("("):
        assert plain is None
    else:
        assert plain is not None and plain[0] == arg[1 : arg.index(">")]
