"""Client labels: User-Agent -> a label from a bounded, safe set."""

from __future__ import annotations

import pytest

from gateway import config
from gateway.config import SettingsError
from gateway.telemetry.clients import (
    LABEL_PATTERN,
    OTHER,
    UNKNOWN,
    ClientLabels,
    Rule,
    parse_rule,
    product_label,
)


@pytest.mark.parametrize(
    ("user_agent", "label"),
    [
        ("python-glanceclient/4.1.0 keystoneauth1/5.1.2 python-requests/2.31.0 CPython/3.11.4", "python-glanceclient"),
        ("openstacksdk/1.0.1 keystoneauth1/5.1.2 python-requests/2.31.0 CPython/3.10.12", "openstacksdk"),
        ("python-openstackclient keystoneauth1/5.1.2", "python-openstackclient"),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36", "mozilla"),
        ("HashiCorp Terraform/1.5.7 (+https://www.terraform.io)", "hashicorp"),
        ("curl/8.4.0", "curl"),
        ("  Go-http-client/1.1", "go-http-client"),
        ("huaweicloud-usdk-python/3.1.60", "huaweicloud-usdk-python"),
        ("Python-GlanceClient", "python-glanceclient"),
        ("a;b", "a"),
        ("x,y/1", "x"),
        ("", UNKNOWN),
        ("   ", UNKNOWN),
        ("/1.0", UNKNOWN),
        ("(compatible; bot)", UNKNOWN),
        ("___/1", UNKNOWN),
        ("<script>alert(1)</script>", "script_alert"),
        ('evil"} 1\nfake_metric{a="b', "evil"),
        ("z" * 48, "z" * 48),
        ("z" * 49, OTHER),
        ("Ünïcödé-client/1", "n_c_d_-client"),
        # What an image id or a token looks like is never a label.
        ("0b5e7a8c-2f6d-4c1e-9a7b-3d2e1f0a9b8c/1.0", OTHER),
        ("client-0b5e7a8c2f6d/1.0", OTHER),
        ("gAAAAABl3x9Qk2vT8yZp1nR4sW6uX0aB3cD5eF7gH9iJ1kL3mN5oP7qR9sT1uV3wX5yZ7", OTHER),
        ("build-20240512/1", OTHER),
        ("python-glanceclient-2024/4", "python-glanceclient-2024"),
        ("deadbeef/1", OTHER),
    ],
)
def test_the_label_is_the_first_product_token_made_safe(user_agent: str, label: str) -> None:
    assert product_label(user_agent) == label
    assert label in (UNKNOWN, OTHER) or LABEL_PATTERN.fullmatch(label)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("terraform-provider-huaweicloud=terraform", Rule("terraform-provider-huaweicloud", "terraform")),
        ("  Ansible = ansible", None),
        ("Ansible=ansible", Rule("ansible", "ansible")),
        ("key=value=kv", Rule("key=value", "kv")),
        ("sdk=huaweicloud-sdk_v3.x", Rule("sdk", "huaweicloud-sdk_v3.x")),
    ],
)
def test_rules_read_substring_equals_label(text: str, rule: Rule | None) -> None:
    if rule is None:
        with pytest.raises(ValueError, match="the label is not"):
            parse_rule(text)
    else:
        assert parse_rule(text) == rule


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("terraform", "is not SUBSTRING=LABEL"),
        ("=terraform", "is not SUBSTRING=LABEL"),
        ("   =terraform", "is not SUBSTRING=LABEL"),
        ("terraform=", "the label is not"),
        ("terraform=Terraform", "the label is not"),
        ("terraform=-tf", "the label is not"),
        ("terraform=" + "t" * 49, "the label is not"),
        ("terraform=tf<script>", "the label is not"),
    ],
)
def test_bad_rules_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rule(text)


def test_the_first_matching_rule_wins_in_any_letter_case() -> None:
    labels = ClientLabels([parse_rule("terraform-provider-huaweicloud=terraform"), parse_rule("terraform=other-tf")])
    assert labels.label("HashiCorp Terraform/1.5.7 Terraform-Provider-HuaweiCloud/1.60") == "terraform"
    assert labels.label("HashiCorp Terraform/1.5.7") == "other-tf"
    assert labels.label("curl/8") == "curl"


def test_only_the_first_cap_product_tokens_become_labels() -> None:
    labels = ClientLabels([parse_rule("special=special")], cap=3)
    seen = [labels.label(f"client-{n}/1.0") for n in range(10)]
    assert seen == ["client-0", "client-1", "client-2"] + [OTHER] * 7
    assert labels.label("client-1/2.0 extra") == "client-1"
    # Configured labels and the reserved ones are not counted against the cap.
    assert labels.label("client-99 special/1") == "special"
    assert labels.label(None) == UNKNOWN
    assert labels.label("") == UNKNOWN


def test_id_like_tokens_do_not_take_a_place_under_the_cap() -> None:
    labels = ClientLabels(cap=1)
    assert labels.label("0b5e7a8c-2f6d-4c1e-9a7b-3d2e1f0a9b8c/1") == OTHER
    assert labels.label("real-client/1") == "real-client"


def test_a_cap_of_zero_keeps_only_configured_labels() -> None:
    labels = ClientLabels([parse_rule("glance=glance")], cap=0)
    assert [labels.label(ua) for ua in ("python-glanceclient/4", "curl/8", None)] == ["glance", OTHER, UNKNOWN]


def test_thousands_of_user_agents_give_at_most_cap_plus_reserved_labels() -> None:
    labels = ClientLabels([parse_rule("mapped=mapped")], cap=20)
    produced = {labels.label(f"ua-{n}-{'x' * (n % 300)}/{n} (token {n})") for n in range(5000)}
    produced |= {labels.label(f"mapped {n}") for n in range(100)}
    produced |= {labels.label(text) for text in ("", "(x)", None)}
    assert len(produced) == 20 + 3
    assert {OTHER, UNKNOWN, "mapped"} <= produced


def test_reconfigure_keeps_admitted_labels_and_applies_new_rules() -> None:
    labels = ClientLabels(cap=1)
    assert labels.label("first/1") == "first"
    assert labels.label("second/1") == OTHER
    labels.reconfigure([parse_rule("second=second")], cap=1)
    assert labels.label("second/1") == "second"
    assert labels.label("first/1") == "first"
    assert labels.label("third/1") == OTHER


def test_the_settings_validate_the_rules_and_read_them_from_the_environment() -> None:
    settings = config.load(
        None, environ={"IMS_GATEWAY_METRICS_CLIENT_LABEL_MAP": "terraform=tf, ansible=ansible", "IMS_GATEWAY_METRICS_CLIENT_LABEL_CAP": "7"}
    )
    assert settings.metrics.client_label_map == ("terraform=tf", "ansible=ansible")
    assert settings.metrics.client_label_cap == 7
    with pytest.raises(SettingsError) as raised:
        config.build({"metrics": {"client_label_map": ["ok=ok", "Bad=Label"], "client_label_cap": -1}})
    assert raised.value.problems == [
        "metrics.client_label_cap: -1 is not allowed: expected a whole number >= 0",
        "metrics.client_label_map: ['ok=ok', 'Bad=Label'] is not allowed: expected SUBSTRING=LABEL rules, "
        "but in 'Bad=Label' the label is not 1-48 of a-z 0-9 . _ - starting with a letter or digit",
    ]
