"""The config file: parsing, key-and-line errors, environment forms, stage selection, paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from services.builder.pipeline import ConfigError, PipelineConfig, load_config, parse_config
from shared.events.versions import DeploySpec
from shared.settings import Settings

FULL = """\
integration:
  image: fornax/busybox:latest
  environment:
    - GOPATH=/go
    - EQ=a=b
  commands:
    - echo hi
    - |
      echo multi
      echo line
  services:
    mongo:
      image: fornax/busybox:latest
      commands: ["while true; do echo pong | nc -l -p 27017; done"]
    cache:
      image: fornax/busybox:latest
pre_build:
  image: fornax/busybox:latest
  environment: {STEP_NAME: pre, N: 3, FLAG: true, EMPTY: null}
  commands: [echo $STEP_NAME > /root/newfile]
  outputs: [/root/newfile, dist/app, /workspace/gen]
build:
  dockerfile_path: docker/Dockerfile
post_build:
  image: fornax/busybox:latest
  commands: [echo done]
  timeout: 30
deploy:
  - web:
      cluster: prod
      partition: shop
  - worker:
      cluster: staging
resources: {memory: 256, cpu: 512}
"""


def err(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text))
    return info.value


def test_full_config_parses() -> None:
    c = parse_config(FULL)
    assert c.source == "fornax.yml"
    assert c.integration is not None and c.integration.commands[1] == "echo multi\necho line\n"
    assert c.integration.environment == {"GOPATH": "/go", "EQ": "a=b"}
    assert list(c.integration.services) == ["mongo", "cache"]
    assert c.integration.services["cache"].commands is None
    assert c.pre_build is not None and c.pre_build.outputs == ["/root/newfile", "dist/app", "/workspace/gen"]
    assert c.deploy == [DeploySpec(application="web", cluster="prod", partition="shop"),
                        DeploySpec(application="worker", cluster="staging", partition=None)]
    assert c.timeout("post_build", 1800) == 30 and c.timeout("integration", 1800) == 1800


def test_environment_list_and_mapping() -> None:
    c = parse_config(FULL)
    assert c.pre_build is not None
    assert c.pre_build.environment == {"STEP_NAME": "pre", "N": "3", "FLAG": "true", "EMPTY": ""}


@pytest.mark.parametrize(("text", "expected"), [
    # a missing required key points at its parent's line
    ("""\
     integration:
       image: x
       commands: [a]
       services:
         mongo:
           commands: [run]
     """, "fornax.yml line 5: integration.services.mongo.image: field required"),
    ("""\
     integration:
       image: x
       commands: []
     """, "fornax.yml line 3: integration.commands: must not be empty"),
    ("""\
     pre_build:
       image: x
       commands:
     """, "fornax.yml line 3: pre_build.commands: must not be empty"),
    # an unknown key (a typo) is reported before the "missing" key it explains
    ("""\
     integration:
       image: x
       comands: [a]
     """, "fornax.yml line 3: integration.comands: unknown key"),
    ("""\
     build:
       dockerfile_path: Dockerfile
     volumes: [/x]
     """, "fornax.yml line 3: volumes: unknown key"),
    ("""\
     integration:
       image: 3
       commands: [a]
     """, "fornax.yml line 2: integration.image: input should be a valid string"),
    ("""\
     integration:
       image: x
       commands:
         - echo ok
         - echo: oops
     """, "fornax.yml line 5: integration.commands[1]: input should be a valid string"),
    ("""\
     integration:
       image: x
       commands: [a]
       environment: [NOEQUALS]
     """, "fornax.yml line 4: integration.environment: items must be KEY=value"),
    ("""\
     integration:
       image: x
       commands: [a]
       timeout: -5
     """, "fornax.yml line 4: integration.timeout: input should be greater than 0"),
    ("""\
     deploy:
       - web:
           cluster: c
       - api:
           partition: p
     """, "fornax.yml line 4: deploy[1].api.cluster: field required"),
    ("""\
     deploy:
       - web: {cluster: c}
         api: {cluster: d}
     """, "fornax.yml line 2: deploy[0]: each deploy item maps exactly one application"),
    ("""\
     resources:
       memory: lots
     """, "fornax.yml line 2: resources.memory: input should be a valid integer"),
    ("""\
     integration:
       image: x
       commands: [a]
       services:
         Bad.Name: {image: x}
     """, "fornax.yml line 4: integration.services: service name 'Bad.Name' must be a DNS label"),
    ("""\
     integration:
       image: x
     integration:
       image: y
     """, "fornax.yml line 3: integration: duplicate key"),
    ("""\
     integration:
       image: [unclosed
     """, "fornax.yml line 3: invalid YAML"),
    ("- just\n- a list\n", "fornax.yml line 1: the top level must be a mapping"),
    ("integration: !!python/object:os.system x\n",
     "fornax.yml line 1: integration: could not determine a constructor"),
])
def test_bad_yaml_names_key_and_line(text: str, expected: str) -> None:
    message = str(err(text))
    assert message.startswith(expected), message


@pytest.mark.parametrize(("key", "value", "line"), [
    ("dockerfile_path", "../Dockerfile", 2),
    ("dockerfile_path", "sub/../../Dockerfile", 2),
    ("dockerfile_path", "/etc/Dockerfile", 2),
    ("context", "../..", 2),
])
def test_build_paths_escaping_the_workspace(key: str, value: str, line: int) -> None:
    message = str(err(f"build:\n  {key}: {value}\n"))
    assert message.startswith(f"fornax.yml line {line}: build.{key}: ") and "escapes the workspace" in message


@pytest.mark.parametrize("value", ["../x", "a/../../x", "."])
def test_outputs_escaping_the_workspace(value: str) -> None:
    message = str(err(f"pre_build:\n  image: x\n  commands: [a]\n  outputs:\n    - {value}\n"))
    assert message.startswith("fornax.yml line 4: pre_build.outputs: "), message


def test_paths_inside_the_workspace_are_normalised(tmp_path: Path) -> None:
    c = parse_config("build:\n  dockerfile_path: /workspace/sub/./Dockerfile\n")
    assert c.build.dockerfile_path == "sub/Dockerfile"
    (tmp_path / "sub").mkdir()
    dockerfile, context = c.dockerfile(tmp_path)
    assert dockerfile == tmp_path.resolve() / "sub" / "Dockerfile" and context == tmp_path.resolve() / "sub"
    c2 = parse_config("build:\n  dockerfile_path: sub/Dockerfile\n  context: .\n")
    assert c2.dockerfile(tmp_path)[1] == tmp_path.resolve()
    assert PipelineConfig().dockerfile(tmp_path) == (tmp_path.resolve() / "Dockerfile", tmp_path.resolve())


def test_dockerfile_symlink_out_of_the_workspace_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").symlink_to("/etc/hostname")
    with pytest.raises(ConfigError, match="escapes the workspace"):
        PipelineConfig().dockerfile(tmp_path)


def test_stage_selection_by_operations() -> None:
    full = parse_config(FULL)
    assert full.stages(None) == ["integration", "pre_build", "build", "push", "tag", "post_build", "deploy"]
    assert full.stages(["integration"]) == ["integration"]
    assert full.stages(["publish"]) == ["pre_build", "build", "push", "tag", "post_build"]
    assert full.stages(["integration", "publish"]) == ["integration", "pre_build", "build", "push", "tag",
                                                       "post_build"]
    assert full.stages(["deploy"]) == ["deploy"]
    plain = PipelineConfig()
    assert plain.stages(None) == ["build", "push", "tag"]
    assert plain.stages(["integration"]) == []
    ci = parse_config("integration: {image: x, commands: [a]}\n")
    assert ci.stages(None) == ["integration", "build", "push", "tag"]


def test_resources_and_demand() -> None:
    s = Settings(memory_for_container=128, cpu_for_container=128)
    full = parse_config(FULL)
    assert full.container_limits(s) == (256, 512)
    assert full.demand(s) == (256 * 3, 512 * 3)  # two services + the CI container
    small = parse_config("resources: {memory: 16}\n")
    assert small.container_limits(s) == (128, 128)  # never below the defaults
    assert PipelineConfig().demand(s) == (128, 128)


def test_load_config_file_order(tmp_path: Path) -> None:
    assert load_config(tmp_path).source is None
    (tmp_path / "caicloud.yml").write_text("build: {dockerfile_path: c/Dockerfile}\n")
    assert load_config(tmp_path).build.dockerfile_path == "c/Dockerfile"
    (tmp_path / "fornax.yml").write_text("build: {dockerfile_path: f/Dockerfile}\n")
    assert load_config(tmp_path).source == "fornax.yml"
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "pipeline.yml").write_text("build:\n  dockerfile_path: p/Dockerfile\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"^ci/pipeline.yml line 3: build.bogus: unknown key"):
        load_config(tmp_path, "ci/pipeline.yml")
    # a configured name that does not exist falls back to the usual names
    assert load_config(tmp_path, "missing.yml").source == "fornax.yml"
    with pytest.raises(ConfigError, match="escapes the workspace"):
        load_config(tmp_path, "../outside.yml")


def test_empty_file_is_the_default_config(tmp_path: Path) -> None:
    (tmp_path / "fornax.yml").write_text("# nothing yet\n")
    c = load_config(tmp_path)
    assert c.stages(None) == ["build", "push", "tag"] and c.source == "fornax.yml"


# -- The seed's spellings: `command`, `env`, `volumes` ---------------------------------------------
SEED_EXAMPLE = """\
integration:
  services:
    mongo:
      image: fornax/mongo:2.4
      command: mongod
  image: fornax/golang:1.5
  volumes:
    - ../go/src/github.com/gaocegege/the-big-brother-is-watching-you
  env:
    - GOPATH=/go
  commands:
    - pwd
    - ls
    - go get github.com/tools/godep
    - godep go build -race .
    - ../the-big-brother-is-watching-you --mongo-db-ip=mongo
"""


def test_seed_example_parses() -> None:
    c = parse_config(SEED_EXAMPLE, "caicloud.yml")
    assert c.integration is not None
    assert c.integration.services["mongo"].commands == ["mongod"]
    assert c.integration.environment == {"GOPATH": "/go"}
    assert c.integration.volumes == [(".", "/go/src/github.com/gaocegege/the-big-brother-is-watching-you", "rw")]
    assert len(c.integration.commands) == 5


def test_seed_spellings_on_every_step() -> None:
    c = parse_config("pre_build:\n  image: x\n  env: {A: 1}\n  command: echo hi\n"
                     "  volumes: ['src:/go/src/app:ro', '/workspace/lib:/opt/lib']\n")
    assert c.pre_build is not None
    assert c.pre_build.environment == {"A": "1"} and c.pre_build.commands == ["echo hi"]
    assert c.pre_build.volumes == [("src", "/go/src/app", "ro"), ("lib", "/opt/lib", "rw")]


@pytest.mark.parametrize(("text", "expected"), [
    ("integration:\n  image: x\n  commands: [a]\n  env: [A=1]\n  environment: [B=2]\n",
     "caicloud.yml line 4: integration.env: `env` and `environment` are the same key: give only one"),
    ("integration:\n  image: x\n  commands: [a]\n  command: b\n",
     "caicloud.yml line 4: integration.command: `command` and `commands` are the same key: give only one"),
    ("integration:\n  image: x\n  command: [a, b]\n",
     "caicloud.yml line 3: integration.command: `command` is one command (a string); use `commands` for a list"),
    ("integration:\n  image: x\n  commands: [a]\n  volumes:\n    - src:/go/src/app\n    - /etc:/etc\n",
     "caicloud.yml line 6: integration.volumes[1]: '/etc:/etc': only paths inside the workspace can be "
     "mounted ('/etc' is not)"),
    ("integration:\n  image: x\n  commands: [a]\n  volumes:\n    - /var/run/docker.sock:/var/run/docker.sock\n",
     "caicloud.yml line 5: integration.volumes[0]: '/var/run/docker.sock:/var/run/docker.sock': only paths "
     "inside the workspace can be mounted ('/var/run/docker.sock' is not)"),
    ("integration:\n  image: x\n  commands: [a]\n  volumes: ['../..:/x']\n",
     "caicloud.yml line 4: integration.volumes[0]: '../..:/x': only paths inside the workspace can be "
     "mounted ('../..' is not)"),
    ("integration:\n  image: x\n  commands: [a]\n  volumes: ['../../..']\n",
     "caicloud.yml line 4: integration.volumes[0]: '../../..': cannot mount over /"),
    ("integration:\n  image: x\n  commands: [a]\n  volumes: ['/proc/x']\n",
     "caicloud.yml line 4: integration.volumes[0]: '/proc/x': cannot mount over /proc/x"),
    ("integration:\n  image: x\n  commands: [a]\n  env: 5\n",
     "caicloud.yml line 4: integration.env: must be a list of KEY=value or a mapping"),
    ("integration:\n  image: x\n  commands: [a]\n  services:\n    db:\n      image: y\n      comand: z\n",
     "caicloud.yml line 7: integration.services.db.comand: unknown key"),
])
def test_seed_spellings_errors_name_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "caicloud.yml")
    assert str(info.value) == expected
