"""``/dashboard`` and ``/dashboard/data.json`` on an app without a broker (the learner's record
handed in as the stats feed would), and ``POST /v1/rank`` with ``explain`` on both of its
paths (the fast ASGI layer and the FastAPI route)."""

from __future__ import annotations

import json
import re

import pytest

from bandit.features import hash_user
from streams.schemas import LoopStats
from tests.service.api.api_helpers import memory_app
from tests.service.dashboard.dash_helpers import pool, stats_record, traffic, trained_policy

USER_ID = "secret-user-7"
USER = {"user_id": USER_ID, "age": 20, "gender": "f"}


@pytest.fixture(scope="module")
def trained():
    return trained_policy(pool())


@pytest.mark.parametrize("fast_rank", [True, False])
def test_rank_explains_on_request_only(tmp_path, trained, fast_rank):
    with memory_app(tmp_path, pool(), fast_rank=fast_rank) as (client, _, rt):
        rt.policy.swap(trained)
        body = {"product_id": "scarf-1", "channel": "ad_headline", "user": USER}
        plain = client.post("/v1/rank", json=body)
        assert plain.status_code == 200 and "explain" not in plain.json()
        r = client.post("/v1/rank", json={**body, "explain": True})
        assert r.status_code == 200
        answer = r.json()
        why = answer["explain"]
        assert why["supported"] is True and why["model"] == "refit"
        assert why["policy_version"] == trained.version == answer["policy_version"]
        assert 0 < len(why["contributions"]) <= 5
        weights = trained.weights()
        for c in why["contributions"]:
            token = "^".join(x for x in (c["namespace"], c["feature"], c["action"]) if x)
            assert weights[token] == pytest.approx(c["weight"])
        probs = {p["variant_id"]: p["probability"] for p in why["probabilities"]}
        assert set(probs) == {v.variant_id for v in pool().variants}
        assert sum(probs.values()) == pytest.approx(1.0)
        assert probs[answer["variant_id"]] == pytest.approx(answer["pscore"])
        # no raw or hashed shopper id anywhere in the answer
        hashed = hash_user(USER_ID, rt.hash_key)
        assert "secret-user" not in r.text and hashed not in r.text
        bad = client.post("/v1/rank", json={**body, "explain": "maybe"})
        assert bad.status_code == 422 and bad.json()["field"] == "body.explain"


def test_vw_answers_probabilities_only(tmp_path):
    with memory_app(tmp_path, pool(), settings={"bandit_preset": "vw-bag"}) as (client, _, _rt):
        body = {"product_id": "scarf-1", "channel": "ad_headline", "user": USER, "explain": True}
        why = client.post("/v1/rank", json=body).json()["explain"]
        assert why["supported"] is False and why["contributions"] == []
        assert why["model"] == "vw" and why["note"] and len(why["probabilities"]) == 3


def _no_outside_assets(page: str) -> None:
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert "@import" not in page and "url(" not in page
    # the SVG namespace is the only URL the page names
    assert set(re.findall(r"https?://[^\"' )]+", page)) <= {"http://www.w3.org/2000/svg"}


def test_dashboard_shows_the_learner_figures(tmp_path, trained):
    events = list(traffic(trained, pool(), 240, seed=5, step_s=15))
    record = stats_record(events, trained, {"lag": 12, "pending": 3})
    with memory_app(tmp_path, pool()) as (client, _, rt):
        rt.policy.swap(trained)
        empty = client.get("/dashboard/data.json").json()
        assert empty["source"] == "ranker-feed" and empty["totals"].get("decisions") is None
        client.app.state.loop_stats.apply(record)  # type: ignore[attr-defined]
        older = LoopStats(created_at=record.created_at.replace(year=2020), figures={})
        client.app.state.loop_stats.apply(older)  # type: ignore[attr-defined]
        data = client.get("/dashboard/data.json").json()
        assert data["source"] == "learner"
        assert data["totals"]["decisions"] == 240
        assert len(data["series"]) == 60  # 240 decisions 15 s apart: one hour of minutes
        assert data["ope"]["rounds"] == 240
        board = data["leaderboard"][0]
        assert board["product_id"] == "scarf-1" and board["decisions"] == 240
        assert sum(v["share"] for v in board["variants"]) == pytest.approx(1.0)
        assert {v["text"] for v in board["variants"]} >= {"限时8折 羊毛围巾"}
        hm = data["heatmap"]
        assert hm["source"] == "model" and hm["rows"] and hm["cols"]
        weights = trained.weights()
        for i, row in enumerate(hm["rows"]):
            for j, col in enumerate(hm["cols"]):
                assert hm["values"][i][j] == weights.get(f"U^{row}^t={col}")
        assert data["health"]["learner"] == {"lag": 12, "pending": 3}
        assert {v["kind"] for v in data["versions"]} == {"bandit", "generator"}
        page = client.get("/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        _no_outside_assets(page.text)
        start = page.text.index("const INITIAL = ") + len("const INITIAL = ")
        embedded = json.JSONDecoder().raw_decode(page.text[start:])[0]
        assert embedded["totals"]["decisions"] == 240
        assert "限时8折 羊毛围巾" in page.text


def test_embedded_data_cannot_close_the_script(tmp_path):
    from service.dashboard.page import script_json

    text = script_json({"x": "</script><script>alert(1)</script>\u2028"})
    assert "</" not in text and "<script" not in text
    assert json.loads(text) == {"x": "</script><script>alert(1)</script>\u2028"}
