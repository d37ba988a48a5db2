"""The release workflow as README tells it, through the CLI against a live server and then on
the embedded store: push prompt files, gate, label, resolve, roll back."""

from __future__ import annotations

import json

import httpx

from tests.server_process import cli, free_port, start_server
from tests.test_gate_api import BASE, _sh_post, eval_run, ship

V1 = "Answer {question}. Always quote the exact policy section.\n"
V2 = "Answer {question}. Keep answers short.\n"


def prompt_file(*versions: tuple[str, str]) -> str:
    items = "".join(f"  - version: {v}\n    template: {json.dumps(text)}\n" for v, text in versions)
    return f"prompt: answer\nversions:\n{items}"


def test_push_gate_label_resolve_and_roll_back_through_the_cli(tmp_path):
    data, repo = tmp_path / "data", tmp_path / "prompts"
    repo.mkdir()
    (repo / "answer.yaml").write_text(prompt_file(("v1", V1), ("v2", V2)))
    key = cli(data, "keys", "create", "--project", "shop", "--scopes", "ingest,read,admin")
    assert key.returncode == 0, key.stderr
    key_text = key.stdout.strip()
    port = free_port()
    url = ["--url", f"http://127.0.0.1:{port}", "--key", key_text]
    server = start_server(data, port)
    try:
        dry = cli(data, "prompts", "push", str(repo), "--dry-run", *url)
        assert dry.returncode == 0 and "would add" in dry.stdout, dry.stderr
        first = cli(data, "prompts", "push", str(repo), *url)
        assert first.returncode == 0, first.stderr
        assert "new        answer@v1" in first.stdout and "new        answer@v2" in first.stdout
        assert "-Answer {question}. Always quote" in first.stdout  # v2's diff against v1
        assert "+Answer {question}. Keep answers short." in first.stdout
        again = cli(data, "prompts", "push", str(repo), *url)
        assert again.returncode == 0 and "new " not in again.stdout
        assert "0 new version(s) registered" in again.stderr
        (repo / "answer.yaml").write_text(prompt_file(("v1", V1 + "edited"), ("v2", V2)))
        edited = cli(data, "prompts", "push", str(repo), *url)
        assert edited.returncode == 1 and "conflict   answer@v1" in edited.stdout
        (repo / "answer.yaml").write_text(prompt_file(("v1", V1), ("v2", V2)))

        refused = cli(data, "prompts", "label", "answer", "production", "v1", *url)
        assert refused.returncode == 1 and "protected" in refused.stderr
        forced = cli(
            data, "prompts", "label", "answer", "production", "v1", "--force",
            "--reason", "initial release", *url,
        )  # fmt: skip
        assert forced.returncode == 0 and "- → v1 (forced)" in forced.stdout, forced.stderr

        post = _sh_post(port, key_text)
        ship(post, eval_run("r1", BASE))
        ship(post, eval_run("r2", BASE, prompt_version="v2", offset=1000))
        gate = cli(data, "gate", "--app", "support-bot", "--baseline", "v1", "--candidate", "v2",
                   *url)  # fmt: skip
        assert gate.returncode == 0, gate.stdout + gate.stderr
        stale = cli(data, "prompts", "label", "answer", "production", "v2", "--expect", "v0", *url)
        assert stale.returncode == 1 and "409" in stale.stderr and "'v1'" in stale.stderr
        moved = cli(data, "prompts", "label", "answer", "production", "v2", "--expect", "v1", *url)
        assert moved.returncode == 0 and "v1 → v2" in moved.stdout, moved.stderr

        def served() -> str:
            r = httpx.get(
                f"http://127.0.0.1:{port}/v1/prompts/answer/resolve?label=production",
                headers={"Authorization": f"Bearer {key_text}"},
            )
            return str(r.json()["version"])

        assert served() == "v2"
        back = cli(data, "prompts", "rollback", "answer", "production", *url)
        assert back.returncode == 0 and "v2 → v1" in back.stdout, back.stderr
        assert served() == "v1"
        hist = cli(data, "prompts", "history", "answer", *url)
        lines = hist.stdout.splitlines()
        assert len(lines) == 3, hist.stdout
        assert "- → v1" in lines[0] and "forced" in lines[0] and "initial release" in lines[0]
        assert "v1 → v2" in lines[1] and "v2 → v1" in lines[2] and "rollback" in lines[2]

        plan = tmp_path / "rollout.yaml"
        plan.write_text(
            "prompt_id: answer\nlabel: production\ncandidate: v2\nsteps: [5, 50, 100]\n"
            "guardrails:\n  - {metric: response.error, direction: lower_is_better}\n"
        )
        started = cli(data, "rollouts", "start", str(plan), *url)
        assert started.returncode == 0 and "running     5 %" in started.stdout, started.stderr
        rid = started.stdout.split()[0]
        assert rid in cli(data, "rollouts", "list", *url).stdout
        paused = cli(data, "rollouts", "pause", rid, "--note", "looking", *url)
        assert "paused" in paused.stdout
        shown = json.loads(cli(data, "rollouts", "show", rid, *url).stdout)
        assert [e["action"] for e in shown["log"]] == ["start", "pause"]
        promoted = cli(data, "rollouts", "promote", rid, *url)
        assert promoted.returncode == 0 and "completed" in promoted.stdout
        assert served() == "v2"
        plan.write_text("prompt_id: answer\nlabel: production\ncandidate: v1\nsteps: [5, 1]\n")
        bad = cli(data, "rollouts", "start", str(plan), *url)
        assert bad.returncode == 1 and "guardrails: Field required" in bad.stderr
        assert "line 4: steps: Value error, steps must increase" in bad.stderr
        plan.write_text("prompt_id: answer\nlabel: production\nvariants: {v2: 50, v1: 50}\n")
        ab = cli(data, "rollouts", "start", str(plan), *url)  # a file with variants: an A/B
        assert ab.returncode == 0 and "experiment  answer production: v2 50 %, v1 50 %" in ab.stdout
        ended = cli(data, "rollouts", "abort", ab.stdout.split()[0], *url)
        assert ended.returncode == 0 and "aborted" in ended.stdout, ended.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    local = cli(data, "prompts", "history", "answer", "--project", "shop")
    assert local.returncode == 0 and local.stdout.splitlines()[1:3] == lines[1:]
    assert f"v1 → v2  key rollout-job  rollout {rid} completed" in local.stdout.splitlines()[3]
    pushed = cli(data, "prompts", "push", str(repo), "--project", "shop")
    assert pushed.returncode == 0 and "unchanged  answer@v2" in pushed.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.yaml").write_text("prompt: answer\nprompt: other\nversions: []\n")
    broken = cli(data, "prompts", "push", str(bad), "--project", "shop")
    assert broken.returncode == 1 and "x.yaml:2: prompt: key repeated" in broken.stderr
