"""evaluators.yaml: validation naming line and field, versions, apply through API and CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from promptblame.analysis.scoring.catalog import apply, listing
from promptblame.analysis.scoring.config import load_yaml, validate
from promptblame.api.auth import new_key
from promptblame.errors import ConfigInvalid
from promptblame.settings import Settings
from tests.helpers import auth
from tests.server_process import cli, free_port, start_server

GOOD = """\
evaluators:
  - name: json_ok
    kind: json_valid
    sample_rate: 0.5
    filter:
      app: support-bot
  - name: no_refusal
    kind: refusal
"""


def write(tmp_path: Path, text: str, name: str = "evaluators.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_a_valid_file_loads_with_defaults(tmp_path):
    specs = load_yaml(write(tmp_path, GOOD))
    assert [s.name for s in specs] == ["json_ok", "no_refusal"]
    assert specs[0].filter.app == ["support-bot"] and specs[0].sample_rate == 0.5
    assert specs[1].sample_rate == 1.0 and specs[1].enabled


def test_errors_name_the_line_and_the_field(tmp_path):
    text = """\
evaluators:
  - name: ok
    kind: json_valid
  - name: bad_regex
    kind: regex
    params:
      pattern: "(unclosed"
  - name: typo
    kind: refusal
    sample_rat: 0.1
  - name: ok
    kind: nonsense
"""
    with pytest.raises(ConfigInvalid) as err:
        load_yaml(write(tmp_path, text))
    problems = {(p.field, p.line) for p in err.value.problems}
    assert ("evaluators.1.params.pattern", 7) in problems
    assert ("evaluators.2.sample_rat", 10) in problems
    assert ("evaluators.3.kind", 12) in problems
    assert any("not a valid regular expression" in p.message for p in err.value.problems)


def test_duplicate_names_and_broken_yaml_are_refused(tmp_path):
    with pytest.raises(ConfigInvalid, match="defined twice"):
        validate(
            {"evaluators": [{"name": "a", "kind": "refusal"}, {"name": "a", "kind": "refusal"}]}
        )
    with pytest.raises(ConfigInvalid, match="line 2"):
        load_yaml(write(tmp_path, "evaluators:\n  - name: [unclosed\n"))


def test_a_dataset_file_is_read_into_the_definition(tmp_path):
    (tmp_path / "cases.jsonl").write_text('{"case_id": "c1", "expected_output": "Paris"}\n')
    text = (
        "evaluators:\n  - name: em\n    kind: exact_match\n"
        "    params:\n      dataset_file: cases.jsonl\n"
    )
    spec = load_yaml(write(tmp_path, text))[0]
    assert spec.params["dataset"] == {"c1": "Paris"}
    (tmp_path / "cases.jsonl").write_text("not json\n")
    with pytest.raises(ConfigInvalid, match=r"cases\.jsonl line 1"):
        load_yaml(write(tmp_path, text))


def spec_doc(**over: Any) -> dict[str, Any]:
    base = {"name": "fmt", "kind": "regex", "params": {"pattern": "^OK"}}
    return {"evaluators": [{**base, **over}]}


def test_changing_params_makes_a_new_version_other_settings_do_not_and_reverting_reuses(
    embedded_store,
):
    s = Settings()
    versions = []
    for doc in (
        spec_doc(),
        spec_doc(sample_rate=0.1, filter={"route": ["a"]}),  # settings only
        spec_doc(params={"pattern": "^DONE"}),  # params: v2
        spec_doc(),  # back to v1's definition
    ):
        changes = apply(embedded_store, "p", validate(doc), s)
        versions.append((changes[0].action, changes[0].version))
    assert versions == [("create", 1), ("update", 1), ("new_version", 2), ("new_version", 1)]
    (ev,) = listing(embedded_store, "p", s)
    assert ev["source"] == "evaluator:fmt@1" and len(ev["versions"]) == 2
    # a file without it removes it; putting it back restores its version
    assert apply(embedded_store, "p", [], s)[0].action == "remove"
    assert listing(embedded_store, "p", s) == []
    assert apply(embedded_store, "p", validate(spec_doc()), s)[0].version == 1


def test_dry_run_changes_nothing(embedded_store):
    changes = apply(embedded_store, "p", validate(spec_doc()), Settings(), dry_run=True)
    assert changes[0].action == "create"
    assert listing(embedded_store, "p", Settings()) == []


def test_a_judge_without_an_endpoint_is_refused_whole_before_anything_is_written(embedded_store):
    doc = {
        "evaluators": [
            {"name": "fmt", "kind": "json_valid"},
            {"name": "helpful", "kind": "llm_judge", "params": {"rubric": "Helpful?"}},
        ]
    }
    with pytest.raises(ConfigInvalid, match="PROMPTBLAME_JUDGE_BASE_URL"):
        apply(embedded_store, "p", validate(doc), Settings())
    assert listing(embedded_store, "p", Settings()) == []
    s = Settings(judge_base_url="http://127.0.0.1:9/v1", judge_model="gpt-4o-mini")
    apply(embedded_store, "p", validate(doc), s)
    sources = {e["name"]: e["source"] for e in listing(embedded_store, "p", s)}
    assert sources["fmt"] == "evaluator:fmt@1"
    assert sources["helpful"].startswith("evaluator:helpful@1/gpt-4o-mini/r")


def admin_key(store: Any, project: str = "acme") -> str:
    plaintext, record = new_key(project, ["ingest", "read", "admin"])
    store.put_api_key(record)
    return plaintext


def test_the_api_applies_lists_and_needs_the_admin_scope(client, key, embedded_store):
    doc = spec_doc()
    r = client.put("/v1/evaluators", json=doc, headers=auth(key))
    assert r.status_code == 403
    admin = admin_key(embedded_store)
    r = client.put("/v1/evaluators", json=doc, params={"dry_run": True}, headers=auth(admin))
    assert r.status_code == 200 and r.json()["changes"][0]["action"] == "create"
    assert client.get("/v1/evaluators", headers=auth(key)).json() == {"evaluators": []}
    assert client.put("/v1/evaluators", json=doc, headers=auth(admin)).status_code == 200
    (ev,) = client.get("/v1/evaluators", headers=auth(key)).json()["evaluators"]
    assert ev["source"] == "evaluator:fmt@1" and ev["params"] == {
        "pattern": "^OK",
        "must_match": True,
        "flags": [],
        "field": "output",
    }
    bad = client.put("/v1/evaluators", json=spec_doc(params={"pattern": "("}), headers=auth(admin))
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "evaluators.0.params.pattern"
    # another project sees none of it
    other = admin_key(embedded_store, "other")
    assert client.get("/v1/evaluators", headers=auth(other)).json() == {"evaluators": []}


def test_the_cli_applies_a_file_to_the_store_and_shows_the_diff(tmp_path):
    data, path = tmp_path / "data", write(tmp_path, GOOD)
    # only serve, migrate, keys create and demo create a store; other commands refuse a
    # directory without one (test_cli.py)
    assert cli(data, "migrate").returncode == 0
    r = cli(data, "evaluators", "apply", str(path), "--project", "p", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "create       json_ok@1" in r.stdout and "2 change(s) would apply" in r.stderr
    assert cli(data, "evaluators", "apply", str(path), "--project", "p").returncode == 0
    r = cli(data, "evaluators", "list", "--project", "p")
    assert [e["name"] for e in json.loads(r.stdout)] == ["json_ok", "no_refusal"]
    bad = write(tmp_path, "evaluators:\n  - name: x\n    kind: regex\n", "bad.yaml")
    r = cli(data, "evaluators", "apply", str(bad), "--project", "p")
    assert r.returncode == 1 and "line 2: evaluators.0.params.pattern: Field required" in r.stderr


def test_while_serve_holds_the_data_the_cli_applies_through_its_api(tmp_path):
    data, path = tmp_path / "data", write(tmp_path, GOOD)
    created = cli(data, "keys", "create", "--project", "p", "--scopes", "read,admin")
    key = created.stdout.strip()
    port = free_port()
    server = start_server(data, port)
    try:
        r = cli(data, "evaluators", "apply", str(path), "--project", "p")
        assert r.returncode == 1 and "in use by pid" in r.stderr and "--url" in r.stderr
        url = f"http://127.0.0.1:{port}"
        r = cli(data, "evaluators", "apply", str(path), "--url", url, "--key", key)
        assert r.returncode == 0, r.stderr
        assert "create       no_refusal@1" in r.stdout
        r = cli(data, "evaluators", "list", "--url", url, "--key", key)
        assert [e["name"] for e in json.loads(r.stdout)] == ["json_ok", "no_refusal"]
        r = cli(data, "score")
        assert r.returncode == 1 and "stop `promptblame serve` first" in r.stderr
    finally:
        server.terminate()
        server.wait(30)
