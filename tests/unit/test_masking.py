"""Generic masking: every value shape becomes <*>, constant words (even with digits) stay."""

from __future__ import annotations

import pytest

from devmesh_core.errors import InvalidInput
from devmesh_core.templates.masking import Masker, MaskingConfig


@pytest.fixture(scope="module")
def masker() -> Masker:
    return Masker()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # IPv4, alone, with port, with Java's leading slash, inside brackets
        ("from 173.234.31.186 port 38926 ssh2", "from <*> port <*> ssh2"),
        ("request /10.10.34.11:45307", "request <*>:<*>"),
        ("[client 222.166.160.184] denied", "[client <*>] denied"),
        # IPv6, full and compressed, and the loopback
        ("peer fe80::1ff:fe23:4567:890a up", "peer <*> up"),
        ("peer 2001:db8:85a3:0:0:8a2e:370:7334 up", "peer <*> up"),
        ("bind ::1 ok", "bind <*> ok"),
        # MAC-like byte strings
        ("chip FF:F2:9F:16:E2:23:00:0D:60:E9:1D:DC ip=10.0.0.151", "chip <*> ip=<*>"),
        ("nic 00-1A-2B-3C-4D-5E link", "nic <*> link"),
    ],
)
def test_addresses(masker: Masker, message: str, expected: str) -> None:
    assert masker.mask(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("session 0x14ed93111f20027 closed", "session <*> closed"),
        ("iar 003a90fc dear 00b360e8", "iar <*> dear <*>"),
        ("fpr29=0xffffffff ffffffff", "fpr29=<*> <*>"),
        ("id 54fadb412c4e40cdbaed9335e4c35a9e done", "id <*> done"),
        ("[instance: b9000564-fe1a-409b-b8cc-1e88b294cd1d] Claim", "[instance: <*>] Claim"),
        (
            "event network-vif-plugged:e3871ffd-5cd5-4287-bddd-3529f7b59515 ok",
            "event network-vif-plugged:<*> ok",
        ),
    ],
)
def test_hex_and_uuids(masker: Masker, message: str, expected: str) -> None:
    assert masker.mask(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("loading /var/lib/nova/instances/_base/a489c8: done", "loading <*>: done"),
        ("chdir(/p/gb2/glosli/8M_5000K/t800) failed", "chdir(<*>) failed"),
        ("exec ./runtime_malloc now", "exec <*> now"),
        ("node '/udev/vcsa2'", "node '<*>'"),
        (r"Core: C:\Windows\winsxs\amd64\cbscore.dll loaded", "Core: <*> loaded"),
        (r"open \\srv01\share\f.txt ok", "open <*> ok"),
        ("GET https://example.org/a/b?x=1&y=2 ok", "GET <*> ok"),
        ("listening on [akka.tcp://sys@10.10.34.11:55904]", "listening on [<*>]"),
        ("split: hdfs://10.10.34.11:9000/pjhe/test/1/kmeans_data.txt:0+62", "split: <*>"),
        (
            '10.11.10.1 "GET /v2/54fa/servers/detail HTTP/1.1" status: 200',
            '<*> "GET <*>" status: <*>',
        ),
        ("mail to ops@example.com sent", "mail to <*> sent"),
        ("node cp-1.slowvm1.tcloud-pg0.utah.cloudlab.us up", "node <*> up"),
        ("host proxy.cse.cuhk.edu.hk:5070 open", "host <*>:<*> open"),
    ],
)
def test_paths_urls_and_hosts(masker: Masker, message: str, expected: str) -> None:
    assert masker.mask(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # a unit glued to the number is part of the value ...
        ("timeout of 10000ms exceeded", "timeout of <*> exceeded"),
        ("took 2.5s and 120us", "took <*> and <*>"),
        ("0MB HIGHMEM, 126MB LOWMEM, 16K cache, 0.5GiB", "<*> HIGHMEM, <*> LOWMEM, <*> cache, <*>"),
        ("Console: colour VGA+ 80x25", "Console: colour VGA+ <*>"),
        # ... a unit written apart is a constant word of the template
        ("memory 2048 MB, disk 20 GB, vcpus 1 CPU", "memory <*> MB, disk <*> GB, vcpus <*> CPU"),
        ("Took 19.05 seconds to spawn", "Took <*> seconds to spawn"),
        # numbers: signed, decimal, scientific, versions, glued to punctuation
        ("offset -12 delta +3.5 rate 1e-5", "offset <*> delta <*> rate <*>"),
        ("Linux version 2.6.5-1.358 (gcc 3.3.3)", "Linux version <*> (gcc <*>)"),
        ("Security Scaffold v1.0.0 initialized", "Security Scaffold <*> initialized"),
        ("uid=0 euid=0 tty=:0", "uid=<*> euid=<*> tty=:<*>"),
        ("Running task 1.0 in stage 2.0 (TID 12)", "Running task <*> in stage <*> (TID <*>)"),
    ],
)
def test_durations_sizes_numbers(masker: Masker, message: str, expected: str) -> None:
    assert masker.mask(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("connection at Fri Jun 17 07:07:00 2005 from x", "connection at <*> from x"),
        ("audit from 2017-05-16 05:00:00 to 2017-05-16 06:00:00.", "audit from <*> to <*>."),
        ("at 2024-01-02T03:04:05.678Z done", "at <*> done"),
        ("status=M Fri Jul 01 08:16:53 PDT 2005", "status=M <*>"),
        ("[10/Oct/2000:13:55:36 -0700] GET", "[<*>] GET"),
        ("lifetime 00:02 ok", "lifetime <*> ok"),
    ],
)
def test_dates_and_times(masker: Masker, message: str, expected: str) -> None:
    assert masker.mask(message) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # a value glued to a word makes the whole word a value (Loghub guideline "WV")
        ("block blk_-6952295868487656571 terminating", "block <*> terminating"),
        ("task 'attempt_201706092018_0024_m_000002_1004'", "task '<*>'"),
        ("Disk quotas dquot_6.5.1", "Disk quotas <*>"),
        # ... except across "/" and real delimiters
        ("intellimouse PS/2", "intellimouse PS/<*>"),
        ("Initializing CPU#0", "Initializing CPU#<*>"),
        ("generating core.2275", "generating core.<*>"),
        # adjacent values and value lists are one value
        ("addrs 10.11.10.1,10.11.10.2 ok", "addrs <*> ok"),
    ],
)
def test_values_swallow_their_word(masker: Masker, message: str, expected: str) -> None:
    assert masker.mask(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        "Accepted password for fztu from port ssh2",
        "ROOT LOGIN ON tty2 PSR0 r24 dbcr0 C1 L3 x+ z-",
        "Registered signal handlers for [TERM, HUP, INT]",
        "mapred.task.id is deprecated. Instead, use mapreduce.task.attempt.id",
        "java.io.IOException: ZooKeeperServer not running",
        "Notification: (n.leader), LOOKING (n.state)",
    ],
)
def test_constants_with_digits_or_dots_are_kept(masker: Masker, message: str) -> None:
    out = masker.mask(message)
    # only the guideline's value words (root/admin/true/false/null) may change
    assert out == message.replace("ROOT", "<*>")


def test_boolean_and_user_words_are_values(masker: Masker) -> None:
    assert masker.mask("idle=false user=root ok") == "idle=<*> user=<*> ok"
    assert masker.mask("Rooted tree, admins") == "Rooted tree, admins"


def test_tokenize_squeezes_whitespace_and_many_reuses_results(masker: Masker) -> None:
    assert masker.tokenize("  Invalid user  0101 from 5.188.10.180 ") == [
        "Invalid",
        "user",
        "<*>",
        "from",
        "<*>",
    ]
    lines = ["a 1", "b 2", "a 1"]
    out = masker.tokenize_many(lines)
    assert out == [["a", "<*>"], ["b", "<*>"], ["a", "<*>"]]
    assert out[0] is out[2]


def test_operator_rules_and_disabled_rules() -> None:
    custom = Masker(MaskingConfig(extra_token_rules=(("ticket", r"[A-Z]{2,}-\d+"),)))
    assert custom.mask("fixes OPS-1234 now") == "fixes <*> now"
    plain = Masker(MaskingConfig(disabled=frozenset({"hostname", "value_word"})))
    assert plain.mask("host ns.example.com user root") == "host ns.example.com user root"


def test_invalid_operator_rule_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="ticket"):
        Masker(MaskingConfig(extra_token_rules=(("ticket", r"([A-Z"),)))


def test_token_memo_is_bounded() -> None:
    small = Masker(MaskingConfig(cache_size=10))
    for i in range(50):
        assert small.mask(f"req{i}x id {i}") == f"req{i}x id <*>"
    assert len(small._cache) <= 10
