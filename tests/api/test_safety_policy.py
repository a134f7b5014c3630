"""The operator's safety policy on what a customer key may ask, through the real API and
the openai SDK: each refusal is a 400 naming the parameter and the policy setting, and
changes nothing; admin keys (the operator) may ask what the policy keeps from customers."""

from __future__ import annotations

import openai
import pytest

from tests.api.helpers import BASE_MODEL, GOOD, audit_actions, auth

API_ENV = {"GUARDTUNE_MAX_FLAGGED_FRACTION": "0.3", "GUARDTUNE_KL_WEIGHT_MIN": "0.2"}


@pytest.fixture(scope="module")
def customer(sdk, tenant):
    """A customer key's client and its uploaded training file."""
    client = sdk(tenant)
    return client, client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")


@pytest.mark.parametrize(
    ("safety", "param", "policy"),
    [
        ({"mode": "none"}, "safety.mode", "GUARDTUNE_ALLOWED_MODES=adaptive,constant"),
        ({"kl_weight": {"min": 0.1, "max": 0.9}}, "safety.kl_weight.min", "GUARDTUNE_KL_WEIGHT_MIN=0.2"),
        ({"kl_weight": {"min": 0.2, "max": 0.5}}, "safety.kl_weight.max", "GUARDTUNE_KL_WEIGHT_MAX=0.9"),
        ({"mode": "constant", "constant_kl_weight": 0.1}, "safety.constant_kl_weight", "GUARDTUNE_KL_WEIGHT_MIN=0.2"),
        ({"max_flagged_fraction": 0.5}, "safety.max_flagged_fraction", "GUARDTUNE_MAX_FLAGGED_FRACTION=0.3"),
        ({"risk_weighting": "batch"}, "safety.risk_weighting", "GUARDTUNE_RISK_WEIGHTING=example"),
        ({"reference": "exact"}, "safety.reference", "GUARDTUNE_REFERENCE=cached"),
    ],
)
def test_a_customer_key_cannot_weaken_the_defence(customer, tenant, unchanged, safety, param, policy):
    client, training_file = customer
    with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id, extra_body={"safety": safety})
    assert err.value.status_code == 400
    assert err.value.param == param
    assert err.value.code == "safety_policy"
    assert err.value.type == "invalid_request_error"
    assert policy in err.value.message
    assert "safety policy" in err.value.message
    assert "<" not in err.value.message  # a refused value is quoted as its string, not an enum's repr


def test_a_customer_key_may_tighten_toward_safety(customer):
    client, training_file = customer
    job = client.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=training_file.id,
        extra_body={"safety": {"kl_weight": {"min": 0.5, "max": 1.0}, "max_flagged_fraction": 0.1}},
    )
    safety = job.model_extra["safety"]
    assert safety["kl_weight"] == {"min": 0.5, "max": 1.0}
    assert safety["max_flagged_fraction"] == 0.1
    default = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=training_file.id)
    # defaults: the operator's bounds, the operator's flagged share, a constant weight at least the floor
    assert default.model_extra["safety"]["kl_weight"] == {"min": 0.2, "max": 0.9}
    assert default.model_extra["safety"]["max_flagged_fraction"] == 0.3
    assert default.model_extra["safety"]["risk_weighting"] == "example"
    assert default.model_extra["safety"]["reference"] == "cached"
    constant = client.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=training_file.id, extra_body={"safety": {"mode": "constant"}}
    )
    assert constant.model_extra["safety"]["constant_kl_weight"] == 0.5


def test_an_admin_key_may_run_the_ablations(sdk, new_tenant):
    admin = sdk(new_tenant("admin"))
    f = admin.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    job = admin.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=f.id,
        extra_body={
            "safety": {
                "mode": "none",
                "kl_weight": {"min": 0.0, "max": 0.5},
                "risk_weighting": "batch",
                "reference": "exact",
            }
        },
    )
    safety = job.model_extra["safety"]
    assert (safety["mode"], safety["kl_weight"], safety["risk_weighting"]) == (
        "none",
        {"min": 0.0, "max": 0.5},
        "batch",
    )
    assert safety["reference"] == "exact"


def test_estimator_judge_without_an_endpoint_is_a_clear_400(customer, tenant, unchanged):
    client, training_file = customer
    for estimator in ("judge", "both"):
        with unchanged(tenant), pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(
                model=BASE_MODEL, training_file=training_file.id, extra_body={"safety": {"estimator": estimator}}
            )
        assert (err.value.param, err.value.code) == ("safety.estimator", "judge_unavailable")
        assert "neither GUARDTUNE_JUDGE_BASE_URL nor GUARDTUNE_JUDGE_LOCAL_MODEL" in err.value.message
        assert "'probe'" in err.value.message
        assert f"safety.estimator '{estimator}' needs the judge" in err.value.message


def test_an_admin_may_open_a_mode_to_one_organization(http, sdk, new_tenant, unchanged, db):
    admin, customer = new_tenant("admin"), new_tenant()
    client = sdk(customer)
    f = client.files.create(file=("train.jsonl", GOOD), purpose="fine-tune")
    r = http.patch(
        f"/v1/admin/organizations/{customer.org_id}", headers=auth(admin), json={"allowed_modes": ["adaptive", "none"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["allowed_modes"] == ["adaptive", "none"], r.text
    assert audit_actions(db, customer.org_id)[-1] == "org.update"
    job = client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"mode": "none"}})
    assert job.model_extra["safety"]["mode"] == "none"
    with (
        unchanged(customer),
        pytest.raises(openai.BadRequestError) as err,
    ):  # the organization's list replaces the default
        client.fine_tuning.jobs.create(
            model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"mode": "constant"}}
        )
    assert err.value.param == "safety.mode"
    assert "the organization's allowed_modes=adaptive,none" in err.value.message

    http.patch(f"/v1/admin/organizations/{customer.org_id}", headers=auth(admin), json={"allowed_modes": None})
    with unchanged(customer), pytest.raises(openai.BadRequestError) as err:  # back to the deployment's default
        client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=f.id, extra_body={"safety": {"mode": "none"}})
    assert "GUARDTUNE_ALLOWED_MODES=adaptive,constant" in err.value.message
    bad = http.patch(f"/v1/admin/organizations/{customer.org_id}", headers=auth(admin), json={"allowed_modes": ["off"]})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"].startswith("allowed_modes")
