"""The whole path against hostile MXs: every message answered 250 is relayed exactly once or bounced exactly once.

Each scenario gets a hostile MX of its own (a domain of the stack's transport map), scripts it, sends through the
real ingress and delivery, and checks the ledger: relayed copies are the transactions the MX answered 2xx, bounces
the reports in the sender's mailbox. The delivery's SMTP timeouts are 3 s, its retry 1 s, its queue lifetime 8 s.
"""

from __future__ import annotations

from tests.faults.hostile_mx import Script, latin1, multiline
from tests.faults.ledger import Ledger
from tests.faults.stack import USERS, FaultStack


def run(stack: FaultStack, ledger: Ledger, recipients: list[str], count: int = 1) -> None:
    """Send, wait for every outcome, and hold the ledger to exactly once."""
    sent = stack.send(ledger, recipients, count=count)
    assert all(s.accepted for s in sent), [s.reply for s in sent]
    stack.settle(ledger, sent)
    ledger.assert_exactly_once([s.token for s in sent])


def test_a_well_behaved_mx_gets_each_message_once(stack: FaultStack, ledger: Ledger) -> None:
    mx, domain = stack.hostile()
    run(stack, ledger, [f"one@{domain}", f"two@{domain}", USERS[1]], count=3)
    assert mx.copies(b"X-Ledger-Token") == 6 and ledger.report().delivered == 9


def test_slow_greeting_and_replies_dribbled_a_byte_at_a_time(stack: FaultStack, ledger: Ledger) -> None:
    mx, domain = stack.hostile(Script(greeting_delay=1.5, split=1, split_pause=0.002))
    run(stack, ledger, [f"one@{domain}", f"two@{domain}"])
    assert mx.connections == 1 and len(mx.accepted()) == 1


# Each a first connection that goes wrong; the retry (1 s later) finds a well-behaved server.
FIRST_ATTEMPTS = {
    "no-greeting": Script(hang_at="connect"),
    "closed-before-greeting": Script(hang_up_at="connect"),
    "closed-at-ehlo": Script(hang_up_at="ehlo"),
    "closed-at-rcpt": Script(hang_up_at="rcpt"),
    "closed-after-data-before-354": Script(hang_up_at="data"),
    "closed-after-the-dot-before-the-reply": Script(hang_up_at="dot"),
    "silent-after-the-dot": Script(hang_at="dot"),
    "451-to-the-dot": Script(dot=b"451 4.3.0 try again\r\n"),
    "huge-ehlo-reply": Script(ehlo=multiline(250, 2000, 4096)),
    "long-multiline-greeting": Script(greeting=multiline(220, 3000, 60)),
    "malformed-reply": Script(mail=b"abc not a reply\r\n"),
    "starttls-then-close": Script(starttls="abort"),
}


def test_a_first_attempt_that_goes_wrong_is_retried_and_delivered_once(stack: FaultStack, ledger: Ledger) -> None:
    # All at once, each with an MX of its own: the waits (timeouts, the retry delay) overlap.
    cases = {name: stack.hostile(script, Script()) for name, script in FIRST_ATTEMPTS.items()}
    sent = {name: stack.send(ledger, [f"one@{domain}", f"two@{domain}"]) for name, (_, domain) in cases.items()}
    everything = [s for batch in sent.values() for s in batch]
    assert all(s.accepted for s in everything), [s.reply for s in everything]
    stack.settle(ledger, everything)
    problems = {name: ledger.report([s.token for s in sent[name]]).problems for name in cases}
    assert not any(problems.values()), {name: found for name, found in problems.items() if found}
    wrong = {name: (mx.connections, len(mx.accepted())) for name, (mx, _) in cases.items()}
    assert all(connections >= 2 and accepted == 1 for connections, accepted in wrong.values()), wrong


def test_a_broken_tls_handshake_falls_back_to_plaintext(stack: FaultStack, ledger: Ledger) -> None:
    # Every connection offers STARTTLS and breaks the handshake; the delivery's plaintext retry does not ask again.
    mx, domain = stack.hostile(Script(starttls="broken"))
    run(stack, ledger, [f"one@{domain}"])
    assert mx.connections == 2 and len(mx.accepted()) == 1
    assert [b"STARTTLS" in b"".join(commands) for commands in mx.commands] == [True, False]


def test_per_recipient_answers(stack: FaultStack, ledger: Ledger) -> None:
    first = Script(
        rcpt={
            f"gone@{stack.next_domain}": b"550 5.1.1 <gone>: no such user\r\n",
            f"later@{stack.next_domain}": b"450 4.2.1 <later>: try again later\r\n",
        }
    )
    mx, domain = stack.hostile(first, Script())
    run(stack, ledger, [f"here@{domain}", f"gone@{domain}", f"later@{domain}"])
    report = ledger.report()
    assert (report.delivered, report.bounced) == (2, 1)
    assert [t.recipients for t in mx.accepted()] == [[f"here@{domain}"], [f"later@{domain}"]]


def test_a_huge_permanent_refusal_bounces_once(stack: FaultStack, ledger: Ledger) -> None:
    # 400 lines of 70 bytes: long, but within what the client reads (a longer reply is a protocol error, retried).
    mx, domain = stack.hostile(Script(rcpt_rule=lambda address: multiline(550, 400, 70)))
    run(stack, ledger, [f"one@{domain}", USERS[1]])
    assert ledger.report().bounced == 1 and not mx.accepted()


def test_a_reply_code_outside_2xx_to_5xx_is_a_protocol_error_not_a_bounce(stack: FaultStack, ledger: Ledger) -> None:
    # RFC 5321 §4.2: codes whose first digit is not 2-5 are not SMTP; such a server is broken, not refusing.
    mx, domain = stack.hostile(Script(rcpt_default=b"999 5.1.1 what is this\r\n"), Script())
    run(stack, ledger, [f"one@{domain}"])
    assert ledger.report().delivered == 1 and len(mx.accepted()) == 1


def test_a_latin1_refusal_next_to_an_accepted_recipient(stack: FaultStack, ledger: Ledger) -> None:
    # The bounce quotes a reply in Latin-1; the accepted recipient gets one copy whatever composing it takes.
    _, domain = stack.hostile(Script(rcpt={f"muller@{stack.next_domain}": latin1("550 5.1.1 Müller unknown")}))
    run(stack, ledger, [f"ok@{domain}", f"muller@{domain}"])
    assert (ledger.report().delivered, ledger.report().bounced) == (1, 1)


def test_a_latin1_temporary_failure_is_retried(stack: FaultStack, ledger: Ledger) -> None:
    mx, domain = stack.hostile(Script(mail=latin1("451 4.3.0 Bitte später nochmal")), Script())
    run(stack, ledger, [f"one@{domain}"])
    assert len(mx.accepted()) == 1


def test_a_latin1_temporary_failure_until_the_lifetime_ends_in_one_bounce(stack: FaultStack, ledger: Ledger) -> None:
    # The bounce at the end of the queue lifetime quotes the last reply, in Latin-1.
    _, domain = stack.hostile(Script(mail=latin1("451 4.3.0 Bitte später nochmal")))
    run(stack, ledger, [f"one@{domain}"])
    assert ledger.report().bounced == 1


def test_latin1_greeting_and_acceptance(stack: FaultStack, ledger: Ledger) -> None:
    mx, domain = stack.hostile(Script(greeting=latin1("220 Grüße ESMTP"), dot=latin1("250 2.0.0 Übernommen")))
    run(stack, ledger, [f"one@{domain}"])
    assert len(mx.accepted()) == 1


def test_an_mx_that_never_answers_well_ends_in_one_bounce(stack: FaultStack, ledger: Ledger) -> None:
    mx, domain = stack.hostile(Script(hang_up_at="rcpt"))
    run(stack, ledger, [f"one@{domain}"])
    assert ledger.report().bounced == 1 and mx.connections >= 2
